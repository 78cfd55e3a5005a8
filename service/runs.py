"""The run service: commands (get, decide, save) and queries over the read models.

Every command returns the position of the last event it wrote. Queries first wait until
the read models include the latest position this service wrote (read your writes), or a
position the caller names.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from runhistory.domain.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    OutOfRange,
)
from runhistory.domain.identity import (
    BranchPoint,
    RunPath,
    VersionRef,
    check_name,
    generate_run_id,
    is_version_id,
    version_id,
)
from runhistory.domain.listing import (
    MAX_PAGE_SIZE,
    ORDERS,
    RunFilter,
    check_order,
    check_page_size,
    decode_cursor,
    encode_cursor,
    listing_key,
)
from runhistory.domain.rules import check_step_range
from runhistory.domain.run import RUNNING, LogOutcome, Run
from runhistory.domain.values import LogCall, flatten, same_value
from runhistory.projections import archive, artifacts, history, lineage, runs, summary
from runhistory.projections.database import Database

# By name: in RunService's annotations, its method `history` hides the module.
from runhistory.projections.history import Segment, SeriesPage
from runhistory.projections.runner import Progress, ProjectionRunner
from runhistory.service.application import RunEvents, event_store_env
from runhistory.service.events import describe_event, read_events, replay_until
from runhistory.service.liveness import Liveness
from runhistory.service.records import (
    Ancestor,
    ArtifactRecord,
    Descendant,
    EventRecord,
    ForkedFrom,
    LineageRecord,
    LineageVersion,
    ProjectRecord,
    RunRecord,
    RunsPage,
    VersionRecord,
)
from runhistory.service.settings import Settings

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
R = TypeVar("R", bound="DataclassInstance")
MAX_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class Session:
    """A writer's hold on a run, from create, resume, rewind or fork."""

    path: RunPath
    writer: str
    version: int
    next_step: int
    position: int
    config: dict[str, object]
    forked_from: ForkedFrom | None = None
    immutable_id: str = ""  # of the session's version
    name: str = ""
    tags: list[str] = field(default_factory=list)
    notes: str = ""
    group: str = ""
    job_type: str = ""
    resumed: bool = False  # an existing run continues: a resume or rewind


@dataclass(frozen=True, slots=True)
class Details:
    """W&B's run details given to init; None: not given."""

    name: str | None = None
    tags: list[str] | None = None
    notes: str | None = None
    group: str | None = None
    job_type: str | None = None

    def apply(self, run: Run) -> None:
        """On a resume or rewind: every detail given replaces the stored one."""
        run.update_details(self.name, self.tags, self.notes, self.group, self.job_type)

    def apply_extras(self, run: Run) -> None:
        """On a new run, whose name and tags its creation holds already."""
        run.update_details(notes=self.notes, group=self.group, job_type=self.job_type)


@dataclass(frozen=True, slots=True)
class Ack:
    position: int
    applied: bool = True  # False: a retried request that was applied before


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    state: str  # the run's state after the heartbeat
    revived: bool  # the run was crashed by silence and is running again (a Revived event)
    position: int  # the Revived event's position; 0 when nothing was written


@dataclass(frozen=True, slots=True)
class LogAck(Ack):
    next_step: int = 0
    rows: int = 0
    warnings: list[str] = field(default_factory=list)


