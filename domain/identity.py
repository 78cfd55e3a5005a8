"""Run identity: `entity/project/run_id` paths, run ID rules and branch points."""

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
BRANCH_FORMAT = "'<run_id>?_step=<N>' or '<entity>/<project>/<run_id>?_step=<N>' with N >= 0"

# Aggregate IDs are uuid5 of the run's path under this namespace, so the same path always
# names the same event stream, on every server and after every rebuild.
_RUN_NAMESPACE = uuid5(NAMESPACE_URL, "runhistory:run")


def check_name(kind: str, value: str) -> str:
    if value == "":
        raise InvalidArgument(f"the {kind} is empty: {a_or_an(kind)} is {NAME_RULE}")
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidArgument(f"invalid {kind} {value!r}: {a_or_an(kind)} is {NAME_RULE}")
    return value


def generate_run_id() -> str:
    return "".join(secrets.choice(_RUN_ID_ALPHABET) for _ in range(GENERATED_ID_LENGTH))


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
    """Where a rewind or a fork starts: a run and a step of its visible history."""

    run: RunPath
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
            run = RunPath.parse(ref, entity, project)
        except InvalidArgument as error:
            raise InvalidArgument(f"{error.message}; expected {BRANCH_FORMAT}") from None
        return cls(run, int(value))
