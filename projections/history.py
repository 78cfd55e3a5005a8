"""The history read model: run versions as segments, and their rows key by key.

Reading a run's history walks its chain of segments from the root down, taking from each
the rows between its parent's bound and its own bound. A fork costs one segment row, a
rewind one segment row: neither copies nor deletes history.

A segment's rows are kept as blocks by key (see `schema.history_blocks`), sealed a batch at
a time; rows logged one by one wait in a short tail of JSON rows until SEAL_ROWS of them
can be sealed together.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload
from uuid import UUID

from sqlalchemy import Connection, and_, delete, func, select, update

from runhistory.domain.errors import NotFound
from runhistory.domain.run import Run
from runhistory.domain.series import (
    TIMES,
    TIMESTAMP,
    EventRow,
    ReadRow,
    Series,
    SeriesRow,
    concat,
    series_of_rows,
    steps_between,
    with_rows_holding_keys,
)
from runhistory.domain.values import Values
from runhistory.projections.base import Projection, from_json, to_json
from runhistory.projections.schema import history_blocks, history_tail, segments
from runhistory.protos.codec import rows_of_series


class HistoryProjection(Projection):
    name = "history"
    revision = 2  # 2: rows kept as blocks by key
    tables = (segments, history_blocks, history_tail)

    def process(self, conn: Connection, event: Run.Event, position: int) -> None:
        match event:
            case Run.Created():
                self._created(conn, event, position)
            case Run.RowsLogged() | Run.Finished() | Run.Resumed():
                if event.rows:
                    append_rows(conn, current_segment(conn, event.originator_id), event.rows)
            case Run.Rewound():
                self._rewound(conn, event, position)

    @staticmethod
    def _created(conn: Connection, event: Run.Created, position: int) -> None:
        parent_segment = parent_step = None
        if event.forked_from is not None:
            source = event.forked_from
            parent_segment = segment_of(conn, UUID(source["run_uuid"]), source["version"]).id
            parent_step = source["step"]
        _start_segment(conn, position, event.originator_id, 1, parent_segment, parent_step)

    @staticmethod
    def _rewound(conn: Connection, event: Run.Rewound, position: int) -> None:
        archived = current_segment(conn, event.originator_id)
        if event.rows:
            append_rows(conn, archived, event.rows)
        _start_segment(
            conn, position, event.originator_id, event.archived_version + 1, archived.id, event.step
        )


def _start_segment(
    conn: Connection,
    segment_id: int,
    run_uuid: UUID,
    version: int,
    parent_segment: int | None,
    parent_step: int | None,
) -> None:
    conn.execute(
        segments.insert().values(
            segment_id=segment_id,
            run_uuid=str(run_uuid),
            version=version,
            parent_segment=parent_segment,
            parent_step=parent_step,
            own_rows=0,
            last_step=None,
            sealed_rows=0,
            sealed_step=None,
        )
    )


# Rows are sealed into blocks once this many have gathered: a batch from the SDK is sealed
# as it comes, rows logged one by one wait in the tail and are sealed 256 at a time.
SEAL_ROWS = 256


def append_rows(conn: Connection, segment: Segment, rows: Sequence[EventRow]) -> None:
    waiting = segment.own_rows - segment.sealed_rows
    own_rows = segment.own_rows + len(rows)
    changes: dict[str, Any] = {"own_rows": own_rows, "last_step": rows[-1][0]}
    if waiting + len(rows) < SEAL_ROWS:
        conn.execute(
            history_tail.insert(),
            [
                {
                    "segment_id": segment.id,
                    "step": step,
                    "timestamp": timestamp,
                    "runtime": runtime,
                    "data": to_json(values),
                }
                for step, timestamp, runtime, values in rows
            ],
        )
    else:
        tail = _tail_rows(conn, segment.id, segment.sealed_step) if waiting else []
        _seal(conn, segment.id, [*tail, *rows])
        if waiting:
            conn.execute(delete(history_tail).where(history_tail.c.segment_id == segment.id))
        changes.update(sealed_rows=own_rows, sealed_step=rows[-1][0])
    conn.execute(update(segments).where(segments.c.segment_id == segment.id).values(**changes))


def _tail_rows(
    conn: Connection, segment_id: int, after: int | None, upto: int | None = None
) -> list[SeriesRow]:
    """A segment's rows in the tail with `after < step <= upto`, decoded."""
    tail = history_tail.c
    query = select(tail.step, tail.timestamp, tail.runtime, tail.data)
    query = query.where(tail.segment_id == segment_id)
    if after is not None:
        query = query.where(tail.step > after)
    if upto is not None:
        query = query.where(tail.step <= upto)
    return [
        (step, timestamp, runtime, from_json(data))
        for step, timestamp, runtime, data in conn.execute(query.order_by(tail.step))
    ]