class RunService:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        background: bool = False,
        projections: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`background`: apply new events to the read models in a thread of this process.
        `projections=False`: never apply them here; a worker process does. `clock` tells the
        time for crash detection (seconds since the epoch)."""
        self.settings = settings or Settings()
        self.clock = clock
        # A server that just started has heard from no writer yet: none is taken for silent
        # before `crash_after` has passed since then (see `sweep`).
        self.started_at = clock()
        self.limits = self.settings.limits
        url = self.settings.db_url
        self.db = Database(url)
        with self.db.making_tables():  # the event store's and the projections' tracking
            self.store = RunEvents(env=event_store_env(url))
            self.runner = ProjectionRunner(self.store, self.db, inline=projections)
            self.liveness = Liveness(self.db)
        self._heard: dict[UUID, float] = {}  # when this process last recorded each heartbeat
        self._locks: defaultdict[UUID, threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()
        # Reads wait for what was acknowledged before this process started, too: after a
        # restart or an upgrade that replays a read model, they never see less than that.
        self._written = self.store.last_position()
        if background and projections:
            self.runner.start()

    def close(self) -> None:
        self.runner.stop()
        self.store.close()
        self.db.dispose()

    def __enter__(self) -> RunService:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- the command pipeline ----------------------------------------------------------

    def _lock(self, run_uuid: UUID) -> threading.Lock:
        with self._locks_guard:
            return self._locks[run_uuid]

    def _get(self, path: RunPath) -> Run:
        try:
            return self.store.repository.get(path.aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"run {path} does not exist") from None

    def _save(self, *runs: Run) -> int:
        recordings = self.store.save(*runs)
        if not recordings:
            return max(self._written, self.store.last_position())
        position = recordings[-1].notification.id
        self._written = max(self._written, position)
        return position

    def _change(self, path: RunPath, command: Callable[[Run], T]) -> tuple[T, int]:
        """Get the run, decide, save; retried when another writer saved first."""
        with self._lock(path.aggregate_id):
            for _attempt in range(MAX_ATTEMPTS):
                run = self._get(path)
                result = command(run)
                try:
                    return result, self._save(run)
                except IntegrityError:
                    time.sleep(0.005)
        raise Aborted(
            f"run {path} changed concurrently {MAX_ATTEMPTS} times while this request was "
            "applied; nothing was written, retry it"
        )

    def _ack(self, path: RunPath, command: Callable[[Run], bool]) -> Ack:
        applied, position = self._change(path, command)
        return Ack(position, applied)

    def _new_session(self, path: RunPath, command: Callable[[Run], object]) -> Session:
        """Change the run by a command that hands it to a new writer (resume, rewind)."""

        def apply(run: Run) -> Run:
            command(run)
            return run

        run, position = self._change(path, apply)
        return _session(run, position, resumed=True)

    # ---- starting sessions -------------------------------------------------------------

    def init(
        self,
        entity: str,
        project: str,
        run_id: str | None = None,
        *,
        name: str | None = None,
        tags: Sequence[str] = (),
        config: Mapping[str, object] | None = None,
        resume: str | bool | None = None,
        resume_from: str | None = None,
        fork_from: str | None = None,
        started_at: float | None = None,
        notes: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
    ) -> Session:
        """`wandb.init` semantics: create, plain resume, rewind (`resume_from`) or fork. A
        resume or rewind replaces the details given (name, tags, notes, group, job type)."""
        check_name("entity", entity)
        check_name("project", project)
        given = [
            n
            for n, v in (("resume", resume), ("resume_from", resume_from), ("fork_from", fork_from))
            if v
        ]
        if len(given) > 1:
            raise InvalidArgument(
                f"use at most one of resume, resume_from and fork_from, got {given}"
            )
        started_at = time.time() if started_at is None else started_at
        details = Details(name, list(tags) or None, notes, group, job_type)
        if resume_from:
            branch = BranchPoint.parse(resume_from, entity, project)
            path, version = self.resolve_branch(branch)
            if run_id is not None and run_id != path.run_id:
                raise InvalidArgument(
                    f"resume_from names run {path.run_id} but id is {run_id}: a rewind keeps "
                    "the run's ID, so leave id empty or make it match"
                )
            return self._rewind(path, version, branch.step, config, started_at, None, details)
        if fork_from:
            branch = BranchPoint.parse(fork_from, entity, project)
            path = RunPath(entity, project, run_id or generate_run_id())
            return self.fork(branch, path, config=config, started_at=started_at, details=details)
        if resume in (None, False, "never"):
            path = RunPath(entity, project, run_id or generate_run_id())
            return self.create(path, config=config, started_at=started_at, details=details)
        if resume is True:
            resume = "allow"
        if resume not in ("allow", "must"):
            raise InvalidArgument(
                f"invalid resume {resume!r}: use 'allow', 'must', 'never' or leave it unset"
            )
        if run_id is None:
            raise InvalidArgument(f"resume={resume!r} needs the ID of the run to resume")
        path = RunPath(entity, project, run_id)
        try:
            return self.resume(path, config=config, started_at=started_at, details=details)
        except NotFound:
            if resume == "must":
                raise NotFound(
                    f"run {path} does not exist, and resume='must' needs an existing run; "
                    "use resume='allow' to create it"
                ) from None
        return self.create(path, config=config, started_at=started_at, details=details)

    def create(
        self,
        path: RunPath,
        *,
        name: str | None = None,
        tags: Sequence[str] = (),
        config: Mapping[str, object] | None = None,
        started_at: float | None = None,
        writer: str | None = None,
        details: Details | None = None,
    ) -> Session:
        """A new run. `writer` names the session (generated when None); `details` override
        `name` and `tags`."""
        writer = writer or _new_writer()
        details = details or Details(name, list(tags) or None)
        tags = details.tags or ()
        run = Run.start(path, writer, _now(started_at), name=details.name, tags=tags, config=config)
        details.apply_extras(run)
        with self._lock(path.aggregate_id):
            try:
                position = self._save(run)
            except IntegrityError:
                raise AlreadyExists(
                    f"run {path} already exists; resume it (resume='allow' or 'must'), rewind it "
                    "(resume_from), fork it (fork_from) or choose another ID"
                ) from None
        return _session(run, position)

    def resume(
        self,
        path: RunPath,
        *,
        config: Mapping[str, object] | None = None,
        started_at: float | None = None,
        writer: str | None = None,
        details: Details | None = None,
    ) -> Session:
        writer = writer or _new_writer()

        def resume(run: Run) -> None:
            run.resume(writer, _now(started_at), config)
            (details or Details()).apply(run)

        return self._new_session(path, resume)

    def rewind(
        self,
        branch: BranchPoint,
        *,
        config: Mapping[str, object] | None = None,
        started_at: float | None = None,
        writer: str | None = None,
        details: Details | None = None,
    ) -> Session:
        path, version = self.resolve_branch(branch)
        return self._rewind(path, version, branch.step, config, started_at, writer, details)

    def _rewind(
        self,
        path: RunPath,
        version: int | None,
        step: int,
        config: Mapping[str, object] | None,
        started_at: float | None,
        writer: str | None,
        details: Details | None = None,
    ) -> Session:
        """`version`: named by immutable ID; the run refuses unless it is the live one."""
        writer = writer or _new_writer()

        def rewind(run: Run) -> None:
            run.rewind(step, writer, _now(started_at), config, version)
            (details or Details()).apply(run)

        return self._new_session(path, rewind)

    def fork(
        self,
        branch: BranchPoint,
        path: RunPath,
        *,
        name: str | None = None,
        tags: Sequence[str] = (),
        config: Mapping[str, object] | None = None,
        started_at: float | None = None,
        writer: str | None = None,
        details: Details | None = None,
    ) -> Session:
        """A new run from a branch point: a run's live version, or any version of a run
        named by its immutable ID, as it stands (a live one) or was archived."""
        source_path, version = self.resolve_branch(branch)
        source, archived = self._branch_source(source_path, version)
        details = details or Details(name, list(tags) or None)
        run = Run.fork(
            source,
            branch.step,
            path,
            writer or _new_writer(),
            _now(started_at),
            name=details.name,
            tags=details.tags or (),
            config=config,
            archived=archived,
        )
        details.apply_extras(run)
        with self._lock(path.aggregate_id):
            try:
                position = self._save(run)
            except IntegrityError:
                raise AlreadyExists(
                    f"run {path} already exists; a fork needs a new run ID (leave it empty to "
                    "generate one)"
                ) from None
        return _session(run, position)

    def _branch_source(self, path: RunPath, version: int | None) -> tuple[Run, bool]:
        """The run to fork and whether it is an archived version: the run as it stood just
        before the rewind that archived `version` (loaded from a snapshot and at most a
        snapshot interval of events), or the run as it stands."""
        run = self._get(path)
        if version is None or version == run.run_version:
            return run, False
        # The version is archived, so its rewind is stored: wait until the archive has it.
        with self._reading(max(self._written, self.store.last_position())) as conn:
            found = archive.find_version(conn, version_id(path.aggregate_id, version))
        if found is None or found["archived_event"] is None:
            raise NotFound(f"run {path} has no archived version {version}")
        before: Run = self.store.repository.get(
            path.aggregate_id, version=found["archived_event"] - 1
        )
        return before, True

    # ---- immutable version IDs ---------------------------------------------------------

    def resolve_branch(self, branch: BranchPoint) -> tuple[RunPath, int | None]:
        """The run a branch point names, and the version if it names one by immutable ID."""
        ref = branch.run
        if isinstance(ref, RunPath):
            if not is_version_id(ref.run_id):
                return ref, None
            # A version ID where a run ID was expected (the W&B protocol's fork_from): it
            # cannot be a run's, as no run may take an ID of that form.
            ref = VersionRef(ref.run_id, ref.entity, ref.project)
        return self.resolve_version(ref)

    def resolve_version(
        self,
        ref: VersionRef,
        *,
        within_entity: str | None = None,
        min_position: int | None = None,
    ) -> tuple[RunPath, int]:
        """The run and version number an immutable ID names. `within_entity`: look only
        among that entity's runs (a bare ID from a key of that entity), so a miss says
        nothing of other entities. An ID not found is looked for again once the read models
        include every stored event: it may be of a version this server has not applied yet."""
        found = self._find_version(ref.version_id, min_position)
        if found is None:
            found = self._find_version(ref.version_id, self.store.last_position())
        if (
            found is None
            or not ref.holds(found[0])
            or (within_entity is not None and found[0].entity != within_entity)
        ):
            where = ""
            if ref.entity is not None:
                where = f" in project {ref.entity}/{ref.project}"
            elif within_entity is not None:
                where = f" among the runs of entity {within_entity!r}"
            raise NotFound(
                f"no run version has the immutable ID {ref.version_id}{where}; "
                "versions() and lineage() list a run's version IDs"
            )
        return found

    def _find_version(
        self, immutable_id: str, min_position: int | None
    ) -> tuple[RunPath, int] | None:
        with self._reading(min_position) as conn:
            row = archive.find_version(conn, immutable_id)
            if row is None:
                return None
            run = runs.run_by_uuid(conn, row["run_uuid"])
        return RunPath(run["entity"], run["project"], run["run_id"]), row["version"]

    # ---- writing to a run --------------------------------------------------------------

    def log(
        self,
        path: RunPath,
        calls: Sequence[LogCall],
        *,
        writer: str | None = None,
        seq: int | None = None,
        drop_refused: bool = False,
    ) -> LogAck:
        """A batch of log calls (`Run.log`: with `drop_refused`, a refused call's data is
        dropped with a warning instead of refusing the batch)."""
        outcome: LogOutcome
        outcome, position = self._change(
            path,
            lambda run: run.log(
                calls, writer=writer, seq=seq, limits=self.limits, drop_refused=drop_refused
            ),
        )
        return LogAck(
            position=position,
            applied=not outcome.duplicate,
            next_step=outcome.next_step,
            rows=len(outcome.rows),
            warnings=outcome.warnings,
        )

    def update_config(
        self,
        path: RunPath,
        changes: Mapping[str, object],
        *,
        writer: str | None = None,
        seq: int | None = None,
    ) -> Ack:
        return self._ack(path, lambda run: run.update_config(changes, writer=writer, seq=seq))

    def set_summary(
        self,
        path: RunPath,
        values: Mapping[str, object],
        *,
        writer: str | None = None,
        seq: int | None = None,
    ) -> Ack:
        return self._ack(path, lambda run: run.set_summary(values, writer=writer, seq=seq))

    def define_metric(
        self,
        path: RunPath,
        key: str,
        summary: str = "last",
        *,
        writer: str | None = None,
        seq: int | None = None,
    ) -> Ack:
        return self._ack(path, lambda run: run.define_metric(key, summary, writer=writer, seq=seq))

    def update_details(
        self,
        path: RunPath,
        details: Details,
        *,
        writer: str | None = None,
        seq: int | None = None,
    ) -> Ack:
        """W&B's `run.name = ...` and the like: the details given replace the run's."""
        return self._ack(
            path,
            lambda run: run.update_details(
                details.name,
                details.tags,
                details.notes,
                details.group,
                details.job_type,
                writer=writer,
                seq=seq,
            ),
        )

    def record_artifact(
        self,
        path: RunPath,
        direction: str,
        name: str,
        type: str,
        digest: str = "",
        size: int = 0,
        uri: str = "",
        *,
        writer: str | None = None,
        seq: int | None = None,
    ) -> Ack:
        return self._ack(
            path,
            lambda run: run.record_artifact(
                direction, name, type, digest, size, uri, writer=writer, seq=seq
            ),
        )

    def finish(
        self,
        path: RunPath,
        exit_code: int = 0,
        *,
        writer: str | None = None,
        seq: int | None = None,
    ) -> Ack:
        return self._ack(path, lambda run: run.finish(exit_code, writer=writer, seq=seq))

    # ---- sessions that number rows by line (the W&B protocol) --------------------------

    def start_lines(self, path: RunPath, *, writer: str) -> int:
        """Number the session's rows by line, from the rows its version holds now, and
        return that count: a W&B client sends its first row as that line."""
        lines = self.line_count(path)
        self._change(path, lambda run: run.start_lines(lines, writer))
        return lines

    def log_lines(
        self,
        path: RunPath,
        first_line: int,
        calls: Sequence[LogCall],
        *,
        writer: str,
        drop_refused: bool = False,
    ) -> LogAck:
        """Rows numbered by line (see `Run.log_lines`), in batches of at most
        `max_calls_per_batch`; lines applied before are acknowledged, not applied again."""
        size = self.limits.max_calls_per_batch
        ack = LogAck(position=self._written, applied=False)
        for start in range(0, len(calls), size):
            # `start` as a default: bound now, not when the loop has moved on (B023).
            def log_batch(run: Run, start: int = start) -> LogOutcome:
                batch = calls[start : start + size]
                return run.log_lines(first_line + start, batch, writer, self.limits, drop_refused)

            outcome, position = self._change(path, log_batch)
            ack = LogAck(
                position=position,
                applied=ack.applied or not outcome.duplicate,
                next_step=outcome.next_step,
                rows=ack.rows + len(outcome.rows),
                warnings=[*ack.warnings, *outcome.warnings],
            )
        return ack

    def report_summary(
        self,
        path: RunPath,
        reported: Mapping[str, object],
        *,
        taken_at: Mapping[str, object] | None = None,
        writer: str | None = None,
    ) -> Ack:
        """A client's whole summary as it sees it (W&B sends it so): the values that differ
        from the run's summary become explicit values, as if set with `set_summary`; the
        others stay derived, so they follow rewinds and later rows.

        `taken_at` holds what the client says of the row its summary was taken at (its
        `_step`, `_timestamp`). A summary taken at another row than the run's last, sent
        ahead of its rows or behind them, is not compared (it would take rows for explicit
        values): a later one, sent with its rows, is."""
        values = flatten(reported, self.limits)
        if taken_at and not self._is_last_row(path, taken_at):
            return Ack(self._written, applied=False)
        derived = self.summary(path)
        explicit = {
            key: value
            for key, value in values.items()
            if key not in derived or not same_value(derived[key], value)
        }
        if not explicit:
            return Ack(self._written, applied=False)
        return self.set_summary(path, explicit, writer=writer)

    def _is_last_row(self, path: RunPath, fields: Mapping[str, object]) -> bool:
        last_step = self.run(path).last_step
        if last_step is None:
            return False
        rows = self.history(path, min_step=last_step, max_step=last_step)
        return bool(rows) and all(same_value(rows[0].get(k), v) for k, v in fields.items())

    # ---- liveness: heartbeats and crash detection ---------------------------------------

    def heartbeat(self, path: RunPath, *, writer: str) -> HeartbeatAck:
        """The writer of `path` is alive. Remembered outside the event stream, so that the
        run is not taken for crashed (`sweep`); a run crashed by silence is revived, as a
        Revived event. Refuses a superseded writer, as its writes are."""
        run = self._get(path)
        revived, position = False, 0
        if writer != run.writer or run.silenced:
            revived, position = self._change(path, lambda run: run.revive(writer))
            run = self._get(path)
        if run.state == RUNNING:
            self._record_heartbeat(path.aggregate_id)
        return HeartbeatAck(state=run.state, revived=revived, position=position if revived else 0)

    def _record_heartbeat(self, run_uuid: UUID) -> None:
        # A writer heard from a moment ago needs no new row: recorded at most every tenth
        # of the timeout (and 10 s), as W&B clients post every second or so while logging.
        now = self.clock()
        every = min(10.0, self.settings.crash_after / 10)
        if now - self._heard.get(run_uuid, -math.inf) < every:
            return
        self.liveness.heard(run_uuid, now)
        self._heard[run_uuid] = now

    def sweep(self, stopping: Callable[[], bool] = lambda: False) -> list[RunPath]:
        """Mark crashed every running run whose writer has been silent for the settings'
        `crash_after`: no event and no heartbeat for that long, nor since this server
        started. Returns the runs it marked. A run another server marks at the same moment
        is left alone (the event store refuses the second crash event; retried, the run is
        crashed already). Stops early, between runs, once `stopping()` is true."""
        crash_after = self.settings.crash_after
        now = self.clock()
        cutoff = now - crash_after
        if crash_after <= 0 or self.started_at > cutoff:
            return []
        # The runs read model as current as the log, so that a run silent since it started
        # is found at once; if it lags (a projection worker away), what is missing there is
        # found by a later sweep.
        with suppress(DeadlineExceeded):
            self.runner.wait_for(self.store.last_position(), timeout=1.0)
        with self.db.read() as conn:
            quiet = runs.quiet_runs(conn, cutoff)
        heard = self.liveness.last_heard([path.aggregate_id for path, _at in quiet])
        marked = []
        for path, _last_event in quiet:
            if stopping():
                break
            if heard.get(path.aggregate_id, -math.inf) > cutoff:
                continue

            def detect(run: Run, path: RunPath = path) -> bool:
                # Asked again at each attempt: a heartbeat may have come in since.
                last = self.liveness.last_heard([path.aggregate_id]).get(path.aggregate_id)
                return run.detect_crash(max(last or 0.0, self.started_at), now, crash_after)

            try:
                crashed, _position = self._change(path, detect)
            except Aborted:
                continue  # written to all along: not silent
            if crashed:
                marked.append(path)
        return marked

    def current_writer(self, path: RunPath) -> str:
        """The session that holds the run now, as the event store has it."""
        return self._get(path).writer

    def line_count(self, path: RunPath, min_position: int | None = None) -> int:
        """The rows the run's current version holds, inherited ones included."""
        with self._reading(min_position) as conn:
            return summary.visible_row_count(conn, self._segment(conn, path, None))

    # ---- reading -----------------------------------------------------------------------

    @contextmanager
    def _reading(self, min_position: int | None) -> Iterator[Connection]:
        # Every read includes what this process acknowledged, and the position the client
        # names (its writes through other servers): a client's remembered position can be
        # older than this process's writes, e.g. of writes made by another protocol.
        self.runner.wait_for(max(self._written, min_position or 0))
        with self.db.read() as conn:
            yield conn

    def run(
        self, path: RunPath, min_position: int | None = None, *, version: int | None = None
    ) -> RunRecord:
        """The run's overview, with its "forked from" link; of `version` if given: its
        state, last step, immutable ID and where it stood."""
        with self._reading(min_position) as conn:
            return _run_record(conn, runs.find_run(conn, path), version)

    def runs_page(
        self,
        entity: str,
        project: str,
        *,
        run_filter: RunFilter | None = None,
        order: str | None = None,
        page_size: int | None = None,
        cursor: str | None = None,
        with_total: bool = False,
        with_summaries: bool = False,
        min_position: int | None = None,
    ) -> RunsPage:
        """A page of the project's runs (see domain/listing.py for the options), read in one
        read transaction: a listing never holds the database longer than a page."""
        check_name("entity", entity)
        check_name("project", project)
        run_filter = (run_filter or RunFilter()).checked()
        order = check_order(order)
        size = check_page_size(page_size)
        key = listing_key(entity, project, order, run_filter)
        after = decode_cursor(cursor, key) if cursor else None
        with self._reading(min_position) as conn:
            try:
                found = runs.list_runs(conn, entity, project, run_filter, order, after, size + 1)
                total = runs.count_runs(conn, entity, project, run_filter) if with_total else None
            except DBAPIError as error:
                if run_filter.name_regex is None and run_filter.run_id_regex is None:
                    raise
                # PostgreSQL's regular expressions are POSIX ones; a pattern Python takes
                # may still be refused there.
                raise InvalidArgument(
                    f"the database refused the $regex: {error.orig}".strip()
                ) from None
            shown = found[:size]
            links = runs.forked_from_of(conn, [r["run_uuid"] for r in shown])
            records = [
                _from_row(
                    RunRecord,
                    r,
                    forked_from=_listed_fork(conn, r, links.get(r["run_uuid"])),
                    immutable_id=version_id(r["run_uuid"], r["version"]),
                    archived=False,
                )
                for r in shown
            ]
            summaries = None
            if with_summaries:
                by_uuid = summary.read_current_summaries(
                    conn, {r.run_uuid: r.version for r in records}
                )
                summaries = {r.run_id: by_uuid[r.run_uuid] for r in records}
        column, _descending = ORDERS[order]  # the cursor holds the last run's position in it
        next_cursor = encode_cursor(shown[-1][column], key) if len(found) > size else None
        return RunsPage(records, next_cursor, total, summaries)

    def runs(
        self,
        entity: str,
        project: str,
        min_position: int | None = None,
        *,
        run_filter: RunFilter | None = None,
        order: str | None = None,
    ) -> list[RunRecord]:
        """Every run of `runs_page`, page by page."""
        found: list[RunRecord] = []
        cursor = None
        while True:
            page = self.runs_page(
                entity,
                project,
                run_filter=run_filter,
                order=order,
                page_size=MAX_PAGE_SIZE,
                cursor=cursor,
                min_position=min_position,
            )
            found.extend(page.runs)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    def projects(self, entity: str | None, min_position: int | None = None) -> list[ProjectRecord]:
        """The projects holding runs, of `entity` or (None) of every entity."""
        with self._reading(min_position) as conn:
            return [_from_row(ProjectRecord, row) for row in runs.list_projects(conn, entity)]

    def scan_history(
        self,
        path: RunPath,
        keys: Sequence[str] | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
        own_only: bool = False,
        version: int | None = None,
        min_position: int | None = None,
        as_json: bool = False,
    ) -> Iterator[Any]:
        """Visible rows in step order; a fork's inherited rows first unless `own_only`.
        Each a dict, or with `as_json` its JSON text."""
        min_step, max_step = check_step_range(min_step, max_step)
        with self._reading(min_position) as conn:
            segment = self._segment(conn, path, version)
            yield from history.read_rows(
                conn, segment, keys, min_step, max_step, own_only, as_json=as_json
            )

    def history(self, path: RunPath, **options: Any) -> list[dict[str, Any]]:
        return list(self.scan_history(path, **options))

    def scan_series(
        self,
        path: RunPath,
        keys: Sequence[str] | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
        own_only: bool = False,
        version: int | None = None,
        min_position: int | None = None,
    ) -> Iterator[SeriesPage]:
        """The rows of `scan_history` key by key, in pages of packed series."""
        min_step, max_step = check_step_range(min_step, max_step)
        with self._reading(min_position) as conn:
            segment = self._segment(conn, path, version)
            yield from history.read_series(conn, segment, keys, min_step, max_step, own_only)

    def series_of_runs(
        self, paths: Sequence[RunPath], keys: Sequence[str], min_position: int | None = None
    ) -> dict[RunPath, list[SeriesPage]]:
        """The series of `keys` of each run's current version, as `scan_series` pages, read
        in one read transaction (a page of runs' sparklines)."""
        with self._reading(min_position) as conn:
            # A run has a segment from its creation on: none, no such run.
            current = history.current_segments(conn, [p.aggregate_id for p in paths])
            found = {}
            for path in paths:
                segment = current.get(str(path.aggregate_id))
                if segment is None:
                    raise NotFound(f"run {path} does not exist")
                found[path] = list(history.read_series(conn, segment, keys))
            return found

    def summary(
        self, path: RunPath, version: int | None = None, min_position: int | None = None
    ) -> dict[str, Any]:
        with self._reading(min_position) as conn:
            return summary.read_summary(conn, self._segment(conn, path, version))

    def config(
        self, path: RunPath, version: int | None = None, min_position: int | None = None
    ) -> dict[str, Any]:
        with self._reading(min_position) as conn:
            runs.find_run(conn, path)
            return runs.read_config(conn, path.aggregate_id, version)

    def versions(self, path: RunPath, min_position: int | None = None) -> list[VersionRecord]:
        """Every version of the run, oldest first, each with its summary and config as they
        were; all but the last are archived."""
        with self._reading(min_position) as conn:
            run_uuid = runs.find_run(conn, path)["run_uuid"]
            result = []
            for row in archive.list_versions(conn, run_uuid):
                segment = history.segment_of(conn, run_uuid, row["version"])
                result.append(
                    _from_row(
                        VersionRecord,
                        row,
                        archived=row["archived_at"] is not None,
                        rows=summary.visible_row_count(conn, segment),
                        summary=summary.read_summary(conn, segment),
                        config=runs.read_config(conn, run_uuid, row["version"]),
                    )
                )
            return result

    def artifacts(
        self, path: RunPath, version: int | None = None, min_position: int | None = None
    ) -> list[ArtifactRecord]:
        with self._reading(min_position) as conn:
            run_uuid = runs.find_run(conn, path)["run_uuid"]
            return [
                _from_row(ArtifactRecord, row)
                for row in artifacts.list_artifacts(conn, run_uuid, version)
            ]

    def lineage(self, path: RunPath, min_position: int | None = None) -> LineageRecord:
        """Ancestors up to the root, the versions, and the tree of descendants (forks of
        the run and of its archived versions)."""
        with self._reading(min_position) as conn:
            record = runs.find_run(conn, path)
            ancestors = []
            run_uuid, version = record["run_uuid"], record["version"]
            edge = lineage.fork_edge(conn, run_uuid)
            while edge is not None:
                source = runs.run_by_uuid(conn, edge["source_uuid"])
                ancestors.append(
                    Ancestor(
                        run=source["path"],
                        version=edge["source_version"],
                        step=_standing_step(conn, edge, version),
                        immutable_id=version_id(edge["source_uuid"], edge["source_version"]),
                    )
                )
                run_uuid, version = edge["source_uuid"], edge["source_version"]
                edge = lineage.fork_edge(conn, run_uuid)
            return LineageRecord(
                run=record["path"],
                version=record["version"],
                immutable_id=version_id(record["run_uuid"], record["version"]),
                ancestors=ancestors,
                versions=[
                    _from_row(LineageVersion, v, archived=v["archived_at"] is not None)
                    for v in archive.list_versions(conn, record["run_uuid"])
                ],
                descendants=_descendants(conn, record["run_uuid"]),
            )

    @staticmethod
    def _segment(conn: Connection, path: RunPath, version: int | None) -> Segment:
        runs.find_run(conn, path)
        return history.segment_of(conn, path.aggregate_id, version)

    # ---- the event log: audit and as-of -----------------------------------------------

    def scan_events(
        self,
        start: int = 0,
        path: RunPath | None = None,
        *,
        limit: int | None = None,
        types: Collection[str] | None = None,
    ) -> Iterator[EventRecord]:
        """Events with position > `start`, in order, read from the store as they are
        asked for; of one run if `path` is given, of the event `types` if given."""
        wanted = None if path is None else {path.aggregate_id}
        for position, event in read_events(
            self.store, start, limit=limit, runs=wanted, types=types
        ):
            yield describe_event(position, event)

    def events(
        self,
        start: int = 0,
        path: RunPath | None = None,
        limit: int = 1000,
        types: Collection[str] | None = None,
    ) -> list[EventRecord]:
        """At most `limit` events of `scan_events`."""
        return list(self.scan_events(start, path, limit=limit, types=types))

    def as_of(self, path: RunPath, position: int | None = None, at: float | None = None) -> AsOf:
        """The run as it stood at an event position or a time (seconds since the epoch)."""
        if (position is None) == (at is None):
            raise InvalidArgument("give exactly one of a position and a time for an as-of query")
        self._check_as_of_point(path, position, at)
        return AsOf(replay_until(self.store, self._lineage_uuids(path), position, at), path)

    def _check_as_of_point(self, path: RunPath, position: int | None, at: float | None) -> None:
        """A point past the end of the log, or before the run was created, is OUT_OF_RANGE,
        saying where the log ends or when the run began."""
        record = self.run(path)  # NotFound for a run that does not exist now
        if position is not None:
            last = self.store.last_position()
            if position > last:
                raise OutOfRange(
                    f"position {position} is past the end of the event log: the last "
                    f"position is {last}"
                )
            if position < record.created_position:
                raise OutOfRange(
                    f"run {path} did not exist yet at position {position}: it was created "
                    f"at position {record.created_position}"
                )
        if at is not None and at < record.created_at:
            raise OutOfRange(
                f"run {path} did not exist yet at {_utc(at)}: it was created at "
                f"{_utc(record.created_at)} (position {record.created_position})"
            )

    def _lineage_uuids(self, path: RunPath) -> set[UUID]:
        uuids = {path.aggregate_id}
        run = self._get(path)
        while run.forked_from is not None:
            source = UUID(run.forked_from["run_uuid"])
            uuids.add(source)
            run = self.store.repository.get(source, version=1)
        return uuids

    # ---- maintenance -------------------------------------------------------------------

    def rebuild(self, progress: Callable[[Progress], None] | None = None) -> int:
        return self.runner.rebuild(progress)

    def checksums(self) -> dict[str, str]:
        """Checksums of the read models once they include every event in the log."""
        self.runner.wait_for(self.store.last_position())
        return self.runner.checksums()


