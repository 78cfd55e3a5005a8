"""When each run's writer was last heard from, and the sweeper that crashes silent runs.

Heartbeats stay out of the event stream: one event per heartbeat would bloat every run's
stream with nothing a reader wants. Each run keeps one row here instead, in the service's
database, so that every server sharing it sees the heartbeats any of them received. Writes
need no row: each is an event, and the run's last event counts as hearing from its writer.
Only when a run is found silent does its stream get an event (`Run.CrashDetected`).

Every server sweeps (`CrashSweeper`); two that find the same run silent at once both try to
record the crash, and the event store's optimistic concurrency lets only one of them: the
other reloads the run, finds it crashed already and records nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from typing import TYPE_CHECKING
from uuid import UUID

from sqlalchemy import Column, Float, MetaData, String, Table, select, update
from sqlalchemy.exc import IntegrityError

from runhistory.projections.database import Database

if TYPE_CHECKING:
    from runhistory.service.runs import RunService

log = logging.getLogger(__name__)

# Not in the read models' metadata: a rebuild drops and refills those tables, never this.
liveness_metadata = MetaData()
heartbeats = Table(
    "rh_heartbeats",
    liveness_metadata,
    Column("run_uuid", String(36), primary_key=True),
    Column("heard_at", Float, nullable=False),  # seconds since the epoch, the server's clock
)


class Liveness:
    """The last heartbeat of each run's writer, as any server sharing the database got it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        liveness_metadata.create_all(db.engine)

    def heard(self, run_uuid: UUID, at: float) -> None:
        """The run's writer was heard from at `at`."""
        key = str(run_uuid)
        try:
            with self.db.write() as conn:
                changed = conn.execute(
                    update(heartbeats).where(heartbeats.c.run_uuid == key).values(heard_at=at)
                )
                if changed.rowcount == 0:
                    conn.execute(heartbeats.insert().values(run_uuid=key, heard_at=at))
        except IntegrityError:
            # Another server inserted the run's row at the same moment, for a heartbeat of
            # the same writer: its time is as good as this one.
            pass

    def last_heard(self, run_uuids: Collection[UUID]) -> dict[UUID, float]:
        """When each of the runs' writers was last heard from, for those ever heard."""
        if not run_uuids:
            return {}
        keys = [str(u) for u in run_uuids]
        with self.db.read() as conn:
            rows = conn.execute(
                select(heartbeats.c.run_uuid, heartbeats.c.heard_at).where(
                    heartbeats.c.run_uuid.in_(keys)
                )
            )
            return {UUID(run_uuid): at for run_uuid, at in rows}


def sweep_interval(crash_after: float) -> float:
    """How often a server looks for silent runs: a fraction of the timeout, so a crash is
    marked soon after it is due, and at most every 5 s."""
    return min(5.0, max(0.1, crash_after / 4))


class CrashSweeper:
    """A daemon thread of the server that marks silent runs crashed (`RunService.sweep`)
    every few seconds, until `stop`."""

    def __init__(self, service: RunService) -> None:
        self.service = service
        self.interval = sweep_interval(service.settings.crash_after)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="crash-sweeper", daemon=True)

    def start(self) -> CrashSweeper:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join()

    def _run(self) -> None:
        failing = False
        while not self.stopping.wait(self.interval):
            try:
                for path in self.service.sweep(self.stopping.is_set):
                    log.info("runhistory: %s is crashed: its writer fell silent", path)
                failing = False
            except Exception as error:
                # The database may be away for a moment; the next sweep tries again. Said
                # once per spell of failures, the trace at debug level.
                if not failing:
                    log.warning("runhistory: looking for silent runs failed: %s", error)
                log.debug("crash sweep failed", exc_info=True)
                failing = True
