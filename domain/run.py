"""The Run aggregate: one event stream per `entity/project/run_id`.

The aggregate holds only what it needs to decide: the current step and the pending row,
the last committed step, the run version, state, config, metric definitions and the
current writer's session. Committed rows live in the events (one event per batch) and in
the history projection, never in the aggregate's state, so snapshots stay small.

Commands validate first and only then trigger an event; the `@event` bodies only assign,
because they run again on every replay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypedDict
from uuid import UUID

from eventsourcing.domain import Aggregate, event
from eventsourcing.domain import Snapshot as BaseSnapshot

from runhistory.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    OutOfRange,
    ResourceExhausted,
    RunHistoryError,
    RunNotRunning,
    Superseded,
)
from runhistory.domain.identity import RunPath, check_new_run_id, run_aggregate_id, version_id
from runhistory.domain.rules import (
    check_artifact,
    check_detail,
    check_metric_name,
    check_run_name,
    check_step,
    check_tags,
    parse_summary_choice,
)
from runhistory.domain.series import EventRow
from runhistory.domain.values import (
    DEFAULT_LIMITS,
    Limits,
    LogCall,
    Values,
    check_config,
    check_row_size,
    flatten,
    row_size,
)

RUNNING = "running"
FINISHED = "finished"
CRASHED = "crashed"


class PendingRow(TypedDict):
    """The row being filled: merged into by `log(..., commit=False)` and same-step calls."""

    step: int
    timestamp: float
    values: Values


class ForkedFrom(TypedDict):
    """Where a fork branched off: its source run, that run's version, and the step. A
    rewind of the fork below that step lowers `step` to the rewind's: the fork then stands on
    the source's rows up to there only."""

    run: str  # the source's path, entity/project/run_id
    run_uuid: str  # the source's aggregate ID
    version: int
    step: int


class ArtifactRecord(TypedDict):
    direction: str  # ARTIFACT_PRODUCED or ARTIFACT_USED
    name: str
    type: str
    digest: str
    size: int
    uri: str
    version: int  # the run version that recorded it


@dataclass(slots=True)
class LogOutcome:
    """What a batch of log calls did: rows committed, the step logging continues at, and
    a warning for each call that was refused because its step was lower than the current."""

    rows: list[EventRow] = field(default_factory=list)
    next_step: int = 0
    warnings: list[str] = field(default_factory=list)
    duplicate: bool = False


