"""Run identity: `entity/project/run_id` paths, run ID rules, immutable version IDs and
branch points."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from uuid import NAMESPACE_URL, UUID, uuid5

from runhistory.domain.errors import InvalidArgument, a_or_an

NAME_RULE = "1-64 characters of letters, digits, '-', '_' and '.'"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_RUN_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
GENERATED_ID_LENGTH = 8
BRANCH_FORMAT = (
    "'<run_id>?_step=<N>' or '<entity>/<project>/<run_id>?_step=<N>' with N >= 0 (a version's "
    "immutable ID in place of the run ID)"
)

# Aggregate IDs are uuid5 of the run's path under this namespace, so the same path always
# names the same event stream, on every server and after every rebuild.
_RUN_NAMESPACE = uuid5(NAMESPACE_URL, "runhistory:run")

# Immutable version IDs: every version of every run has one, derived (not stored in any
# event) from the run's aggregate ID and the version number, so it never changes, a rebuild
# reproduces it, and a rewind, which starts a new version number, gives the new version a new
# one. The form is reserved: "v" and 25 characters of [0-9a-z] (the uuid5's 128 bits in base
# 36), 26 in all. A new run may not take an ID of that form, so a name of that form is always
# a version ID and never a run ID: lookups know which they were given.
_VERSION_NAMESPACE = uuid5(NAMESPACE_URL, "runhistory:version")
_VERSION_ID = re.compile(r"v[0-9a-z]{25}")
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
VERSION_ID_RULE = "'v' and 25 lowercase letters and digits"


def check_name(kind: str, value: object) -> str:
    """`value` as a name, or InvalidArgument; any value is checked (requests carry JSON)."""
    if value == "":
        raise InvalidArgument(f"the {kind} is empty: {a_or_an(kind)} is {NAME_RULE}")
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidArgument(f"invalid {kind} {value!r}: {a_or_an(kind)} is {NAME_RULE}")
    return value


def generate_run_id() -> str:
    return "".join(secrets.choice(_RUN_ID_ALPHABET) for _ in range(GENERATED_ID_LENGTH))


def version_id(run_uuid: UUID | str, version: int) -> str:
    """The immutable ID of a run's version: letters and digits, unique on the server."""
    number = uuid5(_VERSION_NAMESPACE, f"{run_uuid}/{version}").int
    digits = []
    for _ in range(25):
        number, digit = divmod(number, 36)
        digits.append(_BASE36[digit])
    return "v" + "".join(reversed(digits))


def is_version_id(text: object) -> bool:
    """Whether `text` has the form reserved for immutable version IDs."""
    return isinstance(text, str) and _VERSION_ID.fullmatch(text) is not None


def check_new_run_id(run_id: str) -> str:
    """A new run's ID: a name that is not of the form reserved for version IDs."""
    check_name("run ID", run_id)
    if is_version_id(run_id):
        raise InvalidArgument(
            f"invalid run ID {run_id!r}: IDs of {VERSION_ID_RULE} are reserved for the "
            "immutable IDs of run versions; choose another ID or leave it empty to generate one"
        )
    return run_id


@dataclass(frozen=True, slots=True)
class VersionRef:
    """A run version named by its immutable ID: bare (any run the reader may read) or
    under `entity/project`, which must then be the version's run's."""

    version_id: str
    entity: str | None = None
    project: str | None = None

    def __str__(self) -> str:
        if self.entity is None:
            return self.version_id
        return f"{self.entity}/{self.project}/{self.version_id}"

    def holds(self, path: RunPath) -> bool:
        """Whether the version's run `path` is in the entity and project named, if any."""
        return self.entity is None or (self.entity, self.project) == (path.entity, path.project)


