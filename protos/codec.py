"""The wire codec, shared by the SDK and the server: values, rows, log calls and packed
series to and from the gRPC messages and their JSON forms, and rows built from series.

It imports nothing from the server side (no eventsourcing, SQLAlchemy or plotly), so the
SDK stays light.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from functools import cache
from typing import Any

from runhistory.domain.errors import InvalidArgument
from runhistory.domain.series import FLOATS, INTS, JSON, RUNTIME, TIMESTAMP, Series
from runhistory.domain.values import DEFAULT_LIMITS, Limits, LogCall
from runhistory.protos import runhistory_pb2 as pb


def to_value(value: Any) -> pb.Value:
    if value is None:
        return pb.Value(null_value=True)
    if isinstance(value, bool):
        return pb.Value(bool_value=value)
    if isinstance(value, int):
        return pb.Value(int_value=value)
    if isinstance(value, float):
        return pb.Value(float_value=value)
    if isinstance(value, str):
        return pb.Value(string_value=value)
    raise InvalidArgument(
        f"value of type {type(value).__name__} cannot be sent; allowed: int, float, bool, str, None"
    )


def from_value(message: pb.Value) -> Any:
    kind = message.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument("a value is empty: set one of float, int, bool, string or null")
    if kind == "null_value":
        return None
    return getattr(message, kind)


def to_values(values: Mapping[str, Any]) -> dict[str, pb.Value]:
    return {key: to_value(value) for key, value in values.items()}


def from_values(values: Mapping[str, pb.Value]) -> dict[str, Any]:
    return {key: from_value(value) for key, value in values.items()}


SYSTEM_KEYS = ("_step", "_timestamp", "_runtime")


def row_to_proto(row: Mapping[str, Any]) -> pb.Row:
    return pb.Row(
        step=row["_step"],
        timestamp=row["_timestamp"],
        runtime=row["_runtime"],
        values={k: to_value(v) for k, v in row.items() if k not in SYSTEM_KEYS},
    )


def row_from_proto(row: pb.Row) -> dict[str, Any]:
    return {
        "_step": row.step,
        "_timestamp": row.timestamp,
        "_runtime": row.runtime,
        **from_values(row.values),
    }


_SERIES_FIELDS = {FLOATS: "floats", INTS: "ints", JSON: "json"}
_SERIES_KINDS = {field: kind for kind, field in _SERIES_FIELDS.items()}


def series_to_protos(series: Sequence[Series]) -> list[pb.Series]:
    """A page's series as messages. A key in every row of the page has the same steps as
    `_timestamp`: it is sent without them (a third less to send for one key)."""
    shared = next((s.steps for s in series if s.key == TIMESTAMP), None)
    return [
        pb.Series(
            key=s.key,
            steps=b"" if s.key != TIMESTAMP and s.steps == shared else s.steps,
            **{_SERIES_FIELDS[s.kind]: s.values},
        )
        for s in series
    ]


def series_from_protos(messages: Sequence[pb.Series]) -> list[Series]:
    shared = next((m.steps for m in messages if m.key == TIMESTAMP), b"")
    made = []
    for message in messages:
        field = message.WhichOneof("values")
        steps = message.steps or shared
        if field is None or len(steps) % 8:
            raise InvalidArgument(
                f"series {message.key!r} is malformed: its steps must be int64s, its values set"
            )
        made.append(Series(message.key, steps, _SERIES_KINDS[field], getattr(message, field)))
    return made


def chunk_rows(chunk: pb.HistoryChunk) -> list[dict[str, Any]]:
    """The rows of a `ReadHistory` chunk."""
    return rows_of_series(series_from_protos(chunk.series))


def rows_from_chunks(chunks: Iterable[pb.HistoryChunk]) -> Iterable[dict[str, Any]]:
    for chunk in chunks:
        yield from chunk_rows(chunk)


def dumps(document: Any) -> str:
    """JSON text; NaN and +/-Infinity are written as bare words, as Python's json does."""
    return json.dumps(document, separators=(",", ":"), default=str)


def loads_object(text: str, what: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"{what} is not valid JSON: {error}") from None
    except RecursionError:
        raise InvalidArgument(f"{what} nests too deep to be read") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"{what} must be a JSON object, got {type(document).__name__}")
    return document


def loads(text: str) -> Any:
    return json.loads(text)


CALLS_JSON_FORMAT = "a JSON array of [data, timestamp, step or null, commit or null]"


def calls_to_json(calls: Iterable[tuple[dict[str, Any], float, int | None, bool | None]]) -> bytes:
    return json.dumps(calls, separators=(",", ":")).encode()


