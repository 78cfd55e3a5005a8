"""The event-sourced application: the event store of Run aggregates, chosen by URL.

It is also the projections' `EventSource`: the log of every event, read by position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.application import Application, ProcessingEvent

from runhistory.domain.run import Run


def event_store_env(db_url: str) -> dict[str, str]:
    """The `eventsourcing` persistence settings for a database URL.

    A SQLite file uses the library's own SQLite module (it raises on every failed commit
    and is the fastest here); `sqlite://` keeps events in memory; any other SQLAlchemy URL
    goes through `eventsourcing_sqlalchemy`.
    """
    if db_url == "sqlite://":
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    if db_url.startswith("sqlite:///"):
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": db_url.removeprefix("sqlite:///"),
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    return {"PERSISTENCE_MODULE": "eventsourcing_sqlalchemy", "SQLALCHEMY_URL": db_url}


class RunEvents(Application):
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
            saved = [
                e.originator_version
                for e in processing_event.events
                if e.originator_id == aggregate.id
            ]
            if saved and max(saved) // every > (min(saved) - 1) // every:
                self.snapshots.put([type(aggregate).Snapshot.take(aggregate)])

    def read(self, after: int, limit: int) -> Sequence[tuple[int, Run.Event]]:
        notifications = self.recorder.select_notifications(
            start=after, limit=limit, inclusive_of_start=False
        )
        to_event = self.mapper.to_domain_event
        return [(n.id, to_event(n)) for n in notifications]

    def last_position(self) -> int:
        return self.recorder.max_notification_id() or 0
