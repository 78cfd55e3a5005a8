"""A run's history key by key: each key's points as one packed series.

Rows are how history is logged; series are how it is read fastest. A series holds one key's
steps as packed int64 and its values as packed float64 or int64 when they are all floats or
all ints, or else as a JSON array. The rows' times are the series `_timestamp` and
`_runtime`, which have a point for every row. The packed form (little-endian) is both what
the history read model stores and what ReadHistory sends, so serving a read joins bytes
instead of building a value per point.
"""

from __future__ import annotations

import json
import sys
from array import array
from bisect import bisect_right
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

FLOATS, INTS, JSON = "f", "i", "j"
TIMESTAMP, RUNTIME = "_timestamp", "_runtime"
TIMES = (TIMESTAMP, RUNTIME)

_INT64 = (-(2**63), 2**63 - 1)
_LITTLE_ENDIAN = sys.byteorder == "little"
_encode_json = json.JSONEncoder(separators=(",", ":")).encode
_decode_json = json.JSONDecoder().decode

# A history row has three shapes, each named for where it is found:
# - EventRow: a committed row in a run's events, [step, timestamp, runtime, values] (a list:
#   the event store keeps payloads as JSON, and must keep decoding those stored already);
# - SeriesRow: the same four as a tuple, what `series_of_rows` packs (the history tail's rows
#   as read back, rows the SDK turns into columns);
# - ReadRow: a row as readers get it, {"_step": ..., "_timestamp": ..., "_runtime": ...,
#   **values}, built from series by `protos.codec.rows_of_series`.
EventRow = list[Any]
SeriesRow = tuple[int, float, float, dict[str, Any]]
ReadRow = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Series:
    key: str
    steps: bytes  # int64, little-endian, increasing
    kind: str  # FLOATS, INTS or JSON
    values: bytes  # float64 or int64 little-endian, or a UTF-8 JSON array

    def __len__(self) -> int:
        return len(self.steps) // 8

    def step_list(self) -> list[int]:
        return _unpack("q", self.steps)

    def value_list(self) -> list[Any]:
        if self.kind == JSON:
            values: list[Any] = _decode_json(self.values.decode())
            return values
        return _unpack("d" if self.kind == FLOATS else "q", self.values)

    @property
    def first_step(self) -> int:
        return int.from_bytes(self.steps[:8], "little", signed=True)

    @property
    def last_step(self) -> int:
        return int.from_bytes(self.steps[-8:], "little", signed=True)

    def between(self, after: int | None, upto: int | None) -> Series:
        """The points with `after < step <= upto` (None: unbounded)."""
        steps = _array("q", self.steps)
        start, end = _bounds(steps, after, upto)
        if start == 0 and end == len(steps):
            return self
        if self.kind == JSON:
            values = _encode_json(self.value_list()[start:end]).encode()
        else:
            values = self.values[start * 8 : end * 8]
        return Series(self.key, self.steps[start * 8 : end * 8], self.kind, values)


def steps_between(steps: bytes, after: int | None, upto: int | None) -> Sequence[int]:
    """The packed steps with `after < step <= upto` (None: unbounded)."""
    unpacked = _array("q", steps)
    start, end = _bounds(unpacked, after, upto)
    return unpacked[start:end]


def _bounds(steps: Sequence[int], after: int | None, upto: int | None) -> tuple[int, int]:
    start = 0 if after is None else bisect_right(steps, after)
    end = len(steps) if upto is None else bisect_right(steps, upto)
    return start, end


def _pack_values(values: Sequence[Any]) -> tuple[str, bytes]:
    """The values' kind and packed form: the narrowest kind that keeps every value as it was
    (bool is JSON: it is an int to Python but not to its readers)."""
    if all(type(value) is float for value in values):
        return FLOATS, _pack("d", values)
    if all(type(value) is int for value in values) and (
        _INT64[0] <= min(values) and max(values) <= _INT64[1]
    ):
        return INTS, _pack("q", values)
    return JSON, _encode_json(list(values)).encode()