class Run(Aggregate):
    TOPIC = "runhistory:Run"

    # Aggregate.Snapshot is this class; mypy sees only a variable there.
    class Snapshot(BaseSnapshot):
        TOPIC = "runhistory:Run.Snapshot"

    # ---- the events -----------------------------------------------------------------
    # What the event store holds of each: its TOPIC and its fields, by name. Events already
    # stored must keep decoding, so neither changes (tests/integration/test_stored_events.py). Each
    # `@event` method below applies its event: it only assigns, as it runs on every replay.

    class Event(Aggregate.Event):
        """Every event of a run."""

    class Created(Event, Aggregate.Created):
        TOPIC = "runhistory:Run.Created"
        entity: str
        project: str
        run_id: str
        name: str
        tags: list[str]
        config: dict[str, object]
        metrics: dict[str, list[str]]  # define_metric choices: key -> aggregates
        writer: str
        started_at: float
        forked_from: ForkedFrom | None
        last_step: int | None  # a fork's branch step; None for a new run

    class RowsLogged(Event):
        TOPIC = "runhistory:Run.RowsLogged"
        rows: list[EventRow]  # committed, in step order
        next_step: int
        pending: PendingRow | None
        writer: str | None
        seq: int | None

    class ConfigUpdated(Event):
        TOPIC = "runhistory:Run.ConfigUpdated"
        changes: dict[str, object]
        writer: str | None
        seq: int | None

    class SummarySet(Event):
        TOPIC = "runhistory:Run.SummarySet"
        values: Values
        writer: str | None
        seq: int | None

    class MetricDefined(Event):
        TOPIC = "runhistory:Run.MetricDefined"
        key: str
        aggregates: list[str]
        writer: str | None
        seq: int | None

    class ArtifactRecorded(Event):
        TOPIC = "runhistory:Run.ArtifactRecorded"
        artifact: ArtifactRecord
        writer: str | None
        seq: int | None

    class Finished(Event):
        TOPIC = "runhistory:Run.Finished"
        rows: list[EventRow]  # the pending row, committed
        state: str  # FINISHED or CRASHED
        exit_code: int
        writer: str | None
        seq: int | None

    class Resumed(Event):
        TOPIC = "runhistory:Run.Resumed"
        rows: list[EventRow]  # the pending row, committed
        config: dict[str, object]  # merged over the stored config
        writer: str
        started_at: float

    class DetailsUpdated(Event):
        """W&B's run details, given at init: at creation (notes, group, job type) or with a
        resume or rewind (any of them). None leaves a detail as it was."""

        TOPIC = "runhistory:Run.DetailsUpdated"
        name: str | None
        tags: list[str] | None
        notes: str | None
        group: str | None
        job_type: str | None
        writer: str | None
        seq: int | None

    class Rewound(Event):
        TOPIC = "runhistory:Run.Rewound"
        rows: list[EventRow]  # the pending row, committed into the archived version
        step: int
        archived_version: int
        config: dict[str, object]  # merged over the stored config
        writer: str
        started_at: float

    class CrashDetected(Event):
        """Nothing was heard from the writer for longer than the server's crash timeout:
        the run is crashed. The writer keeps its session (a network partition is not a
        rewind), so if it comes back, its next write revives the run."""

        TOPIC = "runhistory:Run.CrashDetected"
        writer: str  # the session that fell silent
        silent_since: float  # when it was last heard from, seconds since the epoch
        crash_after: float  # the timeout it exceeded, seconds

    class Revived(Event):
        """The writer of a run crashed by silence was heard from again: running again."""

        TOPIC = "runhistory:Run.Revived"
        writer: str

    # Details only `DetailsUpdated` sets: class defaults, so runs (and snapshots) from before
    # that event keep the same state.
    notes: str = ""
    group: str = ""
    job_type: str = ""

    # ---- creation -------------------------------------------------------------------

    @staticmethod
    def create_id(entity: str, project: str, run_id: str) -> UUID:
        return run_aggregate_id(entity, project, run_id)

    @classmethod
    def start(
        cls,
        path: RunPath,
        writer: str,
        started_at: float,
        name: str | None = None,
        tags: Sequence[str] = (),
        config: Mapping[str, object] | None = None,
    ) -> Run:
        check_new_run_id(path.run_id)
        return cls(
            entity=path.entity,
            project=path.project,
            run_id=path.run_id,
            name=check_run_name(name) or path.run_id,
            tags=check_tags(tags),
            config=check_config(config or {}),
            metrics={},
            writer=writer,
            started_at=float(started_at),
            forked_from=None,
            last_step=None,
        )

    @classmethod
    def fork(
        cls,
        source: Run,
        step: int,
        path: RunPath,
        writer: str,
        started_at: float,
        name: str | None = None,
        tags: Sequence[str] = (),
        config: Mapping[str, object] | None = None,
        archived: bool = False,
    ) -> Run:
        """A new run that sees `source`'s rows up to `step`, as `source` stands now: its
        live version, or with `archived`, the version that `source`'s next event (a rewind)
        archived, `source` being the run as it stood just before that rewind."""
        check_new_run_id(path.run_id)
        if path == source.path:
            raise InvalidArgument(
                f"a fork needs a run ID different from its source {source.path}; "
                "leave the ID empty to generate one"
            )
        # The rewind that archived a version committed its pending row into it.
        last_step = source.closed_last_step if archived else source.last_step
        source.check_branch_step(step, "fork", last_step)
        return cls(
            entity=path.entity,
            project=path.project,
            run_id=path.run_id,
            name=check_run_name(name) or path.run_id,
            tags=check_tags(tags),
            config={**source.config, **check_config(config or {})},
            metrics=dict(source.metrics),
            writer=writer,
            started_at=float(started_at),
            forked_from={
                "run": str(source.path),
                "run_uuid": str(source.id),
                "version": source.run_version,
                "step": step,
            },
            last_step=step,
        )

    @event(Created)
    def __init__(
        self,
        entity: str,
        project: str,
        run_id: str,
        name: str,
        tags: list[str],
        config: dict[str, object],
        metrics: dict[str, list[str]],
        writer: str,
        started_at: float,
        forked_from: ForkedFrom | None,
        last_step: int | None,
    ) -> None:
        self.entity = entity
        self.project = project
        self.run_id = run_id
        self.name = name
        self.tags = tags
        self.config = config
        self.metrics = metrics
        self.forked_from = forked_from
        self.state = RUNNING
        self.exit_code: int | None = None
        self.run_version = 1
        self.last_step = last_step
        self.next_step = 0 if last_step is None else last_step + 1
        self.pending: PendingRow | None = None
        self._begin_session(writer, started_at, "creation")

    def _begin_session(self, writer: str, started_at: float, cause: str) -> None:
        self.writer = writer
        self.writer_seq = 0
        self.writer_cause = cause
        self.segment_started_at = started_at

    @property
    def path(self) -> RunPath:
        return RunPath(self.entity, self.project, self.run_id)

    @property
    def immutable_id(self) -> str:
        """The live version's immutable ID (see `identity.version_id`)."""
        return version_id(self.id, self.run_version)

    @property
    def closed_last_step(self) -> int | None:
        """The live version's last step once its pending row is committed, as a rewind, a
        resume and a finish do: the row was acknowledged, so it belongs to the version."""
        return self.last_step if self.pending is None else self.pending["step"]

    # ---- checks shared by the commands ------------------------------------------------

    def check_branch_step(self, step: int, action: str, last_step: int | None = None) -> None:
        """Refuse a branch `step` past `last_step` (default: the last committed step)."""
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise InvalidArgument(f"cannot {action} at step {step!r}: the step is an integer >= 0")
        last = self.last_step if last_step is None else last_step
        if last is None:
            raise OutOfRange(
                f"cannot {action} {self.path} at step {step}: it has no committed steps yet"
            )
        if step > last:
            raise OutOfRange(
                f"cannot {action} {self.path} at step {step}: its last committed step is "
                f"{last}; choose a step from 0 to {last}"
            )

    def _check_writer(self, writer: str | None) -> None:
        # A writer of None is an administrative client (API, CLI): it is never fenced.
        if writer is not None and writer != self.writer:
            raise Superseded(
                f"this session of {self.path} was superseded by a {self.writer_cause} "
                f"(the run is now at version {self.run_version}); its writes are refused. "
                "Start a new session with resume or resume_from to write again"
            )

    # ---- details: name, tags, notes, group, job type -----------------------------------

    def update_details(
        self,
        name: str | None = None,
        tags: Sequence[str] | None = None,
        notes: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        writer: str | None = None,
        seq: int | None = None,
    ) -> bool:
        """Replace the details given (None: unchanged); no event when nothing changes (but
        for a sequence number to record)."""
        if not self._accepts(writer, seq):
            return False
        name = check_run_name(name)
        checked_tags = None if tags is None else check_tags(tags)
        notes = check_detail("notes", notes)
        group = check_detail("group", group)
        job_type = check_detail("job_type", job_type)
        # Only what differs goes into the event: a resume naming the same details adds none.
        name = None if name == self.name else name
        checked_tags = None if checked_tags == self.tags else checked_tags
        notes = None if notes == self.notes else notes
        group = None if group == self.group else group
        job_type = None if job_type == self.job_type else job_type
        unchanged = (name, checked_tags, notes, group, job_type) == (None,) * 5
        if unchanged and seq is None:
            return False
        self._details_updated(name, checked_tags, notes, group, job_type, writer, seq)
        return True

    @event(DetailsUpdated)
    def _details_updated(
        self,
        name: str | None,
        tags: list[str] | None,
        notes: str | None,
        group: str | None,
        job_type: str | None,
        writer: str | None,
        seq: int | None,
    ) -> None:
        if name is not None:
            self.name = name
        if tags is not None:
            self.tags = tags
        if notes is not None:
            self.notes = notes
        if group is not None:
            self.group = group
        if job_type is not None:
            self.job_type = job_type
        self._advance_seq(writer, seq)

    def _check_running(self, action: str, writer: str | None = None) -> None:
        """Refuses unless the run is running, or crashed by silence and `writer` (checked by
        `_accepts` before) is its own writer back: that write revives it (`_revive`)."""
        if self.state != RUNNING and not (self.silenced and writer is not None):
            raise RunNotRunning(
                f"cannot {action}: run {self.path} is {self.state}; resume it first "
                "(resume='must') or rewind it (resume_from)"
            )

    def _accepts(self, writer: str | None, seq: int | None) -> bool:
        """Refuses a superseded writer; False for a retried request that was applied."""
        self._check_writer(writer)
        return not self.is_duplicate(writer, seq)

    def is_duplicate(self, writer: str | None, seq: int | None) -> bool:
        """A retried request of the current writer that was applied already."""
        if seq is None or writer is None or writer != self.writer:
            return False
        if not isinstance(seq, int) or seq < 1:
            raise InvalidArgument(f"invalid sequence number {seq!r}: use integers from 1 up")
        return seq <= self.writer_seq

    # ---- logging ----------------------------------------------------------------------

    def log(
        self,
        calls: Sequence[LogCall],
        writer: str | None = None,
        seq: int | None = None,
        limits: Limits = DEFAULT_LIMITS,
        drop_refused: bool = False,
    ) -> LogOutcome:
        """Apply a batch of `log()` calls with W&B's step rules; one event for the batch.

        A call whose data is refused (a value's type, a key, a row over the limits) refuses
        the whole batch; with `drop_refused`, only that call's data is dropped, with a
        warning, and its step and commit still count (as the SDK, which checks the same
        rules before sending, counted them for `run.step`)."""
        if not self._accepts(writer, seq):
            return LogOutcome(next_step=self.next_step, duplicate=True)
        self._check_running("log rows", writer)
        if len(calls) > limits.max_calls_per_batch:
            raise ResourceExhausted(
                f"the request holds {len(calls)} log calls; at most "
                f"{limits.max_calls_per_batch} are allowed per request (max_calls_per_batch)"
            )
        outcome = LogOutcome()
        step = self.next_step
        pending = _copy_pending(self.pending)
        # An upper bound of the pending row's size (the sum of what merged into it): the
        # exact size is only measured when the bound is over the limit.
        bound = 0 if pending is None else row_size(pending["values"])
        request_bytes = 0
        for call in calls:
            if not _is_finite_number(call.timestamp):
                raise InvalidArgument(
                    f"invalid timestamp {call.timestamp!r}: seconds since the epoch, finite"
                )
            target = step if call.step is None else check_step(call.step)
            try:
                data = flatten(call.data, limits)
            except (InvalidArgument, ResourceExhausted) as refused:
                if not drop_refused:
                    raise
                outcome.warnings.append(_dropped_call(target, refused))
                data = {}
            size = row_size(data)
            request_bytes += size
            if request_bytes > limits.max_request_bytes:
                raise ResourceExhausted(
                    f"the request holds more than {limits.max_request_bytes} bytes of rows; "
                    "send fewer rows per request"
                )
            if target < step:
                outcome.warnings.append(
                    f"step {target} is lower than the current step {step} of {self.path}: "
                    "steps only increase, so this log call was ignored"
                )
                continue
            if target > step:
                if pending is not None:
                    outcome.rows.append(self._commit(pending, bound, limits))
                pending, step = None, target
            if pending is None:
                pending, bound = {"step": step, "timestamp": call.timestamp, "values": {}}, 0
            if drop_refused and data:
                try:
                    self._check_pending(pending, bound + size, limits, data)
                except ResourceExhausted as refused:
                    outcome.warnings.append(_dropped_call(target, refused))
                    data, size = {}, 0
            pending["values"].update(data)
            pending["timestamp"] = float(call.timestamp)
            bound += size
            commit = call.commit if call.step is not None else call.commit is not False
            if commit:
                outcome.rows.append(self._commit(pending, bound, limits))
                pending, step = None, step + 1
        outcome.next_step = step
        if pending is not None:
            self._check_pending(pending, bound, limits)
        self._revive(writer)
        if outcome.rows or pending != self.pending or step != self.next_step or seq is not None:
            self._rows_logged(
                rows=outcome.rows,
                next_step=step,
                pending=pending,
                writer=writer,
                seq=seq,
            )
        return outcome

    @staticmethod
    def _check_pending(
        pending: PendingRow, bound: int, limits: Limits, merging: Values | None = None
    ) -> None:
        """Refuse the pending row (with `merging` merged into it) if it is over the limits;
        `bound`, the sum of what merged into it, spares measuring rows well under them."""
        values = pending["values"]
        keys = len(values) + len(merging or ())
        if bound > limits.max_row_bytes or keys > limits.max_keys_per_row:
            check_row_size(pending["step"], {**values, **merging} if merging else values, limits)

    def _commit(self, pending: PendingRow, bound: int, limits: Limits) -> EventRow:
        values: Values = pending["values"]
        self._check_pending(pending, bound, limits)
        runtime = max(0.0, pending["timestamp"] - self.segment_started_at)
        return [pending["step"], pending["timestamp"], runtime, values]

    @event(RowsLogged)
    def _rows_logged(
        self,
        rows: list[EventRow],
        next_step: int,
        pending: PendingRow | None,
        writer: str | None,
        seq: int | None,
    ) -> None:
        if rows:
            self.last_step = rows[-1][0]
        self.next_step = next_step
        self.pending = pending
        self._advance_seq(writer, seq)

    def _advance_seq(self, writer: str | None, seq: int | None) -> None:
        if seq is not None and writer == self.writer:
            self.writer_seq = seq

    # ---- logging by line number (W&B's file_stream) ------------------------------------
    #
    # A W&B client numbers history rows by line: the version's rows are lines 0..K-1 and it
    # sends its rows as lines K, K+1, ..., and resends the same lines when a request is
    # retried. Such a session's sequence number is its line count: `start_lines` sets it to
    # K when the session starts, and each request advances it to its last line + 1. So no
    # new event is needed: RowsLogged already records `seq`.

    def start_lines(self, lines: int, writer: str) -> None:
        """Number the session's rows by line from `lines`, the rows its version holds."""
        self._check_writer(writer)
        if not isinstance(lines, int) or isinstance(lines, bool) or lines < 0:
            raise InvalidArgument(f"a line count is an integer >= 0, got {lines!r}")
        if self.writer_seq:
            raise InvalidArgument(
                f"this session of {self.path} numbers its rows already (at line "
                f"{self.writer_seq}); a session's line numbers start once"
            )
        if lines:
            self.log([], writer=writer, seq=lines)

    def log_lines(
        self,
        first_line: int,
        calls: Sequence[LogCall],
        writer: str,
        limits: Limits = DEFAULT_LIMITS,
        drop_refused: bool = False,
    ) -> LogOutcome:
        """Log `calls[i]` as line `first_line + i`, each a row of its own at a step above
        the last. Lines applied before are skipped, so a retried request applies nothing
        twice; a request that leaves lines out is refused, since it cannot come from the
        session that holds the run (nor can rows that go back in steps). `drop_refused`:
        as in `log`, a line whose data is refused keeps its row, empty, with a warning."""
        self._check_writer(writer)
        if not isinstance(first_line, int) or isinstance(first_line, bool) or first_line < 0:
            raise InvalidArgument(f"a line offset is an integer >= 0, got {first_line!r}")
        applied = self.writer_seq
        if first_line > applied:
            raise FailedPrecondition(
                f"history line {first_line} of {self.path} does not follow the session's "
                f"lines: its next line is {applied}, so lines {applied} to {first_line - 1} "
                "are missing; another process may be writing to this run"
            )
        fresh = calls[applied - first_line :]
        if not fresh:
            return LogOutcome(next_step=self.next_step, duplicate=True)
        step = self.next_step
        for number, call in enumerate(fresh, applied):
            if call.step is None:
                raise InvalidArgument(f"history line {number} of {self.path} has no step")
            line_step = check_step(call.step)
            if line_step < step:
                raise FailedPrecondition(
                    f"history line {number} of {self.path} is at step {line_step}, but the "
                    f"run continues at step {step}: each line is a row at a higher step"
                )
            step = line_step + 1
        rows = [c if c.commit else LogCall(c.data, c.timestamp, c.step, True) for c in fresh]
        return self.log(
            rows,
            writer=writer,
            seq=first_line + len(calls),
            limits=limits,
            drop_refused=drop_refused,
        )

    def _closing_rows(self) -> list[EventRow]:
        """The pending row, committed: it was acknowledged, so it is never dropped."""
        if self.pending is None:
            return []
        return [self._commit(self.pending, 0, Limits(max_keys_per_row=2**62))]

    # ---- config, summary, metric definitions, artifacts -------------------------------

    def update_config(
        self, changes: Mapping[str, object], writer: str | None = None, seq: int | None = None
    ) -> bool:
        if not self._accepts(writer, seq):
            return False
        checked = check_config(changes)
        self._revive(writer)
        self._config_updated(changes=checked, writer=writer, seq=seq)
        return True

    @event(ConfigUpdated)
    def _config_updated(
        self, changes: dict[str, object], writer: str | None, seq: int | None
    ) -> None:
        self.config = {**self.config, **changes}
        self._advance_seq(writer, seq)

    def set_summary(
        self, values: Mapping[str, object], writer: str | None = None, seq: int | None = None
    ) -> bool:
        """Explicit summary values: each holds until its key is logged again."""
        if not self._accepts(writer, seq):
            return False
        flat = flatten(values)
        self._revive(writer)
        self._summary_set(values=flat, writer=writer, seq=seq)
        return True

    @event(SummarySet)
    def _summary_set(self, values: Values, writer: str | None, seq: int | None) -> None:
        self._advance_seq(writer, seq)

    def define_metric(
        self, key: str, summary: str, writer: str | None = None, seq: int | None = None
    ) -> bool:
        if not self._accepts(writer, seq):
            return False
        # The same key rules as logged values, for the name or the glob's prefix.
        check_metric_name(key)
        if key != "*":
            flatten({key.removesuffix("*"): 0})
        aggregates = parse_summary_choice(summary)
        self._revive(writer)
        self._metric_defined(key=key, aggregates=aggregates, writer=writer, seq=seq)
        return True

    @event(MetricDefined)
    def _metric_defined(
        self, key: str, aggregates: list[str], writer: str | None, seq: int | None
    ) -> None:
        self.metrics = {**self.metrics, key: aggregates}
        self._advance_seq(writer, seq)

    def record_artifact(
        self,
        direction: str,
        name: str,
        type: str,
        digest: str = "",
        size: int = 0,
        uri: str = "",
        writer: str | None = None,
        seq: int | None = None,
    ) -> bool:
        if not self._accepts(writer, seq):
            return False
        check_artifact(direction, name, type, size)
        self._revive(writer)
        self._artifact_recorded(
            artifact={
                "direction": direction,
                "name": name,
                "type": type,
                "digest": str(digest),
                "size": size,
                "uri": str(uri),
                "version": self.run_version,
            },
            writer=writer,
            seq=seq,
        )
        return True

    @event(ArtifactRecorded)
    def _artifact_recorded(
        self, artifact: ArtifactRecord, writer: str | None, seq: int | None
    ) -> None:
        self._advance_seq(writer, seq)

    # ---- lifecycle: finish, resume, rewind --------------------------------------------

    def finish(self, exit_code: int = 0, writer: str | None = None, seq: int | None = None) -> bool:
        """Commit the pending row and end the run: finished on exit code 0, else crashed."""
        if not self._accepts(writer, seq):
            return False
        if not isinstance(exit_code, int) or isinstance(exit_code, bool):
            raise InvalidArgument(f"the exit code is an integer, got {exit_code!r}")
        self._check_running("finish", writer)
        self._revive(writer)
        self._finished(
            rows=self._closing_rows(),
            state=FINISHED if exit_code == 0 else CRASHED,
            exit_code=exit_code,
            writer=writer,
            seq=seq,
        )
        return True

    @event(Finished)
    def _finished(
        self, rows: list[EventRow], state: str, exit_code: int, writer: str | None, seq: int | None
    ) -> None:
        self._close_pending(rows)
        self.state = state
        self.exit_code = exit_code
        self._advance_seq(writer, seq)

    def _close_pending(self, rows: list[EventRow]) -> None:
        if rows:
            self.last_step = rows[-1][0]
            self.next_step = self.last_step + 1
        self.pending = None

    def resume(
        self, writer: str, started_at: float, config: Mapping[str, object] | None = None
    ) -> None:
        """Continue at the last step + 1 in a new session; the previous writer is fenced."""
        self._resumed(
            rows=self._closing_rows(),
            config=check_config(config or {}),
            writer=writer,
            started_at=float(started_at),
        )

    @event(Resumed)
    def _resumed(
        self, rows: list[EventRow], config: dict[str, object], writer: str, started_at: float
    ) -> None:
        self._close_pending(rows)
        self.config = {**self.config, **config}
        self.state = RUNNING
        self.exit_code = None
        self._begin_session(writer, started_at, "resume")

    def rewind(
        self,
        step: int,
        writer: str,
        started_at: float,
        config: Mapping[str, object] | None = None,
        version: int | None = None,
    ) -> None:
        """Archive the current version whole and continue at `step + 1`, in any state. The
        pending row is committed into the archived version first, so `step` may be its step.
        `version`: the version the caller named (by immutable ID), which must be the live
        one: an archived version is never rewound, its run is."""
        if version is not None and version != self.run_version:
            raise FailedPrecondition(
                f"{version_id(self.id, version)} is the immutable ID of version {version} of "
                f"{self.path}, which a rewind archived (the run is at version "
                f"{self.run_version}): an archived version cannot be rewound. Rewind the run "
                f"by its run ID (resume_from='{self.run_id}?_step=N') or fork that version "
                f"(fork_from='{version_id(self.id, version)}?_step=N')"
            )
        self.check_branch_step(step, "rewind", self.closed_last_step)
        self._rewound(
            rows=self._closing_rows(),
            step=step,
            archived_version=self.run_version,
            config=check_config(config or {}),
            writer=writer,
            started_at=float(started_at),
        )

    @event(Rewound)
    def _rewound(
        self,
        rows: list[EventRow],
        step: int,
        archived_version: int,
        config: dict[str, object],
        writer: str,
        started_at: float,
    ) -> None:
        # `rows` closes the archived version; they are not part of the new one.
        if self.forked_from is not None and step < self.forked_from["step"]:
            # Rewound into its inherited range: the new version stands on fewer source rows.
            self.forked_from = {**self.forked_from, "step": step}
        self.run_version = archived_version + 1
        self.last_step = step
        self.next_step = step + 1
        self.pending = None
        self.config = {**self.config, **config}
        self.state = RUNNING
        self.exit_code = None
        self._begin_session(writer, started_at, f"rewind to step {step}")

    # ---- crash detection: a writer that falls silent -----------------------------------
    #
    # When the writer was last heard from is not in the stream (a heartbeat every few
    # seconds would bloat it): the service layer keeps it and asks `detect_crash` when a
    # run looks silent. The writer keeps its session through a detected crash, so a write
    # from it (or a heartbeat) revives the run, while resume and rewind work as on any
    # crashed run. Crashed by silence is the one crashed state without an exit code.

    @property
    def silenced(self) -> bool:
        """Crashed because its writer fell silent, not by an exit code: the writer may
        still come back."""
        return self.state == CRASHED and self.exit_code is None

    def detect_crash(self, last_heard: float, now: float, crash_after: float) -> bool:
        """Mark the run crashed when, at `now`, its writer has been silent for at least
        `crash_after` seconds: not heard from since `last_heard` (its last heartbeat, as the
        caller knows it) nor since the run's last event. False, recording nothing, when the
        run is not running or was heard from since."""
        for name, value in (("last_heard", last_heard), ("now", now)):
            if not _is_finite_number(value):
                raise InvalidArgument(f"{name} is seconds since the epoch, got {value!r}")
        if not _is_finite_number(crash_after) or crash_after <= 0:
            raise InvalidArgument(f"crash_after is a number of seconds > 0, got {crash_after!r}")
        if self.state != RUNNING:
            return False
        heard = max(float(last_heard), self.modified_on.timestamp())
        if now - heard < crash_after:
            return False
        self._crash_detected(writer=self.writer, silent_since=heard, crash_after=float(crash_after))
        return True

    @event(CrashDetected)
    def _crash_detected(self, writer: str, silent_since: float, crash_after: float) -> None:
        self.state = CRASHED
        self.exit_code = None

    def revive(self, writer: str) -> bool:
        """The writer was heard from (a heartbeat): if the run is crashed by silence, it is
        running again. Refuses a superseded writer; False when there was nothing to revive."""
        self._check_writer(writer)
        if not self.silenced:
            return False
        self._revive(writer)
        return True

    def _revive(self, writer: str | None) -> None:
        """Before a write of the run's own writer: revive the run if it was crashed by
        silence (the write was checked, and is recorded right after)."""
        if writer is not None and self.silenced:
            self._revived(writer=writer)

    @event(Revived)
    def _revived(self, writer: str) -> None:
        self.state = RUNNING


# Every event class of a run, in the order a run usually meets them.
EVENT_CLASSES: tuple[type[Run.Event], ...] = (
    Run.Created,
    Run.RowsLogged,
    Run.ConfigUpdated,
    Run.SummarySet,
    Run.MetricDefined,
    Run.ArtifactRecorded,
    Run.Finished,
    Run.Resumed,
    Run.Rewound,
    Run.CrashDetected,
    Run.Revived,
    Run.DetailsUpdated,
)


def event_types() -> tuple[str, ...]:
    """The names of a run's event classes, as `EVENT_CLASSES` orders them."""
    return tuple(cls.__name__ for cls in EVENT_CLASSES)


def _dropped_call(step: int, refused: RunHistoryError) -> str:
    return f"the data of a log call at step {step} was dropped: {refused.message}"


def _copy_pending(pending: PendingRow | None) -> PendingRow | None:
    if pending is None:
        return None
    return {**pending, "values": dict(pending["values"])}


def _is_finite_number(value: object) -> bool:
    # Exactly float or int: a bool is not a timestamp.
    return (type(value) is float or type(value) is int) and math.isfinite(value)
