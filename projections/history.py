"""The history read model: run versions as segments, and their rows.

Reading a run's history walks its chain of segments from the root down, taking from each
the rows between its parent's bound and its own bound. A fork costs one segment row, a
rewind one segment row: neither copies nor deletes history.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any
from uuid import UUID

from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    Text,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    select,
    type_coerce,
    update,
)

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
    With a key filter the database picks the keys out of the stored text where it can
    (see `_selected_values`), so Python does not decode whole rows.
    """
    spans = visible_spans(conn, segment, own_only)
    wanted = list(dict.fromkeys(keys)) if keys else None
    if wanted is not None:
        selected = _selected_values(conn, wanted)
        if selected is not None:
            yield from _selected_rows(
                conn, spans, selected, wanted, min_step, max_step, page_size, as_json
            )
            return
    wanted_set = set(wanted) if wanted is not None else None
    for page in _pages(conn, spans, min_step, max_step, page_size):
        for step, timestamp, runtime, data in page:
            if as_json and wanted_set is None:
                # `_system_json` inlined: this is the loop of every whole-history read.
                system = f'{{"_step":{step},"_timestamp":{timestamp!r},"_runtime":{runtime!r}'
                yield system + ("}" if data == "{}" else "," + data[1:])
                continue
            values = from_json(data)
            if wanted_set is not None:
                values = {k: v for k, v in values.items() if k in wanted_set}
            if values or wanted_set is None:
                yield _row(step, timestamp, runtime, values, as_json)


def _system_json(step: int, timestamp: float, runtime: float) -> str:
    """A JSON row's opening with its system keys, for the values' text to follow.
    repr: the shortest text that reads back as the same float."""
    return f'{{"_step":{step},"_timestamp":{timestamp!r},"_runtime":{runtime!r}'


def _row(
    step: int, timestamp: float, runtime: float, values: dict[str, Any], as_json: bool
) -> dict[str, Any] | str:
    row = {"_step": step, "_timestamp": timestamp, "_runtime": runtime, **values}
    return to_json(row) if as_json else row


def _pages(
    conn: Connection,
    spans: Sequence[Span],
    min_step: int | None,
    max_step: int | None,
    page_size: int,
    derive: Callable[[Any], Sequence[ColumnElement[Any]]] | None = None,
) -> Iterator[Sequence[Any]]:
    """The rows of the spans within [min_step, max_step] in step order, `page_size` at a
    time, each `(step, timestamp, runtime, data)`, or with `derive` the columns it makes
    of a page's columns (the first must be the step). Derived columns are computed in an
    outer query over the page: PostgreSQL may sort before it limits (a top-N heapsort over
    every row after the page's start), and would compute them for all those rows."""
    for span in spans:
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
            query = query.order_by(history.c.step).limit(page_size)
            if derive is not None:
                rows = query.subquery()
                query = select(*derive(rows.c)).order_by(rows.c.step)
            page = conn.execute(query).all()
            if page:
                yield page
            if len(page) < page_size:
                break
            low = page[-1][0]


# ---- selected keys, picked out by the database -----------------------------------------
#
# Reading one key of rows that hold ten would otherwise decode all ten in Python, keep one
# and encode it again (75% of the server's time reading one key of a 100k-step run). The
# database's JSON operators return a value's text exactly as stored, so for JSON rows the
# server only glues the step, timestamp and runtime to it, and for dict rows Python decodes
# only the picked values. Two cases stay with Python's decoder of whole rows:
#
# - rows that are not standard JSON: Python writes NaN and +/-Infinity as bare words, which
#   SQLite before 3.42 (JSON5) and PostgreSQL refuse. Such rows come back undecoded and
#   are filtered in Python, as on the generic path.
# - on SQLite, keys whose JSON text is not the key itself between quotes (quotes,
#   backslashes, control or non-ASCII characters): SQLite 3.40 compares a path's key with
#   the stored key's escaped text and has no escapes in paths, so such a key could not be
#   named reliably. A request with one reads through the generic path.


@dataclass(frozen=True, slots=True)
class _Selected:
    """Columns that give, per row, either `fragment`: `,"key":value` for each wanted key the
    row holds ('' for none), or, for a row the database cannot parse, `stored`: its text."""

    fragment: ColumnElement[Any]
    stored: ColumnElement[Any]


def _selected_values(
    conn: Connection, keys: Sequence[str]
) -> Callable[[ColumnElement[Any]], _Selected] | None:
    """What makes the columns for `keys` of a row text column on this database, or None
    where the database cannot pick them out."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        # `->` (JSON text of a value) needs 3.38; the keys must be nameable in a path.
        version = conn.dialect.server_version_info or (0,)
        if version < (3, 38) or not all(key and to_json(key) == f'"{key}"' for key in keys):
            return None

        def parses(data: ColumnElement[Any]) -> ColumnElement[Any]:
            return func.json_valid(data) == 1

        def value(data: ColumnElement[Any], key: str) -> ColumnElement[Any]:
            return type_coerce(data.op("->")(f'$."{key}"'), Text)

    elif dialect == "postgresql":
        # json (not jsonb) keeps each value's text as written. No json_valid before
        # PostgreSQL 16: rows with the words NaN or Infinity anywhere (also inside a string,
        # harmlessly) are left to Python, and every other row Python wrote is valid JSON.
        def parses(data: ColumnElement[Any]) -> ColumnElement[Any]:
            return and_(~data.contains("NaN"), ~data.contains("Infinity"))

        def value(data: ColumnElement[Any], key: str) -> ColumnElement[Any]:
            return cast(cast(data, JSON).op("->")(key), Text)

    else:
        return None

    def selected(data: ColumnElement[Any]) -> _Selected:
        parts = [
            func.coalesce(literal(f",{to_json(key)}:", Text) + value(data, key), "") for key in keys
        ]
        valid = parses(data)
        return _Selected(
            fragment=case((valid, reduce(operator.add, parts)), else_=null()),
            stored=case((valid, null()), else_=data),
        )

    return selected


def _selected_rows(
    conn: Connection,
    spans: Sequence[Span],
    selected: Callable[[ColumnElement[Any]], _Selected],
    keys: Sequence[str],
    min_step: int | None,
    max_step: int | None,
    page_size: int,
    as_json: bool,
) -> Iterator[Any]:
    """`read_rows` with a key filter, the values picked out by the database."""
    wanted = set(keys)

    def columns(row: Any) -> tuple[ColumnElement[Any], ...]:
        values = selected(row.data)
        return (row.step, row.timestamp, row.runtime, values.fragment, values.stored)

    for page in _pages(conn, spans, min_step, max_step, page_size, columns):
        for step, timestamp, runtime, fragment, stored in page:
            if fragment and as_json:
                yield f"{_system_json(step, timestamp, runtime)}{fragment}}}"
                continue
            if fragment:
                values = from_json("{" + fragment[1:] + "}")
            elif stored is not None:
                values = {k: v for k, v in from_json(stored).items() if k in wanted}
            else:
                continue  # the row holds none of the keys
            if values:
                yield _row(step, timestamp, runtime, values, as_json)


def own_row_values(
    conn: Connection, segment_id: int, after: int | None, upto: int
) -> Iterator[dict[str, Any]]:
    """The values of a segment's own rows with `after < step <= upto`, in step order."""
    query = select(history.c.data).where(history.c.segment_id == segment_id, history.c.step <= upto)
    if after is not None:
        query = query.where(history.c.step > after)
    for (data,) in conn.execute(query.order_by(history.c.step)):
        yield from_json(data)