def _seal(conn: Connection, segment_id: int, rows: Sequence[SeriesRow | EventRow]) -> None:
    conn.execute(
        history_blocks.insert(),
        [
            {
                "segment_id": segment_id,
                "key": series.key,
                "first_step": series.first_step,
                "last_step": series.last_step,
                "kind": series.kind,
                "steps": series.steps,
                "data": series.values,
            }
            for series in series_of_rows(rows)
        ],
    )


# ---- queries ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    id: int
    run_uuid: str
    version: int
    parent_segment: int | None
    parent_step: int | None
    own_rows: int
    last_step: int | None
    sealed_rows: int
    sealed_step: int | None


def _segment(row: Any) -> Segment:
    return Segment(*row)


_SEGMENT_COLUMNS = (
    segments.c.segment_id,
    segments.c.run_uuid,
    segments.c.version,
    segments.c.parent_segment,
    segments.c.parent_step,
    segments.c.own_rows,
    segments.c.last_step,
    segments.c.sealed_rows,
    segments.c.sealed_step,
)


def get_segment(conn: Connection, segment_id: int) -> Segment:
    row = conn.execute(select(*_SEGMENT_COLUMNS).where(segments.c.segment_id == segment_id)).one()
    return _segment(row)


def current_segment(conn: Connection, run_uuid: UUID | str) -> Segment:
    row = conn.execute(
        select(*_SEGMENT_COLUMNS)
        .where(segments.c.run_uuid == str(run_uuid))
        .order_by(segments.c.version.desc())
        .limit(1)
    ).first()
    if row is None:
        raise NotFound(f"run {run_uuid} has no history")
    return _segment(row)


def current_segments(conn: Connection, run_uuids: Sequence[UUID | str]) -> dict[str, Segment]:
    """`current_segment` of each run that exists, by run UUID: one query for a page."""
    found: dict[str, Segment] = {}
    rows = conn.execute(
        select(*_SEGMENT_COLUMNS).where(segments.c.run_uuid.in_([str(u) for u in run_uuids]))
    )
    for segment in map(_segment, rows):
        known = found.get(segment.run_uuid)
        if known is None or known.version < segment.version:
            found[segment.run_uuid] = segment
    return found


def segment_of(conn: Connection, run_uuid: UUID | str, version: int | None) -> Segment:
    if version is None:
        return current_segment(conn, run_uuid)
    row = conn.execute(
        select(*_SEGMENT_COLUMNS).where(
            and_(segments.c.run_uuid == str(run_uuid), segments.c.version == version)
        )
    ).first()
    if row is None:
        raise NotFound(f"version {version} of the run does not exist")
    return _segment(row)


@dataclass(frozen=True, slots=True)
class Span:
    """Rows of one segment with `after < step <= upto` (upto None: no upper bound)."""

    segment_id: int
    after: int | None
    upto: int | None
    sealed_step: int | None = None  # the segment's rows up to here are also in blocks


