"""Logged values: what a history row may hold, flattening, and size limits."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from runhistory.domain.errors import InvalidArgument, ResourceExhausted

Value: TypeAlias = bool | int | float | str | None
Values: TypeAlias = dict[str, Value]

ALLOWED_VALUES = (
    "int, float (NaN and +/-Inf allowed), bool, str, None (stored as null), numpy scalars "
    "and 0-d arrays of these, or a dict of these"
)
RESERVED_PREFIX = "_"
_INT64 = 2**63


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits, enforced on every write. An oversize row is refused whole, never cut.

    A row's size counts the UTF-8 bytes of its keys and string values plus 8 bytes for every
    number or bool: the size of the row as stored, without the encoding's punctuation.
    """

    max_key_length: int = 256
    max_keys_per_row: int = 10_000
    max_row_bytes: int = 10 * 1024 * 1024
    max_request_bytes: int = 16 * 1024 * 1024
    max_depth: int = 32
    max_calls_per_batch: int = 10_000


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class LogCall:
    """One `run.log(data, step=None, commit=None)` call, with the client's wall clock."""

    data: Mapping[str, object]
    timestamp: float
    step: int | None = None
    commit: bool | None = None


def flatten(data: Mapping[str, object], limits: Limits = DEFAULT_LIMITS) -> Values:
    """Check logged data and flatten nested dicts to dotted keys (`{"a": {"b": 1}}` -> `a.b`)."""
    if type(data) is not dict and not isinstance(data, Mapping):
        kind = type(data).__name__
        raise InvalidArgument(f"logged data must be a dict of key to value, got {kind}")
    flat: Values = {}
    _flatten_into(flat, "", data, limits, 1)
    if len(flat) > limits.max_keys_per_row:
        raise ResourceExhausted(
            f"a row has {len(flat)} keys; "
            f"at most {limits.max_keys_per_row} keys are allowed per row"
        )
    return flat


def _flatten_into(
    flat: Values, prefix: str, data: Mapping[str, object], limits: Limits, level: int
) -> None:
    # This runs for every logged value: exact type checks first, the general ones after.
    if level > limits.max_depth:
        raise InvalidArgument(
            f"logged data under {prefix[:40]!r} nests too deep: at most {limits.max_depth} "
            "levels of dicts are allowed"
        )
    max_key = limits.max_key_length
    for key, value in data.items():
        if (type(key) is not str or not key) and (not isinstance(key, str) or not key):
            raise InvalidArgument(f"invalid key {key!r}: keys are non-empty strings")
        if not prefix and key[0] == RESERVED_PREFIX:
            raise InvalidArgument(
                f"invalid key {key!r}: keys starting with '_' are reserved for system keys "
                "(_step, _timestamp, _runtime)"
            )
        full_key = prefix + key if prefix else key
        if len(full_key) > max_key:
            raise ResourceExhausted(
                f"key {full_key[:40]!r}... is {len(full_key)} characters; "
                f"at most {max_key} are allowed"
            )
        # mypy does not narrow `value` through `kind`, which is read once for speed.
        kind = type(value)
        if kind is float or kind is str or kind is bool:
            flat[full_key] = value  # type: ignore[assignment]  # a float, str or bool
        elif kind is dict or isinstance(value, Mapping):
            _flatten_into(flat, full_key + ".", value, limits, level + 1)  # type: ignore[arg-type]  # a dict
        else:
            flat[full_key] = check_value(full_key, value)


def check_value(key: str, value: object) -> Value:
    # bool before int: bool is an int subclass and must stay a bool.
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise InvalidArgument(f"value of {key!r} is out of range: integers are 64-bit signed")
        return value
    if isinstance(value, float):
        return value
    # numpy and other numeric scalars: keep their kind, drop their type.
    if isinstance(value, numbers.Integral):
        return check_value(key, int(value))
    if isinstance(value, numbers.Real):
        return float(value)
    scalar = _array_scalar(value)
    if scalar is not value:
        return check_value(key, scalar)
    raise InvalidArgument(
        f"value of {key!r} has type {type(value).__name__}; allowed: {ALLOWED_VALUES}"
    )


def _array_scalar(value: object) -> object:
    """The Python value of a numpy scalar (numpy.bool_ is no `numbers` type) or 0-d array
    (and of the like, such as a 0-d tensor), found by duck typing so that numpy is never
    imported here; else `value` itself."""
    item = getattr(value, "item", None)
    if item is None or getattr(value, "ndim", None) != 0:
        return value
    scalar: object = item()
    return scalar


def row_size(values: Values) -> int:
    size = 8 * len(values)
    for key, value in values.items():
        size += len(key) if key.isascii() else len(key.encode())
        if type(value) is str:
            size += (len(value) if value.isascii() else len(value.encode())) - 8
    return size


def check_row_size(step: int | None, values: Values, limits: Limits) -> None:
    """Refuse a row over the limits; `step=None`: a row not yet given a step (the SDK's
    check before sending)."""
    row = "the row" if step is None else f"row at step {step}"
    if len(values) > limits.max_keys_per_row:
        raise ResourceExhausted(
            f"{row} has {len(values)} keys; at most {limits.max_keys_per_row} "
            "keys are allowed per row (it was refused whole)"
        )
    size = row_size(values)
    if size > limits.max_row_bytes:
        raise ResourceExhausted(
            f"{row} is {size} bytes; at most {limits.max_row_bytes} bytes are allowed "
            "per row (it was refused whole)"
        )


def same_value(a: object, b: object) -> bool:
    """Equality that treats NaN as equal to NaN, for comparing histories."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


CONFIG_VALUES = "null, bool, int, float, str, lists and dicts of these (numpy values too)"


MAX_CONFIG_DEPTH = 32


def check_config(config: Mapping[str, object]) -> dict[str, object]:
    """Config is a dict of JSON-like values; its top-level keys are merged by `update`."""
    if not isinstance(config, Mapping):
        raise InvalidArgument(f"config must be a dict, got {type(config).__name__}")
    return {
        _config_key(key): _config_value(key, value, MAX_CONFIG_DEPTH - 1)
        for key, value in config.items()
    }


def _config_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidArgument(f"invalid config key {key!r}: config keys are non-empty strings")
    return key


def _config_value(key: str, value: object, depth: int) -> object:
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return check_value(key, value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    scalar = _array_scalar(value)
    if scalar is not value:
        return _config_value(key, scalar, depth)
    tolist = getattr(value, "tolist", None)
    if tolist is not None and getattr(value, "ndim", 0) > 0:  # a numpy array, as W&B takes it
        return _config_value(key, tolist(), depth)
    if isinstance(value, list | tuple | Mapping) and depth <= 0:
        raise InvalidArgument(
            f"config value of {key[:40]!r} nests too deep: at most {MAX_CONFIG_DEPTH} levels "
            "of lists and dicts are allowed"
        )
    if isinstance(value, list | tuple):
        return [_config_value(key, item, depth - 1) for item in value]
    if isinstance(value, Mapping):
        return {_config_key(k): _config_value(f"{key}.{k}", v, depth - 1) for k, v in value.items()}
    raise InvalidArgument(
        f"config value of {key!r} has type {type(value).__name__}; allowed: {CONFIG_VALUES}"
    )