@dataclass
class AsOf:
    """Read models rebuilt in memory from the events up to a point, for one run's lineage."""

    db: Database
    path: RunPath

    def history(self, **options: Any) -> list[dict[str, Any]]:
        check_step_range(options.get("min_step"), options.get("max_step"))
        with self.db.read() as conn:
            segment = RunService._segment(conn, self.path, options.pop("version", None))
            return list(history.read_rows(conn, segment, **options))

    def summary(self) -> dict[str, Any]:
        with self.db.read() as conn:
            return summary.read_summary(conn, RunService._segment(conn, self.path, None))

    def config(self) -> dict[str, Any]:
        with self.db.read() as conn:
            runs.find_run(conn, self.path)
            return runs.read_config(conn, self.path.aggregate_id)


def _run_record(conn: Connection, row: dict[str, Any], version: int | None = None) -> RunRecord:
    """The run's record, of its live version or of `version` (as it was archived)."""
    archived = version is not None and version != row["version"]
    if archived:
        found = [v for v in archive.list_versions(conn, row["run_uuid"]) if v["version"] == version]
        if not found:
            raise NotFound(
                f"run {row['path']} has no version {version}: its versions are 1..{row['version']}"
            )
        shown = found[0]
        row = {
            **row,
            "version": version,
            "state": shown["state"],
            "last_step": shown["last_step"],
            "updated_at": shown["archived_at"],
        }
    edge = lineage.fork_edge(conn, row["run_uuid"])
    forked_from = None
    if edge is not None:
        source = runs.run_by_uuid(conn, edge["source_uuid"])
        forked_from = ForkedFrom(
            run=source["path"],
            step=_standing_step(conn, edge, row["version"]),
            version=edge["source_version"],
            immutable_id=version_id(edge["source_uuid"], edge["source_version"]),
        )
    return _from_row(
        RunRecord,
        row,
        forked_from=forked_from,
        immutable_id=version_id(row["run_uuid"], row["version"]),
        archived=archived,
    )


