"""How a project's runs are listed: filters, order, page size and cursors. Pure and light:
the SDK imports this module too (it turns W&B's MongoDB-style `filters` into a `RunFilter`
before sending), and the server checks every listing request with it again.

Listings page by keyset: a cursor carries the position (in the event log) of the last run
of the page it ends, so the next page starts right after it, whatever was created in
between, and its cost does not grow with the runs before it. Runs are ordered by creation
or by their latest update, as the event log orders them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from runhistory.domain.errors import InvalidArgument

RUN_STATES = ("running", "finished", "crashed")  # as domain/run.py names them
DEFAULT_PAGE_SIZE = 50  # W&B's `per_page` default
MAX_PAGE_SIZE = 1000
MAX_PATTERN_LENGTH = 256
MAX_FILTER_VALUES = 100  # states or tags in one `$in`

# order -> (the column that orders it, descending)
ORDERS = {
    "+created_at": ("created_position", False),
    "-created_at": ("created_position", True),
    "+updated_at": ("updated_position", False),
    "-updated_at": ("updated_position", True),
}
DEFAULT_ORDER = "+created_at"  # oldest first, as W&B's `api.runs` does by default
ORDER_CHOICES = "+created_at (oldest first), -created_at, +updated_at or -updated_at"

FILTER_FIELDS = ("state", "tags", "display_name", "name")
FILTER_HELP = (
    "filters support {'state': S or {'$in': [S, ...]}}, {'tags': T or {'$in': [T, ...]}}, "
    "{'display_name': N or {'$regex': R}} (the run's name), {'name': ID or {'$regex': R}} "
    "(the run ID, as in W&B), several of them at once or in an {'$and': [...]}"
)


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Runs that match all of the conditions given (an empty filter matches every run)."""

    states: tuple[str, ...] = ()  # any of
    tags: tuple[str, ...] = ()  # has any of
    run_id: str | None = None
    run_id_regex: str | None = None
    name: str | None = None  # the display name
    name_regex: str | None = None

    def checked(self) -> RunFilter:
        """The filter, once every condition is one the server can answer."""
        unknown = [s for s in self.states if s not in RUN_STATES]
        if unknown:
            raise InvalidArgument(
                f"invalid state filter {unknown[0]!r}: a run's state is one of "
                f"{', '.join(RUN_STATES)}"
            )
        for label, values in (("states", self.states), ("tags", self.tags)):
            if len(values) > MAX_FILTER_VALUES:
                raise InvalidArgument(
                    f"{len(values)} {label} in one filter: at most {MAX_FILTER_VALUES}"
                )
        for tag in self.tags:
            if not isinstance(tag, str) or not tag or len(tag) > 64:
                raise InvalidArgument(f"invalid tag filter {tag!r}: tags are 1-64 characters")
        for label, text in (("name", self.name), ("run ID", self.run_id)):
            if text is not None and (not isinstance(text, str) or len(text) > 128):
                raise InvalidArgument(f"invalid {label} filter {text!r}: at most 128 characters")
        for label, pattern in (("name", self.name_regex), ("run ID", self.run_id_regex)):
            if pattern is not None:
                check_pattern(label, pattern)
        return self

    def fingerprint(self) -> str:
        return json.dumps(
            [self.states, self.tags, self.run_id, self.run_id_regex, self.name, self.name_regex]
        )


def check_pattern(label: str, pattern: object) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise InvalidArgument(f"invalid {label} $regex {pattern!r}: a non-empty string")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidArgument(
            f"the {label} $regex is {len(pattern)} characters: at most {MAX_PATTERN_LENGTH}"
        )
    try:
        re.compile(pattern)
    except re.error as error:
        raise InvalidArgument(f"invalid {label} $regex {pattern!r}: {error}") from None
    return pattern


def check_order(order: str | None) -> str:
    """The order's canonical name: `created_at` is `+created_at`; an empty one the default."""
    if not order:
        return DEFAULT_ORDER
    canonical = order if order[0] in "+-" else f"+{order}"
    if canonical not in ORDERS:
        raise InvalidArgument(f"invalid order {order!r}: use {ORDER_CHOICES}")
    return canonical


def check_page_size(size: int | None) -> int:
    """None: the default."""
    if size is None:
        return DEFAULT_PAGE_SIZE
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"invalid page size {size!r}: 1 to {MAX_PAGE_SIZE} runs (default {DEFAULT_PAGE_SIZE})"
        )
    return size


# ---- W&B's MongoDB-style filters -------------------------------------------------------


