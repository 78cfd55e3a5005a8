"""What every projection is: a name, its tables, and how it applies each event."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import Connection, Table

from runhistory.domain.run import Run
from runhistory.domain.series import EventRow


class Projection(ABC):
    """Subclasses set `name` and `tables` and apply events in `process`, with a `match` on
    the event classes they need; they ignore the rest.

    `process` gets the connection of the runner's transaction, the domain event and the
    event's position in the log. It must derive everything it writes from the event and
    from rows written for earlier events, so replaying the log reproduces it exactly.
    """

    name: ClassVar[str]
    # Raised when what the tables hold changes: a database whose read model was made by an
    # earlier revision has no tracking row for this one, so the runner drops the tables and
    # replays the log into them (together with the projections it is connected to through
    # `depends_on`).
    revision: ClassVar[int] = 1
    tables: ClassVar[tuple[Table, ...]]
    # The projections whose tables this one reads while it applies an event, as they stand
    # at that event: the runner applies each event to those first, and replays them
    # together with this one.
    depends_on: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def tracking_key(cls) -> str:
        """The projection's row in the tracking table."""
        return cls.name if cls.revision == 1 else f"{cls.name}@{cls.revision}"

    @abstractmethod
    def process(self, conn: Connection, event: Run.Event, position: int) -> None: ...


def epoch(moment: datetime) -> float:
    return moment.timestamp()


def last_step_change(rows: Sequence[EventRow]) -> dict[str, int]:
    """The `last_step` column's new value once `rows` are committed: none without rows."""
    return {"last_step": rows[-1][0]} if rows else {}


# Bound once: these run for every history row written and read.
to_json: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":")).encode
from_json: Callable[[str], Any] = json.JSONDecoder().decode