def calls_from_json(payload: bytes) -> list[LogCall]:
    """`LogBatch.calls_json` as log calls; the domain checks the values themselves."""
    try:
        calls = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidArgument(
            f"calls_json is not valid JSON ({error}); expected {CALLS_JSON_FORMAT}"
        ) from None
    except RecursionError:
        raise InvalidArgument(
            f"calls_json nests too deep to be read: {CALLS_JSON_FORMAT}"
        ) from None
    if not isinstance(calls, list):
        raise InvalidArgument(f"calls_json must be {CALLS_JSON_FORMAT}")
    made = []
    for call in calls:
        if not (isinstance(call, list) and len(call) == 4 and isinstance(call[1], int | float)):
            raise InvalidArgument(
                f"invalid call {str(call)[:80]} in calls_json: expected {CALLS_JSON_FORMAT}"
            )
        data, timestamp, step, commit = call
        if commit is not None and not isinstance(commit, bool):
            raise InvalidArgument(f"invalid commit {commit!r} in calls_json: true, false or null")
        made.append(LogCall(data, float(timestamp), step, commit))
    return made


# ---- rows from series: the loop of every history read ------------------------------------


def rows_of_series(series: Iterable[Series]) -> list[dict[str, Any]]:
    """Rows in step order, each `{"_step", "_timestamp", "_runtime", **values}`: one per
    step of the time series, with the value of each key that has a point there."""
    by_key = {s.key: s for s in series}
    if not by_key:
        return []
    with _collector_paused():
        return _rows(by_key)


def extend_columns(columns: dict[str, list[Any]], series: Iterable[Series]) -> None:
    """Add a page's rows to `columns` ({"_step": [...], "_timestamp": [...], "_runtime":
    [...], key: [...]}, as a data frame takes them): one entry per row in every column,
    None where a row does not hold the key. A column is a plain list of the values."""
    by_key = {s.key: s for s in series}
    if not by_key:
        return
    timestamps, runtimes = by_key.pop(TIMESTAMP), by_key.pop(RUNTIME)
    done = len(columns.get("_step", ()))
    steps = timestamps.step_list()
    for name, values in (
        ("_step", steps),
        (TIMESTAMP, timestamps.value_list()),
        (RUNTIME, runtimes.value_list()),
    ):
        columns.setdefault(name, []).extend(values)
    index: dict[int, int] | None = None
    for key, points in by_key.items():
        column = columns.setdefault(key, [])
        column.extend([None] * (done - len(column)))  # earlier pages without the key
        if points.steps == timestamps.steps:
            column.extend(points.value_list())
            continue
        if index is None:
            index = {step: i for i, step in enumerate(steps)}
        filled: list[Any] = [None] * len(steps)
        for step, value in zip(points.step_list(), points.value_list(), strict=True):
            filled[index[step]] = value
        column.extend(filled)
    total = len(columns["_step"])
    for column in columns.values():
        column.extend([None] * (total - len(column)))  # keys this page does not have


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Building many rows allocates a container per row, each of which counts towards the
    cyclic garbage collector's next pass; the passes it triggers find nothing to free (the
    rows are all kept) and took a third of the time of reading 100k rows of one key."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _rows(by_key: dict[str, Series]) -> list[dict[str, Any]]:
    timestamps, runtimes = by_key.pop(TIMESTAMP), by_key.pop(RUNTIME)
    steps = timestamps.step_list()
    if all(s.steps == timestamps.steps for s in by_key.values()):
        # Every key in every row, the common case: one pass, no lookups.
        names = ("_step", TIMESTAMP, RUNTIME, *by_key)
        columns = [steps, timestamps.value_list(), runtimes.value_list()]
        columns += [s.value_list() for s in by_key.values()]
        return _row_builder(len(names))(*names)(columns)
    times = zip(steps, timestamps.value_list(), runtimes.value_list(), strict=True)
    rows = {step: {"_step": step, TIMESTAMP: t, RUNTIME: r} for step, t, r in times}
    for key, points in by_key.items():
        for step, value in zip(points.step_list(), points.value_list(), strict=True):
            rows[step][key] = value
    return list(rows.values())


RowMaker = Callable[[list[list[Any]]], list[dict[str, Any]]]


@cache
def _row_builder(width: int) -> Callable[..., RowMaker]:
    """A function that, given `width` names, makes rows of `width` equal-length columns.

    Building each row as a dict display is twice as fast as `dict(zip(names, values))`
    (30 ms against 67 ms for 100k rows of four keys), and it is the loop of every read. The
    generated code holds only variable names made from `width`: the keys are arguments, so
    no value from outside is ever compiled.
    """
    names = ", ".join(f"n{i}" for i in range(width))
    values = ", ".join(f"v{i}" for i in range(width))
    row = ", ".join(f"n{i}: v{i}" for i in range(width))
    source = f"lambda {names}: lambda columns: [{{{row}}} for {values} in zip(*columns)]"
    builder: Callable[..., RowMaker] = eval(source)  # only `width` shapes the source: see above
    return builder


def limits_to_proto(limits: Limits) -> pb.Limits:
    return pb.Limits(**{field.name: getattr(limits, field.name) for field in fields(Limits)})


def limits_from_proto(message: pb.Limits) -> Limits:
    """The server's limits; a field it did not send (an older server) keeps the default."""
    return Limits(
        **{
            field.name: getattr(message, field.name) or getattr(DEFAULT_LIMITS, field.name)
            for field in fields(Limits)
        }
    )
