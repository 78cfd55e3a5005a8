"""As-of queries: the read models of some runs rebuilt in memory from the events up to a
position or a time, by the same projections that build the live ones."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from runhistory.domain.errors import InvalidArgument
from runhistory.domain.run import Run
from runhistory.projections.database import Database
from runhistory.projections.runner import ProjectionRunner
from runhistory.service.application import RunEvents


class _LineageEvents:
    """The events of the given runs up to a position or a time, as an EventSource."""

    def __init__(
        self, store: RunEvents, uuids: set[UUID], position: int | None, at: float | None
    ) -> None:
        self.store = store
        self.uuids = uuids
        self.stop = store.last_position() if position is None else position
        self.at = at

    def read(self, after: int, limit: int) -> Sequence[tuple[int, Run.Event]]:
        found: list[tuple[int, Run.Event]] = []
        while not found and after < self.stop:
            page = self.store.recorder.select_notifications(
                start=after, limit=500, stop=self.stop, inclusive_of_start=False
            )
            if not page:
                break
            for notification in page:
                if notification.originator_id in self.uuids:
                    event = self.store.mapper.to_domain_event(notification)
                    if self.at is None or event.timestamp.timestamp() <= self.at:
                        found.append((notification.id, event))
            after = page[-1].id
        # The caller reads on after the last position it got, so a cut skips nothing.
        return found[:limit]

    def last_position(self) -> int:
        return self.stop


def replay_until(
    store: RunEvents, uuids: set[UUID], position: int | None, at: float | None
) -> Database:
    if position is not None and position < 0:
        raise InvalidArgument(f"invalid position {position}: positions are integers >= 0")
    db = Database("sqlite://")
    ProjectionRunner(_LineageEvents(store, uuids, position, at), db).catch_up()
    return db