def parse_run_or_version(
    text: str, entity: str | None = None, project: str | None = None
) -> RunPath | VersionRef:
    """A run (`entity/project/run_id`, or a bare `run_id` given an entity and project) or a
    version by immutable ID (`entity/project/ID` or a bare `ID`)."""
    if isinstance(text, str):
        parts = text.split("/")
        if is_version_id(parts[-1]):
            if len(parts) == 1:
                return VersionRef(parts[0])
            if len(parts) == 3:
                return VersionRef(
                    parts[2], check_name("entity", parts[0]), check_name("project", parts[1])
                )
    return RunPath.parse(text, entity, project)


@dataclass(frozen=True, slots=True)
class RunPath:
    entity: str
    project: str
    run_id: str

    def __post_init__(self) -> None:
        check_name("entity", self.entity)
        check_name("project", self.project)
        check_name("run ID", self.run_id)

    def __str__(self) -> str:
        return f"{self.entity}/{self.project}/{self.run_id}"

    @property
    def aggregate_id(self) -> UUID:
        return run_aggregate_id(self.entity, self.project, self.run_id)

    @classmethod
    def parse(cls, text: str, entity: str | None = None, project: str | None = None) -> RunPath:
        """`run_id` (with the given entity and project) or `entity/project/run_id`."""
        if not isinstance(text, str) or not text:
            raise InvalidArgument("a run is named by 'run_id' or 'entity/project/run_id'")
        parts = text.split("/")
        if len(parts) == 3:
            return cls(*parts)
        if len(parts) == 1 and entity is not None and project is not None:
            return cls(entity, project, parts[0])
        raise InvalidArgument(
            f"invalid run reference {text!r}: use 'entity/project/run_id'"
            + (" or a bare run ID with an entity and project" if len(parts) == 1 else "")
        )

    @classmethod
    def parse_reference(cls, text: str, entity: str, project: str) -> RunPath:
        """A run as a reader names it, in W&B's forms: `entity/project/run_id`,
        `entity/project/runs/run_id`, `project/run_id` (of `entity`) or `run_id` (of `entity`
        and `project`); slashes around it are ignored."""
        parts = text.strip("/").split("/") if isinstance(text, str) else []
        if len(parts) == 4 and parts[2] == "runs":
            parts = [parts[0], parts[1], parts[3]]
        elif len(parts) == 2:
            parts = [entity, *parts]
        elif len(parts) == 1 and parts[0]:
            parts = [entity, project, *parts]
        if len(parts) != 3:
            raise InvalidArgument(
                f"invalid run path {text!r}: use 'entity/project/run_id' (or "
                "'entity/project/runs/run_id', 'project/run_id', 'run_id')"
            )
        return cls(*parts)


def run_aggregate_id(entity: str, project: str, run_id: str) -> UUID:
    return uuid5(_RUN_NAMESPACE, f"{entity}/{project}/{run_id}")


@dataclass(frozen=True, slots=True)
class BranchPoint:
    """Where a rewind or a fork starts: a run (or one of its versions, by immutable ID) and
    a step of its visible history."""

    run: RunPath | VersionRef
    step: int

    def __str__(self) -> str:
        return f"{self.run}?_step={self.step}"

    @classmethod
    def parse(cls, text: str, entity: str, project: str) -> BranchPoint:
        if not isinstance(text, str) or "?" not in text:
            raise InvalidArgument(f"invalid branch point {text!r}: expected {BRANCH_FORMAT}")
        ref, _, query = text.partition("?")
        name, eq, value = query.partition("=")
        if name != "_step" or not eq:
            raise InvalidArgument(
                f"invalid branch point {text!r}: only '_step' is supported; "
                f"expected {BRANCH_FORMAT}"
            )
        if not re.fullmatch(r"[0-9]{1,18}", value):
            raise InvalidArgument(
                f"invalid branch point {text!r}: the step must be an integer >= 0; "
                f"expected {BRANCH_FORMAT}"
            )
        try:
            run = parse_run_or_version(ref, entity, project)
        except InvalidArgument as error:
            raise InvalidArgument(f"{error.message}; expected {BRANCH_FORMAT}") from None
        return cls(run, int(value))
