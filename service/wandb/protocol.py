"""W&B's wire formats, pure: operation names, JSON as the SDK writes it, config and values,
history lines, and the IDs this server hands out for runs and sessions.

The SDK writes JSON with bare `NaN`, `Infinity` and `-Infinity` in history and summary lines
(Python's `json` reads them), and wraps every config value as `{"value": v}` beside its own
internals under `_wandb`. Runhistory stores the user's values only: rows and summaries
without W&B's `_`-prefixed keys, config without the wrapping and without `_wandb`.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runhistory.domain.errors import InvalidArgument
from runhistory.domain.identity import RunPath
from runhistory.domain.values import LogCall
from runhistory.protos.codec import dumps, loads_object

# The project W&B logs to when the script names none.
DEFAULT_PROJECT = "uncategorized"
# W&B's own config keys: its internals, never the user's config.
INTERNAL_CONFIG_KEYS = ("_wandb", "wandb_version")

_OPERATION = re.compile(
    r"\b(?:query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)\s*(\([^)]*\))?"
)
_VARIABLE = re.compile(r"\$([_A-Za-z][_0-9A-Za-z]*)\s*:")


@dataclass(frozen=True, slots=True)
class Operation:
    name: str  # "" for a document without a named operation
    variables: frozenset[str]  # the variables it declares

    def given(self, variables: Mapping[str, Any]) -> dict[str, Any]:
        """The variables sent that the operation declares: as in GraphQL, the others do
        not exist for it (the public API sends the run's name along with every request,
        also to operations that do not take one)."""
        return {name: value for name, value in variables.items() if name in self.variables}


def read_operation(query: str) -> Operation:
    """The first operation of a GraphQL document, named by the query text: the public API
    sends an empty `operationName`."""
    text = "\n".join(line.split("#", 1)[0] for line in query.splitlines())
    found = _OPERATION.search(text)
    if found is None:
        return Operation("", frozenset())
    return Operation(found.group(1), frozenset(_VARIABLE.findall(found.group(2) or "")))


def parse_json(text: str | bytes, what: str) -> Any:
    """JSON as the SDK writes it: bare NaN and +/-Infinity are read as floats."""
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidArgument(f"{what} is not valid JSON: {error}") from None
    except RecursionError:
        raise InvalidArgument(f"{what} nests too deep to be read") from None


# ---- config --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WandbConfig:
    """UpsertBucket's config: the user's values and W&B's internals (`_wandb`)."""

    values: dict[str, Any]
    internals: dict[str, Any]

    @property
    def branch_point(self) -> tuple[str, int] | None:
        """`(run_id, step)` of `_wandb.branch_point`, which a fork or a rewind carries."""
        point = self.internals.get("branch_point")
        if point is None:
            return None
        run_id = point.get("run_id") if isinstance(point, dict) else None
        step = point.get("step") if isinstance(point, dict) else None
        if not isinstance(run_id, str) or not run_id:
            raise InvalidArgument(
                f"invalid branch point {point!r}: expected {{'run_id': RUN_ID, 'step': N}}"
            )
        return run_id, whole_number(step, "the branch point's step")


def read_config(text: str | None) -> WandbConfig:
    """`{"lr": {"value": 0.1}, "_wandb": {"value": {...}}}` as its parts."""
    if text is None:
        return WandbConfig({}, {})
    values: dict[str, Any] = {}
    internals: dict[str, Any] = {}
    for key, item in loads_object(text, "config").items():
        value = item["value"] if isinstance(item, dict) and "value" in item else item
        if key == "_wandb":
            internals = value if isinstance(value, dict) else {}
        elif key not in INTERNAL_CONFIG_KEYS:
            values[key] = value
    return WandbConfig(values, internals)


def wrap_config(config: Mapping[str, Any]) -> str:
    """The user's config as W&B stores it: a JSON string of `{"key": {"value": v}}`."""
    return dumps({key: {"value": value} for key, value in config.items()})