def visible_spans(conn: Connection, segment: Segment, own_only: bool = False) -> list[Span]:
    """The spans that make up a segment's visible history, oldest first. With `own_only`,
    the chain stops where it reaches another run: rows inherited by a fork are left out,
    the run's own rows from before its rewinds are not."""
    spans: list[Span] = []
    bound: int | None = None
    current = segment
    while True:
        spans.append(Span(current.id, current.parent_step, bound, current.sealed_step))
        if current.parent_segment is None:
            break
        parent = get_segment(conn, current.parent_segment)
        if own_only and parent.run_uuid != current.run_uuid:
            break
        assert current.parent_step is not None
        bound = current.parent_step if bound is None else min(bound, current.parent_step)
        current = parent
    spans.reverse()
    return [s for s in spans if s.upto is None or s.after is None or s.after < s.upto]


@overload
def read_rows(
    conn: Connection,
    segment: Segment,
    keys: Sequence[str] | None = None,
    min_step: int | None = None,
    max_step: int | None = None,
    own_only: bool = False,
    as_json: Literal[False] = False,
) -> Iterator[ReadRow]: ...


@overload
def read_rows(
    conn: Connection,
    segment: Segment,
    keys: Sequence[str] | None = None,
    min_step: int | None = None,
    max_step: int | None = None,
    own_only: bool = False,
    *,
    as_json: Literal[True],
) -> Iterator[str]: ...


@overload
def read_rows(
    conn: Connection,
    segment: Segment,
    keys: Sequence[str] | None = None,
    min_step: int | None = None,
    max_step: int | None = None,
    own_only: bool = False,
    as_json: bool = False,
) -> Iterator[ReadRow | str]: ...


def read_rows(
    conn: Connection,
    segment: Segment,
    keys: Sequence[str] | None = None,
    min_step: int | None = None,
    max_step: int | None = None,
    own_only: bool = False,
    as_json: bool = False,
) -> Iterator[ReadRow | str]:
    """Visible rows in step order, each `{"_step", "_timestamp", "_runtime", **values}`, or
    with `as_json` its JSON text. With `keys`, only rows holding at least one of them, with
    only those keys."""
    for page in read_series(conn, segment, keys, min_step, max_step, own_only):
        rows = rows_of_series(page.series)
        yield from map(to_json, rows) if as_json else rows


def _clipped(
    span: Span, min_step: int | None, max_step: int | None
) -> tuple[int | None, int | None]:
    """The span's steps within [min_step, max_step], as `after < step <= upto`."""
    low = span.after
    if min_step is not None and (low is None or low < min_step - 1):
        low = min_step - 1
    high = span.upto
    if max_step is not None and (high is None or high > max_step):
        high = max_step
    return low, high


# ---- by key: the sealed blocks and the tail -------------------------------------------


@dataclass(frozen=True, slots=True)
class SeriesPage:
    """Some keys' points with steps in a run of a read, and the two time series."""

    upto: int  # the page holds every point of its keys up to this step
    series: list[Series]


# Pages small enough that the client decodes one while the server reads the next.
DEFAULT_PAGE_POINTS = 100_000


def read_series(
    conn: Connection,
    segment: Segment,
    keys: Sequence[str] | None = None,
    min_step: int | None = None,
    max_step: int | None = None,
    own_only: bool = False,
    page_points: int = DEFAULT_PAGE_POINTS,
) -> Iterator[SeriesPage]:
    """The visible history as in `read_rows`, key by key in pages of about `page_points`
    points, in step order: the `_timestamp` and `_runtime` series with a point per row and
    one series per key (only `keys`, if given) with a point per row that holds the key."""
    wanted = list(dict.fromkeys(keys)) if keys else None
    for span in visible_spans(conn, segment, own_only):
        low, high = _clipped(span, min_step, max_step)
        yield from _span_pages(conn, span, wanted, low, high, page_points)


