"""Min/max bucket downsampling of a series in step order, for charts.

A chart a few hundred pixels wide cannot show a million points, but it must still show the
one step where the loss spiked. Each bucket of consecutive steps keeps its smallest and its
largest value (at the steps they occurred), so every spike and dip survives however far the
series is reduced.

The reducer streams: it never holds more than `max_points` buckets, whatever the series'
length, and it needs no step range in advance. It starts with one step per bucket and, when
the buckets would exceed the budget, doubles the bucket width and merges neighbours; min and
max of merged buckets are exact, so the result equals bucketing at the final width directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

MIN_POINTS = 4
MAX_POINTS = 20_000
DEFAULT_POINTS = 1_000


@dataclass(slots=True)
class _Bucket:
    index: int
    min_step: int
    min_value: float
    max_step: int
    max_value: float

    def merge(self, other: _Bucket) -> None:
        if other.min_value < self.min_value:
            self.min_step, self.min_value = other.min_step, other.min_value
        if other.max_value > self.max_value:
            self.max_step, self.max_value = other.max_step, other.max_value


@dataclass
class MinMaxReducer:
    """Feed (step, value) in increasing step order; `points()` gives at most `max_points`."""

    max_points: int = DEFAULT_POINTS
    origin: int = 0  # bucket 0 starts at this step
    width: int = 1
    count: int = 0  # points fed, non-finite ones excluded
    _buckets: list[_Bucket] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_points < 2:
            raise ValueError("max_points must be at least 2 (a bucket's min and max)")
        self._limit = self.max_points // 2  # each bucket yields up to two points

    def add(self, step: int, value: float) -> None:
        if not math.isfinite(value):
            return  # NaN and infinities cannot be drawn; the caller counts them
        self.count += 1
        buckets = self._buckets
        index = (step - self.origin) // self.width
        if buckets and buckets[-1].index != index and len(buckets) >= self._limit:
            self._widen()
            index = (step - self.origin) // self.width
        if buckets and buckets[-1].index == index:
            last = buckets[-1]
            if value < last.min_value:
                last.min_step, last.min_value = step, value
            if value > last.max_value:
                last.max_step, last.max_value = step, value
        else:
            buckets.append(_Bucket(index, step, value, step, value))

    def _widen(self) -> None:
        """Double the width until the buckets fit in half the budget; merge neighbours."""
        while len(self._buckets) >= self._limit:
            self.width *= 2
            merged: list[_Bucket] = []
            for bucket in self._buckets:
                bucket.index //= 2
                if merged and merged[-1].index == bucket.index:
                    merged[-1].merge(bucket)
                else:
                    merged.append(bucket)
            self._buckets[:] = merged

    def points(self) -> tuple[list[int], list[float]]:
        """Steps and values, in step order: per bucket its min and its max (one point when
        they are the same row)."""
        steps: list[int] = []
        values: list[float] = []
        for b in self._buckets:
            first, second = sorted(
                ((b.min_step, b.min_value), (b.max_step, b.max_value)), key=lambda p: p[0]
            )
            steps.append(first[0])
            values.append(first[1])
            if second[0] != first[0]:
                steps.append(second[0])
                values.append(second[1])
        return steps, values


def downsample(
    points: list[tuple[int, float]], max_points: int = DEFAULT_POINTS, origin: int = 0
) -> tuple[list[int], list[float]]:
    """The whole series at once (for tests and small inputs)."""
    reducer = MinMaxReducer(max_points=max_points, origin=origin)
    for step, value in points:
        reducer.add(step, value)
    return reducer.points()


def numeric(value: object) -> float | None:
    """The value as a float for charting, or None for strings, dicts and the like. Booleans
    chart as 0 and 1."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None