def from_mongo(filters: Mapping[str, object] | None) -> RunFilter:
    """The subset of W&B's `api.runs(path, filters=...)` that runhistory answers; anything
    else is refused with what is supported, never ignored."""
    if filters is None:
        return RunFilter()
    if not isinstance(filters, Mapping):
        raise InvalidArgument(f"filters is a dict, not {type(filters).__name__}: {FILTER_HELP}")
    found: dict[str, object] = {}
    _collect(filters, found)
    states = _values("state", found.get("state"))
    tags = _values("tags", found.get("tags"))
    run_id, run_id_regex = _text("name", found.get("name"))
    name, name_regex = _text("display_name", found.get("display_name"))
    return RunFilter(states, tags, run_id, run_id_regex, name, name_regex).checked()


def _collect(filters: Mapping[str, object], found: dict[str, object]) -> None:
    for key, condition in filters.items():
        if key == "$and":
            if not isinstance(condition, list) or not all(
                isinstance(c, Mapping) for c in condition
            ):
                raise InvalidArgument(f"$and takes a list of filters: {FILTER_HELP}")
            for part in condition:
                _collect(part, found)
        elif key not in FILTER_FIELDS:
            raise InvalidArgument(f"cannot filter runs by {key!r}: {FILTER_HELP}")
        elif key in found:
            raise InvalidArgument(f"the filters name {key!r} twice: give one condition per field")
        else:
            found[key] = condition


def _values(field: str, condition: object) -> tuple[str, ...]:
    """`"x"`, `{"$eq": "x"}` or `{"$in": ["x", "y"]}`."""
    if condition is None:
        return ()
    if isinstance(condition, str):
        return (condition,)
    operator, operand = _operator(field, condition, ("$eq", "$in"))
    if operator == "$eq" and isinstance(operand, str):
        return (operand,)
    if operator == "$in" and isinstance(operand, list) and operand:
        strings = tuple(v for v in operand if isinstance(v, str))
        if len(strings) == len(operand):
            return strings
    raise InvalidArgument(
        f"invalid {field} filter {condition!r}: a string, {{'$eq': S}} or a non-empty "
        "{'$in': [S, ...]} of strings"
    )


def _text(field: str, condition: object) -> tuple[str | None, str | None]:
    """(exact, pattern): `"x"`, `{"$eq": "x"}` or `{"$regex": "p"}`."""
    if condition is None:
        return None, None
    if isinstance(condition, str):
        return condition, None
    operator, operand = _operator(field, condition, ("$eq", "$regex"))
    if not isinstance(operand, str):
        raise InvalidArgument(f"invalid {field} filter {condition!r}: {operator} takes a string")
    return (operand, None) if operator == "$eq" else (None, operand)


def _operator(field: str, condition: object, allowed: Sequence[str]) -> tuple[str, object]:
    if isinstance(condition, Mapping) and len(condition) == 1:
        ((operator, operand),) = condition.items()
        if operator in allowed:
            return operator, operand
        raise InvalidArgument(
            f"the {field} filter does not support {operator!r}: use a value or "
            f"{' or '.join(allowed)}; {FILTER_HELP}"
        )
    raise InvalidArgument(
        f"invalid {field} filter {condition!r}: a value or one of {', '.join(allowed)}"
    )


# ---- cursors ---------------------------------------------------------------------------


def listing_key(entity: str, project: str, order: str, run_filter: RunFilter) -> str:
    """What a cursor belongs to: the same project, order and filters."""
    text = json.dumps([entity, project, order, run_filter.fingerprint()])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def encode_cursor(position: int, key: str) -> str:
    """An opaque cursor: after the run at `position` of the listing `key`."""
    raw = json.dumps([1, position, key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_CURSOR = (
    "pass the next_cursor of the previous page unchanged, with the same project, order and "
    "filters (or no cursor for the first page)"
)


def decode_cursor(cursor: str, key: str) -> int:
    """The position a cursor continues after; refused if it is not one of `key`'s."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, position, owner = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidArgument(f"invalid cursor {cursor[:80]!r}: {BAD_CURSOR}") from None
    if version != 1 or not isinstance(position, int) or isinstance(position, bool):
        raise InvalidArgument(f"invalid cursor {cursor[:80]!r}: {BAD_CURSOR}")
    if owner != key:
        raise InvalidArgument(f"the cursor belongs to another listing: {BAD_CURSOR}")
    if position < 0:
        raise InvalidArgument(f"invalid cursor {cursor[:80]!r}: {BAD_CURSOR}")
    return position
