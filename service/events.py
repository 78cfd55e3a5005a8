"""The event log: read by position, with filters, and replayed in part for as-of queries.

`read_events` is the one way the service layer pages through the log: the audit queries,
the gRPC event stream, the web UI's audit page and the as-of replay all read through it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from itertools import islice
from typing import cast
from uuid import UUID

from runhistory.domain.errors import InvalidArgument
from runhistory.domain.run import Run
from runhistory.projections.database import Database
from runhistory.projections.runner import ProjectionRunner
from runhistory.service.application import RunEvents
from runhistory.service.records import EventRecord

PAGE_SIZE = 500  # notifications fetched from the store at a time


def read_events(
    store: RunEvents,
    after: int = 0,
    *,
    limit: int | None = None,
    runs: Collection[UUID] | None = None,
    types: Collection[str] | None = None,
    stop: int | None = None,
) -> Iterator[tuple[int, Run.Event]]:
    """Events with position > `after` (and <= `stop`), in order, with their positions: at
    most `limit`, of the given runs and event types (class names) only. The store is read
    a page at a time, as the caller asks for more."""
    if limit is not None and limit <= 0:
        return
    found = 0
    while stop is None or after < stop:
        page = store.recorder.select_notifications(
            start=after, limit=PAGE_SIZE, stop=stop, inclusive_of_start=False
        )
        if not page:
            return
        for notification in page:
            if runs is not None and notification.originator_id not in runs:
                continue
            event = cast(Run.Event, store.mapper.to_domain_event(notification))
            if types is not None and type(event).__name__ not in types:
                continue
            yield notification.id, event
            found += 1
            if found == limit:
                return
        after = page[-1].id


def describe_event(position: int, event: Run.Event) -> EventRecord:
    payload = {
        key: value
        for key, value in vars(event).items()
        if key not in ("originator_id", "originator_version", "timestamp", "originator_topic")
    }
    return EventRecord(
        position=position,
        run_uuid=str(event.originator_id),
        run_event=event.originator_version,
        type=type(event).__name__,
        timestamp=event.timestamp.timestamp(),
        payload=payload,
    )


# ---- as of a point: the read models of some runs rebuilt in memory --------------------------


class _EventsUntil:
    """The events of the given runs up to a position or a time, as the projection runner's
    EventSource."""

    def __init__(
        self, store: RunEvents, uuids: set[UUID], position: int | None, at: float | None
    ) -> None:
        self.store = store
        self.uuids = uuids
        self.stop = store.last_position() if position is None else position
        self.at = at

    def read(self, after: int, limit: int) -> Sequence[tuple[int, Run.Event]]:
        events = read_events(self.store, after, runs=self.uuids, stop=self.stop)
        if self.at is not None:
            at = self.at
            events = (item for item in events if item[1].timestamp.timestamp() <= at)
        return list(islice(events, limit))

    def last_position(self) -> int:
        return self.stop


def replay_until(
    store: RunEvents, uuids: set[UUID], position: int | None, at: float | None
) -> Database:
    """The read models of the runs `uuids` as of event `position` or time `at`, built in
    memory by the same projections that build the live ones."""
    if position is not None and position < 0:
        raise InvalidArgument(f"invalid position {position}: positions are integers >= 0")
    db = Database("sqlite://")
    ProjectionRunner(_EventsUntil(store, uuids, position, at), db).catch_up()
    return db
