"""The summary read model: per segment, the statistics of its visible history, the
explicit values set with `run.summary[key] = v`, and the `define_metric` choices.

After a rewind or a fork the new segment's statistics start from the state as of the
branch step: the nearest checkpoint at or below it plus a fold of at most
`CHECKPOINT_EVERY` rows, so the cost does not grow with the history's length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, select, update

from runhistory.domain.run import Run
from runhistory.domain.series import EventRow
from runhistory.domain.summary import SummaryState, render
from runhistory.projections.base import Projection, from_json, to_json
from runhistory.projections.history import (
    Segment,
    current_segment,
    get_segment,
    own_row_values,
)
from runhistory.projections.schema import segments, summaries, summary_checkpoints

CHECKPOINT_EVERY = 128


class SummaryProjection(Projection):
    name = "summary"
    tables = (summaries, summary_checkpoints)
    # Reads segments and rows that the history projection wrote for the same event.
    depends_on = ("history",)

    def process(self, conn: Connection, event: Run.Event, position: int) -> None:
        match event:
            case Run.Created():
                self._created(conn, event, position)
            case Run.RowsLogged() | Run.Finished() | Run.Resumed():
                if event.rows:
                    _fold_rows(conn, current_segment(conn, event.originator_id), event.rows)
            case Run.Rewound():
                self._rewound(conn, event, position)
            case Run.SummarySet():
                self._summary_set(conn, event)
            case Run.MetricDefined():
                self._metric_defined(conn, event)

    @staticmethod
    def _created(conn: Connection, event: Run.Created, position: int) -> None:
        segment = get_segment(conn, position)
        base = SummaryState()
        if segment.parent_segment is not None:
            assert segment.parent_step is not None
            base = state_at(conn, get_segment(conn, segment.parent_segment), segment.parent_step)
        _start(conn, segment, base, event.metrics)

    @staticmethod
    def _rewound(conn: Connection, event: Run.Rewound, position: int) -> None:
        new = get_segment(conn, position)
        assert new.parent_segment is not None
        archived = get_segment(conn, new.parent_segment)
        if event.rows:
            _fold_rows(conn, archived, event.rows)
        metrics = from_json(_row(conn, archived.id).metrics)
        # Explicit summary values belong to the archived version: the new version's summary
        # is recomputed from its visible history alone.
        _start(conn, new, state_at(conn, archived, event.step), metrics)

    @staticmethod
    def _summary_set(conn: Connection, event: Run.SummarySet) -> None:
        segment = current_segment(conn, event.originator_id)
        overrides = from_json(_row(conn, segment.id).overrides)
        overrides.update(event.values)
        _update(conn, segment.id, overrides=to_json(overrides))

    @staticmethod
    def _metric_defined(conn: Connection, event: Run.MetricDefined) -> None:
        segment = current_segment(conn, event.originator_id)
        metrics = from_json(_row(conn, segment.id).metrics)
        metrics[event.key] = event.aggregates
        _update(conn, segment.id, metrics=to_json(metrics))


def _start(
    conn: Connection, segment: Segment, base: SummaryState, metrics: dict[str, list[str]]
) -> None:
    state = to_json(base.to_json())
    conn.execute(
        summaries.insert().values(
            segment_id=segment.id,
            state=state,
            overrides="{}",
            metrics=to_json(metrics),
            rows_since_checkpoint=0,
        )
    )
    start_step = -1 if segment.parent_step is None else segment.parent_step
    conn.execute(
        summary_checkpoints.insert().values(segment_id=segment.id, step=start_step, state=state)
    )


def _fold_rows(conn: Connection, segment: Segment, rows: Sequence[EventRow]) -> None:
    record = _row(conn, segment.id)
    state = SummaryState.from_json(from_json(record.state))
    overrides = from_json(record.overrides)
    since = record.rows_since_checkpoint
    checkpoints = []
    start = 0
    while start < len(rows):
        # Up to the next checkpoint, or the end of the batch.
        end = min(len(rows), start + CHECKPOINT_EVERY - since)
        chunk = [values for _step, _timestamp, _runtime, values in rows[start:end]]
        state.fold_all(chunk)
        if overrides:  # a logged key ends its explicit value
            for values in chunk:
                for key in values:
                    overrides.pop(key, None)
        since += end - start
        if since >= CHECKPOINT_EVERY:
            step = rows[end - 1][0]
            checkpoints.append(
                {"segment_id": segment.id, "step": step, "state": to_json(state.to_json())}
            )
            since = 0
        start = end
    if checkpoints:
        conn.execute(summary_checkpoints.insert(), checkpoints)
    _update(
        conn,
        segment.id,
        state=to_json(state.to_json()),
        overrides=to_json(overrides),
        rows_since_checkpoint=since,
    )


def _row(conn: Connection, segment_id: int) -> Any:
    return conn.execute(select(summaries).where(summaries.c.segment_id == segment_id)).one()


def _update(conn: Connection, segment_id: int, **values: Any) -> None:
    conn.execute(update(summaries).where(summaries.c.segment_id == segment_id).values(**values))


def state_at(conn: Connection, segment: Segment, step: int) -> SummaryState:
    """Statistics of the segment's visible rows with `_step <= step`."""
    while segment.parent_step is not None and step < segment.parent_step:
        assert segment.parent_segment is not None
        segment = get_segment(conn, segment.parent_segment)
    checkpoint_step, state_json = conn.execute(
        select(summary_checkpoints.c.step, summary_checkpoints.c.state)
        .where(summary_checkpoints.c.segment_id == segment.id, summary_checkpoints.c.step <= step)
        .order_by(summary_checkpoints.c.step.desc())
        .limit(1)
    ).one()
    state = SummaryState.from_json(from_json(state_json))
    if checkpoint_step < step:
        state.fold_all(own_row_values(conn, segment, checkpoint_step, step))
    return state


# ---- queries ---------------------------------------------------------------------------


def read_summary(conn: Connection, segment: Segment) -> dict[str, Any]:
    record = _row(conn, segment.id)
    state = SummaryState.from_json(from_json(record.state))
    return render(state, from_json(record.metrics), from_json(record.overrides))


def read_current_summaries(conn: Connection, versions: Mapping[str, int]) -> dict[str, Any]:
    """The summary of each run's version (`versions`: run UUID -> its current version), in
    one query for a page of runs."""
    if not versions:
        return {}
    rows = conn.execute(
        select(
            segments.c.run_uuid,
            segments.c.version,
            summaries.c.state,
            summaries.c.metrics,
            summaries.c.overrides,
        )
        .join(summaries, summaries.c.segment_id == segments.c.segment_id)
        .where(segments.c.run_uuid.in_(list(versions)))
    )
    return {
        row.run_uuid: render(
            SummaryState.from_json(from_json(row.state)),
            from_json(row.metrics),
            from_json(row.overrides),
        )
        for row in rows
        if row.version == versions[row.run_uuid]
    }


def visible_row_count(conn: Connection, segment: Segment) -> int:
    rows: int = from_json(_row(conn, segment.id).state)["rows"]
    return rows
