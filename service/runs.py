"""The run service: commands (get, decide, save) and queries over the read models.

Every command returns the position of the last event it wrote. Queries first wait until
the read models include the latest position this service wrote (read your writes), or a
position the caller names.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from runhistory.domain.errors import Aborted, AlreadyExists, InvalidArgument, NotFound
from runhistory.domain.identity import BranchPoint, RunPath, check_name, generate_run_id
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
from runhistory.domain.run import LogOutcome, Run
from runhistory.domain.values import LogCall, flatten, same_value
from runhistory.projections import archive, artifacts, history, lineage, runs, summary
from runhistory.projections.database import Database
from runhistory.projections.runner import Progress, ProjectionRunner
from runhistory.service.application import RunEvents, event_store_env
from runhistory.service.events import describe_event, read_events, replay_until
from runhistory.service.records import (
    Ancestor,
    ArtifactRecord,
    Descendant,
    EventRecord,
    ForkedFrom,
    LineageRecord,
    LineageVersion,
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


@dataclass(frozen=True, slots=True)
class Ack:
    position: int
    applied: bool = True  # False: a retried request that was applied before


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
    ) -> None:
        """`background`: apply new events to the read models in a thread of this process.
        `projections=False`: never apply them here; a worker process does."""
        self.settings = settings or Settings()
        self.limits = self.settings.limits
        url = self.settings.db_url
        self.store = RunEvents(env=event_store_env(url))
        self.db = Database(url)
        self.runner = ProjectionRunner(self.store, self.db, inline=projections)
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
        return _session(run, position)

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
    ) -> Session:
        """`wandb.init` semantics: create, plain resume, rewind (`resume_from`) or fork."""
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
        if resume_from:
            branch = BranchPoint.parse(resume_from, entity, project)
            if run_id is not None and run_id != branch.run.run_id:
                raise InvalidArgument(
                    f"resume_from names run {branch.run.run_id} but id is {run_id}: a rewind keeps "
                    "the run's ID, so leave id empty or make it match"
                )
            return self.rewind(branch, config=config, started_at=started_at)
        if fork_from:
            branch = BranchPoint.parse(fork_from, entity, project)
            path = RunPath(entity, project, run_id or generate_run_id())
            return self.fork(
                branch, path, name=name, tags=tags, config=config, started_at=started_at
            )
        if resume in (None, False, "never"):
            path = RunPath(entity, project, run_id or generate_run_id())
            return self.create(path, name=name, tags=tags, config=config, started_at=started_at)
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
            return self.resume(path, config=config, started_at=started_at)
        except NotFound:
            if resume == "must":
                raise NotFound(
                    f"run {path} does not exist, and resume='must' needs an existing run; "
                    "use resume='allow' to create it"
                ) from None
        return self.create(path, name=name, tags=tags, config=config, started_at=started_at)

    def create(
        self,
        path: RunPath,
        *,
        name: str | None = None,
        tags: Sequence[str] = (),
        config: Mapping[str, object] | None = None,
        started_at: float | None = None,
        writer: str | None = None,
    ) -> Session:
        """A new run. `writer` names the session (generated when None)."""
        writer = writer or _new_writer()
        run = Run.start(path, writer, _now(started_at), name=name, tags=tags, config=config)
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
    ) -> Session:
        writer = writer or _new_writer()
        return self._new_session(path, lambda run: run.resume(writer, _now(started_at), config))

    def rewind(
        self,
        branch: BranchPoint,
        *,
        config: Mapping[str, object] | None = None,
        started_at: float | None = None,
        writer: str | None = None,
    ) -> Session:
        writer = writer or _new_writer()
        return self._new_session(
            branch.run, lambda run: run.rewind(branch.step, writer, _now(started_at), config)
        )

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
    ) -> Session:
        source = self._get(branch.run)
        run = Run.fork(
            source,
            branch.step,
            path,
            writer or _new_writer(),
            _now(started_at),
            name=name,
            tags=tags,
            config=config,
        )
        with self._lock(path.aggregate_id):
            try:
                position = self._save(run)
            except IntegrityError:
                raise AlreadyExists(
                    f"run {path} already exists; a fork needs a new run ID (leave it empty to "
                    "generate one)"
                ) from None
        return _session(run, position)

    # ---- writing to a run --------------------------------------------------------------

    def log(
        self,
        path: RunPath,
        calls: Sequence[LogCall],
        *,
        writer: str | None = None,
        seq: int | None = None,
    ) -> LogAck:
        outcome: LogOutcome
        outcome, position = self._change(
            path, lambda run: run.log(calls, writer=writer, seq=seq, limits=self.limits)
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
        self, path: RunPath, first_line: int, calls: Sequence[LogCall], *, writer: str
    ) -> LogAck:
        """Rows numbered by line (see `Run.log_lines`), in batches of at most
        `max_calls_per_batch`; lines applied before are acknowledged, not applied again."""
        size = self.limits.max_calls_per_batch
        ack = LogAck(position=self._written, applied=False)
        for start in range(0, len(calls), size):
            outcome: LogOutcome
            outcome, position = self._change(
                path,
                lambda run, start=start: run.log_lines(
                    first_line + start, calls[start : start + size], writer, self.limits
                ),
            )
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

    def heartbeat(self, path: RunPath, *, writer: str | None = None) -> None:
        """The writer of `path` is alive. TODO(issue 14): record it, so that a run whose
        writer falls silent is marked crashed after the server's crash timeout."""

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
        self.runner.wait_for(self._written if min_position is None else min_position)
        with self.db.read() as conn:
            yield conn

    def run(self, path: RunPath, min_position: int | None = None) -> RunRecord:
        """The run's overview, with its "forked from" link."""
        with self._reading(min_position) as conn:
            return _run_record(conn, runs.find_run(conn, path))

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
                _from_row(RunRecord, r, forked_from=_forked_from(links.get(r["run_uuid"])))
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
    ) -> Iterator[history.SeriesPage]:
        """The rows of `scan_history` key by key, in pages of packed series."""
        with self._reading(min_position) as conn:
            segment = self._segment(conn, path, version)
            yield from history.read_series(conn, segment, keys, min_step, max_step, own_only)

    def series_of_runs(
        self, paths: Sequence[RunPath], keys: Sequence[str], min_position: int | None = None
    ) -> dict[RunPath, list[history.SeriesPage]]:
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
            edge = lineage.fork_edge(conn, record["run_uuid"])
            while edge is not None:
                source = runs.run_by_uuid(conn, edge["source_uuid"])
                ancestors.append(
                    Ancestor(
                        run=source["path"],
                        version=edge["source_version"],
                        step=edge["source_step"],
                    )
                )
                edge = lineage.fork_edge(conn, edge["source_uuid"])
            return LineageRecord(
                run=record["path"],
                version=record["version"],
                ancestors=ancestors,
                versions=[
                    _from_row(LineageVersion, v, archived=v["archived_at"] is not None)
                    for v in archive.list_versions(conn, record["run_uuid"])
                ],
                descendants=_descendants(conn, record["run_uuid"]),
            )

    @staticmethod
    def _segment(conn: Connection, path: RunPath, version: int | None) -> history.Segment:
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
        return AsOf(replay_until(self.store, self._lineage_uuids(path), position, at), path)

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