def _listed_fork(
    conn: Connection, row: Mapping[str, Any], link: Mapping[str, Any] | None
) -> ForkedFrom | None:
    """A listed run's "forked from", from its page's fork links (`forked_from_of`)."""
    if link is None:
        return None
    edge = {"run_uuid": row["run_uuid"], "source_step": link["step"]}
    return ForkedFrom(
        run=link["run"],
        step=_standing_step(conn, edge, row["version"]),
        version=link["version"],
        immutable_id=version_id(link["source_uuid"], link["version"]),
    )


def _standing_step(conn: Connection, edge: Mapping[str, Any], version: int) -> int:
    """The step of its source that `version` of a fork stands on: the fork step, or lower
    where a rewind of an earlier version went below it (the rows above are no longer seen)."""
    step: int = edge["source_step"]
    if version > 1:
        for earlier in archive.list_versions(conn, edge["run_uuid"])[: version - 1]:
            if earlier["rewound_to_step"] is not None:
                step = min(step, earlier["rewound_to_step"])
    return step


def _from_row(record: type[R], row: Mapping[str, Any], **derived: Any) -> R:
    """A record of the read model row's columns of the same names, and the fields derived."""
    columns = {f.name: row[f.name] for f in fields(record) if f.name not in derived}
    return record(**columns, **derived)


