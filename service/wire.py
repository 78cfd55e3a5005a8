"""Conversions between the domain's plain values and the gRPC messages."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from runhistory.domain.errors import InvalidArgument
from runhistory.domain.run import LogCall
from runhistory.domain.series import FLOATS, INTS, JSON, TIMESTAMP, Series, rows_of_series
from runhistory.protos import runhistory_pb2 as pb


def to_value(value: Any) -> pb.Value:
    if isinstance(value, bool):
        return pb.Value(bool_value=value)
    if isinstance(value, int):
        return pb.Value(int_value=value)
    if isinstance(value, float):
        return pb.Value(float_value=value)
    if isinstance(value, str):
        return pb.Value(string_value=value)
    raise InvalidArgument(
        f"value of type {type(value).__name__} cannot be sent; allowed: int, float, bool, str"
    )


def from_value(message: pb.Value) -> Any:
    kind = message.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument("a value is empty: set one of float, int, bool or string")
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
    """The rows of a chunk in any of its forms."""
    if chunk.series:
        return rows_of_series(series_from_protos(chunk.series))
    if chunk.rows_json:
        return json.loads(chunk.rows_json)
    return [row_from_proto(row) for row in chunk.rows]


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