def _run_record(conn: Connection, row: dict[str, Any]) -> RunRecord:
    edge = lineage.fork_edge(conn, row["run_uuid"])
    forked_from = None
    if edge is not None:
        source = runs.run_by_uuid(conn, edge["source_uuid"])
        forked_from = ForkedFrom(
            run=source["path"], step=edge["source_step"], version=edge["source_version"]
        )
    return _from_row(RunRecord, row, forked_from=forked_from)


def _from_row(record: type[R], row: Mapping[str, Any], **derived: Any) -> R:
    """A record of the read model row's columns of the same names, and the fields derived."""
    columns = {f.name: row[f.name] for f in fields(record) if f.name not in derived}
    return record(**columns, **derived)


def _descendants(conn: Connection, run_uuid: str) -> list[Descendant]:
    return [
        Descendant(
            run=runs.run_by_uuid(conn, edge["run_uuid"])["path"],
            source_version=edge["source_version"],
            step=edge["source_step"],
            descendants=_descendants(conn, edge["run_uuid"]),
        )
        for edge in lineage.forks_of(conn, run_uuid)
    ]


def _session(run: Run, position: int) -> Session:
    return Session(
        path=run.path,
        writer=run.writer,
        version=run.run_version,
        next_step=run.next_step,
        position=position,
        config=dict(run.config),
        forked_from=_forked_from(run.forked_from),
    )


def _forked_from(link: Mapping[str, Any] | None) -> ForkedFrom | None:
    if link is None:
        return None
    return ForkedFrom(run=link["run"], step=link["step"], version=link["version"])


def _new_writer() -> str:
    return uuid.uuid4().hex


def _now(started_at: float | None) -> float:
    return time.time() if started_at is None else float(started_at)
