"""Drives the projections from the event log: a catch-up loop that works on every backend.

Each page of events is applied in one database transaction together with the new tracking
positions, so an event is applied exactly once and a crash anywhere leaves the read models
at a page boundary, from which the next catch-up resumes. Positions are locked while a page
is applied (BEGIN IMMEDIATE on SQLite, SELECT ... FOR UPDATE elsewhere), so several
processes may run catch-ups against one database without applying an event twice.

`catch_up` is driven by polling: by a reader waiting for its position (`wait_for`), by a
thread of the server (`start`), or by a worker process (`runhistory project`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError

from runhistory.domain.errors import DeadlineExceeded, OutOfRange
from runhistory.domain.run import Run
from runhistory.projections.archive import ArchiveProjection
from runhistory.projections.artifacts import ArtifactsProjection
from runhistory.projections.base import Projection
from runhistory.projections.database import Database
from runhistory.projections.history import HistoryProjection
from runhistory.projections.lineage import LineageProjection
from runhistory.projections.runs import ConfigProjection, RunsProjection
from runhistory.projections.schema import metadata, tracking
from runhistory.projections.summary import SummaryProjection

log = logging.getLogger(__name__)

# The runner applies each event to the projections in this order, each after those it
# depends on (`in_dependency_order`): it reads what they wrote for the same event.
ALL_PROJECTIONS: tuple[type[Projection], ...] = (
    HistoryProjection,
    SummaryProjection,
    RunsProjection,
    ConfigProjection,
    ArchiveProjection,
    LineageProjection,
    ArtifactsProjection,
)


def in_dependency_order(projections: Sequence[type[Projection]]) -> list[type[Projection]]:
    """The projections, each after those it depends on and otherwise in the order given.
    Refuses a set without a projection another depends on, and a cycle."""
    by_name = {p.name: p for p in projections}
    for p in projections:
        for name in p.depends_on:
            if name not in by_name:
                raise ValueError(
                    f"the {p.name} projection reads the {name} projection's tables: "
                    f"run them together (given: {', '.join(by_name)})"
                )
    ordered: list[type[Projection]] = []
    placed: set[str] = set()
    while len(ordered) < len(projections):
        ready = [p for p in projections if p.name not in placed and placed.issuperset(p.depends_on)]
        if not ready:
            cycle = sorted(p.name for p in projections if p.name not in placed)
            raise ValueError(f"the projections {', '.join(cycle)} depend on each other")
        ordered.append(ready[0])
        placed.add(ready[0].name)
    return ordered


def connected(projections: Sequence[type[Projection]], names: Collection[str]) -> set[str]:
    """`names` and every projection joined to them through `depends_on` in either direction
    (what they read and what reads them), transitively: what must replay together.

    A projection replayed alone would read the others' tables as they stand at the end of
    the log instead of as they stood at each event, and one that reads a replayed
    projection holds rows derived from what that projection's earlier revision wrote."""
    neighbours: dict[str, set[str]] = {p.name: set() for p in projections}
    for p in projections:
        for name in p.depends_on:
            neighbours[p.name].add(name)
            neighbours[name].add(p.name)
    found = set(names)
    todo = list(names)
    while todo:
        for name in neighbours[todo.pop()] - found:
            found.add(name)
            todo.append(name)
    return found