def series_of_rows(
    rows: Sequence[SeriesRow | EventRow], keys: Collection[str] | None = None
) -> list[Series]:
    """The rows as series: the two time series, then one per key (only `keys`, if given) in
    the order the keys first appear."""
    steps = [row[0] for row in rows]
    packed_steps = _pack("q", steps)
    columns: dict[str, tuple[list[int], list[Any]]] = {}
    first = rows[0][3].keys() if rows else {}.keys()
    if all(row[3].keys() == first for row in rows):
        # Every row has the same keys, the common case: a key's values in one pass.
        for key in first:
            if keys is None or key in keys:
                columns[key] = (steps, [row[3][key] for row in rows])
    else:
        for step, _, _, values in rows:
            for key, value in values.items():
                column = columns.get(key)
                if column is None:
                    if keys is not None and key not in keys:
                        continue
                    column = columns[key] = ([], [])
                column[0].append(step)
                column[1].append(value)
    made = [
        Series(TIMESTAMP, packed_steps, FLOATS, _pack("d", [row[1] for row in rows])),
        Series(RUNTIME, packed_steps, FLOATS, _pack("d", [row[2] for row in rows])),
    ]
    for key, (key_steps, values) in columns.items():
        # Most keys are in every row: their steps are the rows' steps, packed once.
        own_steps = packed_steps if len(key_steps) == len(steps) else _pack("q", key_steps)
        made.append(Series(key, own_steps, *_pack_values(values)))
    return made


def concat(parts: Sequence[Series]) -> Series:
    """One key's consecutive series as one; kinds that differ meet as JSON."""
    first = parts[0]
    if len(parts) == 1:
        return first
    steps = b"".join(part.steps for part in parts)
    if all(part.kind == first.kind for part in parts) and first.kind != JSON:
        return Series(first.key, steps, first.kind, b"".join(part.values for part in parts))
    values = [value for part in parts for value in part.value_list()]
    return Series(first.key, steps, JSON, _encode_json(values).encode())


def with_rows_holding_keys(series: Sequence[Series]) -> list[Series]:
    """For a read of some keys: the time series cut to the rows that hold one of the keys
    (none if no key has a point), so that, as in every read, the rows are the time series'
    steps."""
    times = [s for s in series if s.key in TIMES]
    keyed = [s for s in series if s.key not in TIMES]
    if not keyed:
        return []
    if all(s.steps == times[0].steps for s in keyed):
        return list(series)
    holding = set().union(*(s.step_list() for s in keyed))
    steps = times[0].step_list()
    kept = [i for i, step in enumerate(steps) if step in holding]
    packed_steps = _pack("q", [steps[i] for i in kept])
    cut = []
    for time in times:
        values = time.value_list()
        cut.append(Series(time.key, packed_steps, FLOATS, _pack("d", [values[i] for i in kept])))
    return cut + keyed


def _array(code: str, data: bytes) -> array[Any]:
    packed = array(code)
    packed.frombytes(data)
    if not _LITTLE_ENDIAN:
        packed.byteswap()
    return packed


def _unpack(code: str, data: bytes) -> list[Any]:
    return _array(code, data).tolist()


def _pack(code: str, values: Iterable[Any]) -> bytes:
    packed = array(code, values)
    if not _LITTLE_ENDIAN:
        packed.byteswap()
    return packed.tobytes()


def sample(rows: Sequence[Any], samples: int | None) -> list[Any]:
    """At most `samples` rows, evenly spread, the first and the last always among them (W&B's
    sampled history, for its endpoint here and the SDK's `history`)."""
    if samples is None or len(rows) <= samples:
        return list(rows)
    if samples == 1:
        return [rows[-1]]
    last = len(rows) - 1
    return [rows[round(i * last / (samples - 1))] for i in range(samples)]