def config_changes(current: Mapping[str, Any], sent: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of `sent` whose value is new: W&B sends the whole config each time."""
    return {
        key: value
        for key, value in sent.items()
        if key not in current or dumps(current[key]) != dumps(value)
    }


# ---- values, history lines, summaries ------------------------------------------------------


def user_values(data: Mapping[str, Any]) -> dict[str, Any]:
    """A W&B row or summary as runhistory values: the SDK's own top-level keys (`_step`,
    `_runtime`, `_timestamp`, `_wandb`, ...) left out, nulls kept (as W&B stores them, and
    as runhistory's own SDK logs `None`), lists (which runhistory does not store as such)
    kept as their JSON text, nested dicts as they are."""
    values = {}
    # This runs for every history line: plain values first, the rest in `_value`.
    for key, value in data.items():
        if key[:1] == "_":
            continue
        kind = type(value)
        if kind is float or kind is int or kind is str or kind is bool or value is None:
            values[key] = value
        else:
            values[key] = _value(value)
    return values


def _value(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _value(item) for key, item in value.items()}
    if isinstance(value, list):
        return dumps(value)
    return value


_decode = json.JSONDecoder().decode  # bound once: it reads every history line


def history_call(line: object, number: int) -> LogCall:
    """History line `number` (a JSON object with `_step` and `_timestamp`) as a log call."""
    try:
        # Not a str: decode raises TypeError, cheaper than an isinstance on every line.
        row = _decode(line)  # type: ignore[arg-type]
    except (TypeError, ValueError, RecursionError):
        row = parse_json(line, f"history line {number}") if isinstance(line, str) else None
        if row is None:
            raise InvalidArgument(f"history line {number} is not a string of JSON") from None
    if type(row) is not dict:
        raise InvalidArgument(f"history line {number} is not a JSON object")
    step = row.get("_step")
    if type(step) is not int or step < 0:
        if step is None:
            raise InvalidArgument(f"history line {number} has no _step")
        step = whole_number(step, f"_step of history line {number}")
    timestamp = row.get("_timestamp")
    if type(timestamp) is not float or not math.isfinite(timestamp):
        if timestamp is None:
            timestamp = time.time()
        elif type(timestamp) is not int:
            raise InvalidArgument(
                f"_timestamp of history line {number} is {timestamp!r}: seconds since the epoch"
            )
    return LogCall(user_values(row), float(timestamp), step, commit=True)


def whole_number(value: object, what: str) -> int:
    """An integer >= 0, also when JSON carried it as a float (`3.0`)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgument(f"{what} is {value!r}: an integer >= 0")
    return value


# ---- IDs this server hands out ---------------------------------------------------------------
#
# The SDK sends back the storage ID of the run it resumes (from RunResumeStatus) and of its
# own session (from UpsertBucket or RewindRun) when it updates the run, so the two kinds
# tell a resume from an update. A session's ID is the runhistory writer of the session; it
# names the key that started it, because file_stream posts carry no session, only the key.

_WRITER = "wandb:{key}:"


def new_writer(key_id: str) -> str:
    return _WRITER.format(key=key_id or "-") + uuid.uuid4().hex


def holds(key_id: str, writer: str) -> bool:
    """Whether a session this key started through the W&B API holds the run."""
    return writer.startswith(_WRITER.format(key=key_id or "-"))


_RUN_ID_PREFIX = "Run:"


def run_storage_id(path: RunPath) -> str:
    """The run's storage ID: its path, so that an update naming only the ID (the public
    API's `Run.update()`) finds the run."""
    return base64.b64encode(f"{_RUN_ID_PREFIX}{path}".encode()).decode()


def run_of_storage_id(storage_id: str) -> RunPath | None:
    """The run a storage ID from `run_storage_id` names; None for any other string."""
    try:
        text = base64.b64decode(storage_id, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    if not text.startswith(_RUN_ID_PREFIX):
        return None
    try:
        return RunPath.parse(text.removeprefix(_RUN_ID_PREFIX))
    except InvalidArgument:
        return None


def project_id(entity: str, project: str) -> int:
    """A stable number for a project (the public API converts `projectId` to an int)."""
    return zlib.crc32(f"{entity}/{project}".encode()) or 1


def timestamp_text(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
