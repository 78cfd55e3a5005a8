"""The event-sourced application: the event store of Run aggregates, chosen by URL.

It is also the projections' `EventSource`: the log of every event, read by position.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Recording, StoredEvent
from eventsourcing.sqlite import (
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
    SQLiteFactory,
)

from runhistory.domain.run import Run
from runhistory.projections.database import write_turn


def event_store_env(db_url: str) -> dict[str, str]:
    """The `eventsourcing` persistence settings for a database URL.

    A SQLite file uses the library's own SQLite module, whose inserts take the file's
    write turn (`TurnTakingSQLiteFactory`); `sqlite://` keeps events in memory; any other
    SQLAlchemy URL goes through `eventsourcing_sqlalchemy`.
    """
    if db_url == "sqlite://":
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    if db_url.startswith("sqlite:///"):
        return {
            "PERSISTENCE_MODULE": f"{__name__}:{TurnTakingSQLiteFactory.__qualname__}",
            "SQLITE_DBNAME": db_url.removeprefix("sqlite:///"),
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    return {"PERSISTENCE_MODULE": "eventsourcing_sqlalchemy", "SQLALCHEMY_URL": db_url}


class _TakesWriteTurn(SQLiteAggregateRecorder):
    """A recorder of eventsourcing's SQLite module that inserts in the file's write turn,
    shared with the read models (`projections.database.WriteTurn`). It waits for its turn
    before it takes the module's single writer connection, so no request holds that
    connection while SQLite makes it wait. (Mixed in before SQLiteApplicationRecorder too,
    whose insert_events its super() then reaches.)"""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with write_turn(self.datastore.pool.db_name).taken():
            return super().insert_events(stored_events, **kwargs)


class _TurnTakingAggregateRecorder(_TakesWriteTurn):
    """The snapshots' recorder."""


class _TurnTakingApplicationRecorder(_TakesWriteTurn, SQLiteApplicationRecorder):
    """The events' recorder."""


class TurnTakingSQLiteFactory(SQLiteFactory):
    """eventsourcing's SQLite module (it raises on every failed commit and is the fastest
    here), whose inserts take the file's write turn."""

    aggregate_recorder_class = _TurnTakingAggregateRecorder
    application_recorder_class = _TurnTakingApplicationRecorder


class RunEvents(Application[UUID]):
    name = "RunHistory"
    is_snapshotting_enabled = True
    snapshot_every = 20  # events; a cold `get` replays at most this many
    env = {"AGGREGATE_CACHE_MAXSIZE": "1000"}

    def _take_snapshots(self, processing_event: ProcessingEvent[Any]) -> None:
        # The aggregate in hand is the state after the events just saved, so snapshot it
        # as it is. The library's default replays the interval's events to rebuild it,
        # and RowsLogged events carry whole batches of rows: that replay made rewinds and
        # forks of long runs slow.
        assert self.snapshots is not None
        every = self.snapshot_every
        for aggregate in processing_event.aggregates.values():
            assert isinstance(aggregate, Run)  # the only aggregate this application saves
            saved = [
                e.originator_version
                for e in processing_event.events
                if e.originator_id == aggregate.id
            ]
            if saved and max(saved) // every > (min(saved) - 1) // every:
                self.snapshots.put([type(aggregate).Snapshot.take(aggregate)])

    recent_events = 64  # saved events kept for this process's projections

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env=env)
        self._recent: OrderedDict[int, Run.Event] = OrderedDict()
        self._recent_lock = threading.Lock()

    def _record(self, processing_event: ProcessingEvent[Any]) -> list[Recording[Any]]:
        recordings = super()._record(processing_event)
        # The state after the save is the aggregate in hand. The library caches it only
        # without fast-forwarding; with it (needed when several processes write), the next
        # `get` would read back and decode the batch of rows just written.
        cache = self.repository.cache
        if cache is not None:
            for aggregate_id, aggregate in processing_event.aggregates.items():
                cache.put(aggregate_id, aggregate)
        with self._recent_lock:
            for recording in recordings:
                self._recent[recording.notification.id] = _run_event(recording.domain_event)
            while len(self._recent) > self.recent_events:
                self._recent.popitem(last=False)
        return recordings

    def read(self, after: int, limit: int) -> Sequence[tuple[int, Run.Event]]:
        """Events after a position, in order. Those this process just saved come from
        memory, as long as they follow `after` without a gap; the rest from the store."""
        with self._recent_lock:
            recent = self._recent
            while recent and next(iter(recent)) <= after:
                recent.popitem(last=False)  # applied already
            found: list[tuple[int, Run.Event]] = []
            position = after + 1
            while len(found) < limit and position in recent:
                found.append((position, recent[position]))
                position += 1
        if found:
            return found
        notifications = self.recorder.select_notifications(
            start=after, limit=limit, inclusive_of_start=False
        )
        to_event = self.mapper.to_domain_event
        return [(n.id, _run_event(to_event(n))) for n in notifications]

    def last_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def close(self) -> None:
        super().close()
        # eventsourcing_sqlalchemy's factory has no close of its own: without this, its
        # engine's pooled connections stay open until the garbage collector finds them.
        engine = getattr(getattr(self.factory, "datastore", None), "engine", None)
        if engine is not None:
            engine.dispose()


def _run_event(event: DomainEventProtocol[UUID]) -> Run.Event:
    # The store holds Run's events only; the library types what it decodes as any event.
    return cast(Run.Event, event)