class EventSource(Protocol):
    """The event log, read in order of position."""

    def read(self, after: int, limit: int) -> Sequence[tuple[int, Run.Event]]: ...

    def last_position(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Progress:
    applied: int  # events applied so far by this call
    position: int  # the position the read models have reached
    target: int  # the last position in the log when the call started


# History values per page (one transaction). On SQLite the file has one writer, so event
# store inserts wait for the page: about 50 ms of work. Elsewhere a page delays no writer,
# and a larger one costs fewer transactions: 50 batches of 1,000 rows of 10 keys.
SQLITE_PAGE_POINTS = 50_000
PAGE_POINTS = 500_000


def _cut(
    events: Sequence[tuple[int, Run.Event]], limit: int, points: int
) -> tuple[list[tuple[int, Run.Event]], list[tuple[int, Run.Event]]]:
    """The next page of `events` (at most `limit` events, and `points` history values unless
    its first event alone holds more) and the events after it."""
    size = 0
    for count, (_position, event) in enumerate(events[:limit]):
        size += _points(event)
        if count and size > points:
            return list(events[:count]), list(events[count:])
    return list(events[:limit]), list(events[limit:])


def _points(event: Run.Event) -> int:
    """The history values an event carries (rows x keys), and 1 for the event itself."""
    rows = getattr(event, "rows", None) or ()
    return 1 + sum(len(row[3]) for row in rows)


class ProjectionRunner:
    def __init__(
        self,
        source: EventSource,
        db: Database,
        projections: Sequence[type[Projection]] = ALL_PROJECTIONS,
        page_size: int = 50,
        inline: bool = True,
        page_points: int | None = None,
    ) -> None:
        """`inline`: readers waiting for a position apply the events themselves. Without it
        they only wait, for a worker process (`runhistory project`) to apply them.

        A page (one transaction) holds at most `page_size` events and, beyond its first
        event, at most `page_points` history values (default: `SQLITE_PAGE_POINTS` on
        SQLite, where every writer waits while a page is applied, else `PAGE_POINTS`)."""
        self.source = source
        self.inline = inline
        self.db = db
        self.projections = [cls() for cls in in_dependency_order(projections)]
        self.page_size = page_size
        self.page_points = page_points or (SQLITE_PAGE_POINTS if db.is_sqlite else PAGE_POINTS)
        self._lock = threading.RLock()
        self._applied = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ensure_tracking_rows()

    def _ensure_tracking_rows(self) -> None:
        """A projection without a tracking row starts from the beginning of the log: it is
        new, or its revision is, and its tables (if an earlier revision made them) are
        made anew. So do the projections connected to it through `depends_on`; the others
        keep their positions."""
        try:
            self._start_missing_projections()
        except IntegrityError:
            # Another process started them first (PostgreSQL: its tracking rows are in;
            # this transaction, tables dropped and made again included, rolled back).
            self._start_missing_projections()

    def _start_missing_projections(self) -> None:
        with self.db.write() as conn:
            known = set(conn.execute(select(tracking.c.projection)).scalars())
            missing = {p.name for p in self.projections if p.tracking_key() not in known}
            if not missing:
                return
            names = connected([type(p) for p in self.projections], missing)
            replayed = [p for p in self.projections if p.name in names]
            for p in replayed:
                if p.name in missing:
                    log.info(
                        "the %s read model is new at revision %d: replaying the log",
                        p.name,
                        p.revision,
                    )
                else:
                    log.info(
                        "the %s read model replays the log too: it is connected to %s",
                        p.name,
                        ", ".join(sorted(missing)),
                    )
            tables = [table for p in replayed for table in p.tables]
            metadata.drop_all(conn, tables=tables)
            metadata.create_all(conn, tables=tables)
            earlier = [k for k in known if k.partition("@")[0] in names]
            conn.execute(delete(tracking).where(tracking.c.projection.in_(earlier)))
            # Another process starting the same projections first makes this insert fail
            # (IntegrityError), which rolls all of this back.
            conn.execute(
                tracking.insert(),
                [{"projection": p.tracking_key(), "position": 0} for p in replayed],
            )

    # ---- applying events ---------------------------------------------------------------

    def position(self) -> int:
        """The position every projection has applied, as the database says now."""
        with self.db.read() as conn:
            self._applied = min(self._positions(conn).values())
        return self._applied

    def _positions(self, conn: Connection, lock: bool = False) -> dict[str, int]:
        query = select(tracking.c.projection, tracking.c.position).where(
            tracking.c.projection.in_([p.tracking_key() for p in self.projections])
        )
        if lock and not self.db.is_sqlite:
            query = query.with_for_update()
        return dict(conn.execute(query).tuples().all())

    def catch_up(
        self,
        progress: Callable[[Progress], None] | None = None,
        max_events: int | None = None,
    ) -> int:
        """Apply every event not yet applied; returns how many were applied.

        Each page is read from the event log before its write transaction begins: reading
        the log inside it would wait for the event store's connections while holding the
        read models' write lock, which the event store's writers wait for in turn."""
        with self._lock:
            target = self.source.last_position()
            applied = 0
            start = self.position()
            ahead: list[tuple[int, Run.Event]] = []  # read past the last page, in order
            while max_events is None or applied < max_events:
                limit = (
                    self.page_size
                    if max_events is None
                    else min(self.page_size, max_events - applied)
                )
                events = ahead or list(self.source.read(after=start, limit=limit))
                page, ahead = _cut(events, limit, self.page_points)
                if not page:
                    self._applied = start
                    break
                with self.db.write() as conn:
                    positions = self._positions(conn, lock=True)
                    if min(positions.values()) != start:
                        # Another process applied events since, or a new revision of a
                        # projection starts over: read on from where the positions are.
                        start, ahead = min(positions.values()), []
                        continue
                    for position, event in page:
                        for projection in self.projections:
                            if position > positions[projection.tracking_key()]:
                                projection.process(conn, event, position)
                    last = page[-1][0]
                    conn.execute(
                        update(tracking)
                        .where(tracking.c.projection.in_(list(positions)))
                        .where(tracking.c.position < last)
                        .values(position=last)
                    )
                applied += len(page)
                self._applied = start = last
                if progress is not None:
                    progress(Progress(applied, last, max(target, last)))
            return applied

    def wait_for(self, position: int, timeout: float = 30.0) -> None:
        """Return once the read models include `position` (read your writes)."""
        if position <= self._applied:
            return
        last = self.source.last_position()
        if position > last:
            # No write was ever acknowledged there: waiting could only time out.
            raise OutOfRange(
                f"position {position} is beyond the last event ({last}): wait only for "
                "positions that writes were acknowledged at"
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.inline:
                self.catch_up()
            if self._applied >= position or self.position() >= position:
                return
            if time.monotonic() > deadline:
                raise DeadlineExceeded(
                    f"the read models did not reach position {position} within {timeout:g} s "
                    f"(they are at {self._applied})"
                )
            time.sleep(0.01)

    # ---- in the background -------------------------------------------------------------

    def run_until(self, stop: threading.Event, interval: float = 0.05) -> None:
        """Catch up again and again until `stop` is set; errors are logged and retried."""
        backoff = interval
        while not stop.is_set():
            try:
                self.catch_up()
                backoff = interval
            except Exception:
                log.exception("projection catch-up failed; retrying in %.1f s", backoff)
                backoff = min(backoff * 2, 5.0)
            stop.wait(backoff)

    def start(self, interval: float = 0.05) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run_until, args=(self._stop, interval), name="projections", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None

    # ---- rebuild and verification ------------------------------------------------------

    def rebuild(self, progress: Callable[[Progress], None] | None = None) -> int:
        """Drop every read model and replay the whole event log into new ones."""
        with self._lock:
            tables = [t for p in self.projections for t in p.tables] + [tracking]
            metadata.drop_all(self.db.engine, tables=tables)
            metadata.create_all(self.db.engine, tables=tables)
            self._applied = 0
            self._ensure_tracking_rows()
            # Still holding the lock: a background catch-up must not replay in between.
            return self.catch_up(progress)

    def checksums(self) -> dict[str, str]:
        """A digest of each projection's rows, in primary-key order."""
        digests: dict[str, str] = {}
        with self.db.read() as conn:
            for projection in self.projections:
                digest = hashlib.sha256()
                for table in projection.tables:
                    digest.update(table.name.encode())
                    query = select(table).order_by(*table.primary_key.columns)
                    for row in conn.execute(query):
                        digest.update(repr(tuple(row)).encode())
                digests[projection.name] = digest.hexdigest()
        return digests
