"""The history read model: run versions as segments, and their rows.

Reading a run's history walks its chain of segments from the root down, taking from each
the rows between its parent's bound and its own bound. A fork costs one segment row, a
rewind one segment row: neither copies nor deletes history.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, and_, select, update

from runhistory.domain.errors import NotFound
from runhistory.domain.run import Row, Run
from runhistory.projections.base import Projection, from_json, on, to_json
from runhistory.projections.schema import history, segments


class HistoryProjection(Projection):
    name = "history"
    tables = (segments, history)

    @on(Run.Created)
    def _created(self, conn: Connection, event: Any, position: int) -> None:
        parent_segment = parent_step = None
        if event.forked_from is not None:
            source = event.forked_from
            parent_segment = segment_of(conn, UUID(source["run_uuid"]), source["version"]).id
            parent_step = source["step"]
        _start_segment(conn, position, event.originator_id, 1, parent_segment, parent_step)

    @on(Run.RowsLogged, Run.Finished, Run.Resumed)
    def _rows(self, conn: Connection, event: Any, position: int) -> None:
        if event.rows:
            append_rows(conn, current_segment(conn, event.originator_id).id, event.rows)

    @on(Run.Rewound)
    def _rewound(self, conn: Connection, event: Any, position: int) -> None:
        archived = current_segment(conn, event.originator_id)
        if event.rows:
            append_rows(conn, archived.id, event.rows)
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
        )
    )


def append_rows(conn: Connection, segment_id: int, rows: Sequence[Row]) -> None:
    conn.execute(
        history.insert(),
        [
            {
                "segment_id": segment_id,
                "step": step,
                "timestamp": timestamp,
                "runtime": runtime,
                "data": to_json(values),
            }
            for step, timestamp, runtime, values in rows
        ],
    )
    conn.execute(
        update(segments)
        .where(segments.c.segment_id == segment_id)
        .values(own_rows=segments.c.own_rows + len(rows), last_step=rows[-1][0])
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


def visible_spans(conn: Connection, segment: Segment, own_only: bool = False) -> list[Span]:
    """The spans that make up a segment's visible history, oldest first. With `own_only`,
    the chain stops where it reaches another run: rows inherited by a fork are left out,
    the run's own rows from before its rewinds are not."""
    spans: list[Span] = []
    bound: int | None = None
    current = segment
    while True:
        spans.append(Span(current.id, current.parent_step, bound))
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


def read_rows(
    conn: Connection,
    segment: Segment,
    keys: Sequence[str] | None = None,
    min_step: int | None = None,
    max_step: int | None = None,
    own_only: bool = False,
    page_size: int = 10_000,
    as_json: bool = False,
) -> Iterator[Any]:
    """Visible rows in step order, each `{"_step", "_timestamp", "_runtime", **values}`.

    With `keys`, only rows holding at least one of them are returned, with only those keys.
    With `as_json`, each row is its JSON text; without a key filter the stored text is
    passed through undecoded, which makes reading whole histories several times faster.
    """
    wanted = set(keys) if keys else None
    for span in visible_spans(conn, segment, own_only):
        low = span.after
        if min_step is not None and (low is None or low < min_step - 1):
            low = min_step - 1
        high = span.upto
        if max_step is not None and (high is None or high > max_step):
            high = max_step
        while True:
            query = select(history.c.step, history.c.timestamp, history.c.runtime, history.c.data)
            query = query.where(history.c.segment_id == span.segment_id)
            if low is not None:
                query = query.where(history.c.step > low)
            if high is not None:
                query = query.where(history.c.step <= high)
            page = conn.execute(query.order_by(history.c.step).limit(page_size)).all()
            for step, timestamp, runtime, data in page:
                if as_json and wanted is None:
                    system = f'{{"_step":{step},"_timestamp":{timestamp!r},"_runtime":{runtime!r}'
                    yield system + ("}" if data == "{}" else "," + data[1:])
                    continue
                values = from_json(data)
                if wanted is not None:
                    values = {k: v for k, v in values.items() if k in wanted}
                    if not values:
                        continue
                row = {"_step": step, "_timestamp": timestamp, "_runtime": runtime, **values}
                yield to_json(row) if as_json else row
            if len(page) < page_size:
                break
            low = page[-1][0]


def own_row_values(
    conn: Connection, segment_id: int, after: int | None, upto: int
) -> Iterator[dict[str, Any]]:
    """The values of a segment's own rows with `after < step <= upto`, in step order."""
    query = select(history.c.data).where(history.c.segment_id == segment_id, history.c.step <= upto)
    if after is not None:
        query = query.where(history.c.step > after)
    for (data,) in conn.execute(query.order_by(history.c.step)):
        yield from_json(data)
