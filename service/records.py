"""The run service's read records: what its queries return, typed.

Each entrypoint maps them once at its edge: to protobuf messages in `rpc/mapping.py`, to
JSON documents in `web/api.py`. History rows, summaries and configs stay plain dicts: they
hold the user's own keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ForkedFrom:
    """Where a fork's version stands: the source run, its version (and that version's
    immutable ID) and the step; a rewind of the fork below its fork step lowers the step."""

    run: str
    step: int
    version: int
    immutable_id: str


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run's overview row, with its "forked from" link: of its live version, or of the
    version asked for by immutable ID (`archived` then says whether a rewind archived it)."""

    path: str
    entity: str
    project: str
    run_id: str
    name: str
    tags: list[str]
    state: str
    exit_code: int | None
    version: int
    last_step: int | None
    created_at: float
    updated_at: float
    forked_from: ForkedFrom | None
    run_uuid: str
    created_position: int
    updated_position: int  # of the run's latest event: moves whenever the run changes
    immutable_id: str  # of `version`
    archived: bool = False


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """One version of a run, as it was; all but the last are archived."""

    version: int
    immutable_id: str
    archived: bool
    rewound_to_step: int | None  # the step of the rewind that archived it
    started_at: float
    archived_at: float | None
    state: str
    last_step: int | None
    rows: int
    summary: dict[str, Any]
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    position: int
    version: int
    direction: str  # "produced" or "used"
    name: str
    type: str
    digest: str
    size: int
    uri: str
    recorded_at: float


@dataclass(frozen=True, slots=True)
class Ancestor:
    """A run this one descends from, and the version and step it stands on (the fork step,
    or a lower step a rewind went back to)."""

    run: str
    version: int
    step: int
    immutable_id: str  # of the version forked from


@dataclass(frozen=True, slots=True)
class LineageVersion:
    version: int
    immutable_id: str
    archived: bool
    rewound_to_step: int | None


@dataclass(frozen=True, slots=True)
class Descendant:
    """A fork of the run (or of one of its versions), with its own forks below it."""

    run: str
    source_version: int
    step: int
    descendants: list[Descendant]


@dataclass(frozen=True, slots=True)
class LineageRecord:
    """Ancestors (nearest first), the run's versions and the tree of its descendants."""

    run: str
    version: int
    immutable_id: str  # of the live version
    ancestors: list[Ancestor]
    versions: list[LineageVersion]
    descendants: list[Descendant]


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An event of the log at its position, its payload as the event carries it."""

    position: int
    run_uuid: str
    run_event: int  # the event's number within its run
    type: str
    timestamp: float
    payload: dict[str, Any]
