"""What every projection is: a name, its tables, and one handler per event class."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import Connection, Table

from runhistory.domain.run import Run

Handler = Callable[[Any, Connection, Any, int], None]


class Projection:
    """Subclasses set `name` and `tables` and map event classes to handlers with `on`.

    A handler gets the connection of the runner's transaction, the domain event and the
    event's position in the log. It must derive everything it writes from the event and
    from rows written for earlier events, so replaying the log reproduces it exactly.
    """

    name: ClassVar[str]
    # Raised when what the tables hold changes: a database whose read model was made by an
    # earlier revision has no tracking row for this one, so the runner drops the tables and
    # replays the log into them.
    revision: ClassVar[int] = 1
    tables: ClassVar[tuple[Table, ...]]
    handlers: ClassVar[dict[type, Handler]]
    depends_on: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls.handlers = {}
        for klass in reversed(cls.__mro__):  # subclasses inherit and may override handlers
            for attribute in vars(klass).values():
                for event_class in getattr(attribute, "_handles", ()):
                    cls.handlers[event_class] = attribute

    @classmethod
    def tracking_key(cls) -> str:
        """The projection's row in the tracking table."""
        return cls.name if cls.revision == 1 else f"{cls.name}@{cls.revision}"

    def process(self, conn: Connection, event: Run.Event, position: int) -> None:
        handler = self.handlers.get(type(event))
        if handler is not None:
            handler(self, conn, event, position)


def on(*event_classes: type) -> Callable[[Handler], Handler]:
    def mark(handler: Handler) -> Handler:
        handler._handles = event_classes  # type: ignore[attr-defined]
        return handler

    return mark


def epoch(moment: datetime) -> float:
    return moment.timestamp()


# Bound once: these run for every history row written and read.
to_json = json.JSONEncoder(separators=(",", ":")).encode
from_json = json.JSONDecoder().decode