def _descendants(conn: Connection, run_uuid: str) -> list[Descendant]:
    found = []
    for edge in lineage.forks_of(conn, run_uuid):
        fork = runs.run_by_uuid(conn, edge["run_uuid"])
        found.append(
            Descendant(
                run=fork["path"],
                source_version=edge["source_version"],
                step=_standing_step(conn, edge, fork["version"]),
                descendants=_descendants(conn, edge["run_uuid"]),
            )
        )
    return found


def _session(run: Run, position: int, resumed: bool = False) -> Session:
    return Session(
        path=run.path,
        writer=run.writer,
        version=run.run_version,
        next_step=run.next_step,
        position=position,
        config=dict(run.config),
        forked_from=_forked_from(run.forked_from),
        immutable_id=run.immutable_id,
        name=run.name,
        tags=list(run.tags),
        notes=run.notes,
        group=run.group,
        job_type=run.job_type,
        resumed=resumed,
    )


def _forked_from(link: Mapping[str, Any] | None) -> ForkedFrom | None:
    if link is None:
        return None
    return ForkedFrom(
        run=link["run"],
        step=link["step"],
        version=link["version"],
        immutable_id=version_id(link["run_uuid"], link["version"]),
    )


def _utc(seconds: float) -> str:
    """A time for messages: ISO-8601 in UTC, to the millisecond, as the times given are."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _new_writer() -> str:
    return uuid.uuid4().hex


def _now(started_at: float | None) -> float:
    return time.time() if started_at is None else float(started_at)