def _span_pages(
    conn: Connection,
    span: Span,
    wanted: Sequence[str] | None,
    low: int | None,
    high: int | None,
    page_points: int,
) -> Iterator[SeriesPage]:
    """A span's points with `low < step <= high`: from its blocks, then from its tail."""
    sealed = span.sealed_step
    if sealed is not None and (low is None or low < sealed):
        upto = sealed if high is None else min(high, sealed)
        yield from _sealed_pages(conn, span.segment_id, wanted, low, upto, page_points)
        low = sealed if low is None else max(low, sealed)
    if high is not None and low is not None and low >= high:
        return
    rows = _tail_rows(conn, span.segment_id, low, high)
    if rows:
        yield _page(rows[-1][0], series_of_rows(rows, wanted), wanted)


def _sealed_pages(
    conn: Connection,
    segment_id: int,
    wanted: Sequence[str] | None,
    low: int | None,
    high: int,
    page_points: int,
) -> Iterator[SeriesPage]:
    blocks = history_blocks.c
    in_segment = blocks.segment_id == segment_id
    if wanted is None:
        width = conn.execute(
            select(func.count(blocks.key.distinct())).where(in_segment)
        ).scalar_one()
        keys = None
    else:
        width = len(wanted) + len(TIMES)
        keys = [*TIMES, *wanted]
    page_rows = max(1, page_points // max(width, 1))
    while low is None or low < high:
        upto = _page_end(conn, segment_id, low, high, page_rows)
        if upto is None:
            return
        query = select(blocks.key, blocks.kind, blocks.steps, blocks.data).where(
            in_segment, blocks.first_step <= upto
        )
        if low is not None:
            query = query.where(blocks.last_step > low)
        if keys is not None:
            query = query.where(blocks.key.in_(keys))
        parts: dict[str, list[Series]] = {}
        for key, kind, steps, values in conn.execute(query.order_by(blocks.key, blocks.last_step)):
            parts.setdefault(key, []).append(Series(key, bytes(steps), kind, bytes(values)))
        order = keys if keys is not None else sorted(parts, key=lambda k: (k not in TIMES, k))
        series = [concat(parts[key]).between(low, upto) for key in order if key in parts]
        yield _page(upto, [s for s in series if len(s)], wanted)
        low = upto


def _page(upto: int, series: list[Series], wanted: Sequence[str] | None) -> SeriesPage:
    return SeriesPage(upto, series if wanted is None else with_rows_holding_keys(series))


def _page_end(
    conn: Connection, segment_id: int, low: int | None, high: int, rows: int
) -> int | None:
    """Where a page of about `rows` rows after `low` ends: the end of the block that
    reaches `rows`, or within the first block if that alone holds more; at most `high`.
    None if there is no row."""
    blocks = history_blocks.c
    query = select(blocks.first_step, blocks.last_step, func.length(blocks.steps)).where(
        blocks.segment_id == segment_id, blocks.key == TIMESTAMP, blocks.first_step <= high
    )
    if low is not None:
        query = query.where(blocks.last_step > low)
    end, counted = None, 0
    result = conn.execute(query.order_by(blocks.last_step))
    try:
        for first_step, last_step, size in result:
            if end is None and size // 8 > rows:
                # A block larger than a page (a very wide batch): cut inside it.
                steps = _time_steps(conn, segment_id, first_step)
                inside = steps_between(steps, low, high)
                return inside[min(rows, len(inside)) - 1] if inside else None
            end, counted = min(last_step, high), counted + size // 8
            if counted >= rows:
                break
    finally:
        result.close()
    return end


def _time_steps(conn: Connection, segment_id: int, first_step: int) -> bytes:
    blocks = history_blocks.c
    return bytes(
        conn.execute(
            select(blocks.steps).where(
                blocks.segment_id == segment_id,
                blocks.key == TIMESTAMP,
                blocks.first_step == first_step,
            )
        ).scalar_one()
    )


def own_row_values(
    conn: Connection, segment: Segment, after: int | None, upto: int
) -> Iterator[Values]:
    """The values of a segment's own rows with `after < step <= upto`, in step order."""
    span = Span(segment.id, after, upto, segment.sealed_step)
    for page in _span_pages(conn, span, None, after, upto, DEFAULT_PAGE_POINTS):
        for row in rows_of_series(page.series):
            yield {key: value for key, value in row.items() if key[0] != "_"}
