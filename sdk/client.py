"""The SDK's connection to a runhistory server: channels, retries and error conversion.

Every RPC of the SDK goes through `call` (unary) or `stream` (server streaming). Both retry
UNAVAILABLE and DEADLINE_EXCEEDED with exponential backoff for a bounded total time, and turn
a `grpc.RpcError` into the domain error class of the same status name, keeping the server's
message. A server that stays unreachable ends in `ConnectionFailed`.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from runhistory.domain import errors
from runhistory.domain.errors import RunHistoryError
from runhistory.protos import runhistory_pb2_grpc as pb_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# How long a call keeps retrying transient failures, in total (RUNHISTORY_RETRY_SECONDS).
DEFAULT_RETRY_SECONDS = 30.0
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 2.0

TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
CONNECTING = frozenset({grpc.StatusCode.UNAVAILABLE})
CLIENT_DEADLINE = "Deadline Exceeded"  # grpc's details when the client's own deadline passed

T = TypeVar("T")


class ConnectionFailed(RunHistoryError):
    """The server could not be reached, even after retrying."""

    code = "UNAVAILABLE"


class Unauthenticated(RunHistoryError):
    code = "UNAUTHENTICATED"


class PermissionDenied(RunHistoryError):
    code = "PERMISSION_DENIED"


class Cancelled(RunHistoryError):
    code = "CANCELLED"


_ERRORS: dict[str, type[RunHistoryError]] = {
    cls.code: cls
    for cls in (
        errors.InvalidArgument,
        errors.NotFound,
        errors.AlreadyExists,
        errors.OutOfRange,
        errors.FailedPrecondition,
        errors.Aborted,
        errors.ResourceExhausted,
        errors.DeadlineExceeded,
        ConnectionFailed,
        Unauthenticated,
        PermissionDenied,
        Cancelled,
    )
}


def resolve_address(address: str | None = None) -> str:
    """The address argument, else $RUNHISTORY_ADDRESS, else 127.0.0.1:50051."""
    return address or os.environ.get("RUNHISTORY_ADDRESS") or DEFAULT_ADDRESS


def retry_seconds() -> float:
    text = os.environ.get("RUNHISTORY_RETRY_SECONDS")
    if not text:
        return DEFAULT_RETRY_SECONDS
    try:
        return max(0.0, float(text))
    except ValueError:
        raise errors.InvalidArgument(
            f"RUNHISTORY_RETRY_SECONDS is {text!r}: use a number of seconds >= 0"
        ) from None


CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Reconnect quickly after a server restart instead of gRPC's default (up to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def open_channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)


class Connection:
    """A channel and a RunHistory stub for one address."""

    def __init__(self, address: str | None = None) -> None:
        self.address = resolve_address(address)
        self.channel = open_channel(self.address)
        self.stub = pb_grpc.RunHistoryStub(self.channel)

    def close(self) -> None:
        self.channel.close()


# ---- read your writes -------------------------------------------------------------------

_positions: dict[str, int] = {}
_positions_lock = threading.Lock()


def note_position(address: str, position: int) -> None:
    """Remember that a write to `address` was acknowledged at `position`."""
    if position > _positions.get(address, 0):
        with _positions_lock:
            if position > _positions.get(address, 0):
                _positions[address] = position


def written_position(address: str) -> int:
    """The highest position any write of this process to `address` was acknowledged at."""
    return _positions.get(address, 0)


# ---- errors and retries -----------------------------------------------------------------


def error_from_rpc(error: grpc.RpcError) -> RunHistoryError:
    """The domain error of the same status name, with the server's message."""
    code = error.code() if hasattr(error, "code") else None
    name = code.name if code is not None else "UNKNOWN"
    message = (error.details() if hasattr(error, "details") else None) or str(error)
    cls = _ERRORS.get(name)
    if cls is errors.FailedPrecondition:
        if "superseded" in message:
            cls = errors.Superseded
        elif "resume it first" in message:
            cls = errors.RunNotRunning
    if cls is None:
        converted = RunHistoryError(message)
        converted.code = name
        return converted
    return cls(message)


def _give_up(error: grpc.RpcError, address: str | None, attempts: int) -> RunHistoryError:
    converted = error_from_rpc(error)
    if isinstance(converted, ConnectionFailed):
        where = f" at {address}" if address else ""
        return ConnectionFailed(
            f"cannot reach the runhistory server{where} after {attempts} attempt(s): "
            f"{converted.message}. Is the server running? Set its address with the address "
            "argument or RUNHISTORY_ADDRESS"
        )
    if isinstance(converted, errors.DeadlineExceeded) and converted.message == CLIENT_DEADLINE:
        where = f" at {address}" if address else ""
        return errors.DeadlineExceeded(
            f"the runhistory server{where} did not answer in time, {attempts} attempt(s)"
        )
    return converted


class Backoff:
    """Exponential backoff with jitter, bounded by a total time."""

    def __init__(self, total: float | None = None) -> None:
        self.total = retry_seconds() if total is None else total
        self.deadline = time.monotonic() + self.total
        self.delay = FIRST_BACKOFF
        self.attempts = 1

    def wait(self) -> bool:
        """Sleep before the next attempt; False when the time is up."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(remaining, self.delay * (0.5 + random.random() / 2)))
        self.delay = min(self.delay * 2, MAX_BACKOFF)
        self.attempts += 1
        return True


def is_transient(error: grpc.RpcError, retries: frozenset[grpc.StatusCode] = TRANSIENT) -> bool:
    """Worth retrying: the server was unreachable, or the call ran out of its own time. A
    DEADLINE_EXCEEDED the server decided (its message says why) is final."""
    code = error.code()
    if code not in retries:
        return False
    return code != grpc.StatusCode.DEADLINE_EXCEEDED or error.details() == CLIENT_DEADLINE


def call(
    fn: Callable[..., T],
    request: Any,
    *,
    retries: frozenset[grpc.StatusCode] = TRANSIENT,
    timeout: float | None = 60.0,
    retry_for: float | None = None,
    address: str | None = None,
) -> T:
    """Call a unary RPC; retry the `retries` status codes for at most `retry_for` seconds
    (default $RUNHISTORY_RETRY_SECONDS or 30). Raises the domain error of the final status.

    Only requests that are safe to repeat may be retried on DEADLINE_EXCEEDED: reads, and
    writes carrying a writer's sequence number (the server applies those once).
    """
    backoff = Backoff(retry_for)
    while True:
        try:
            return fn(request, timeout=timeout)
        except grpc.RpcError as error:
            if is_transient(error, retries) and backoff.wait():
                continue
            raise _give_up(error, address, backoff.attempts) from None


def stream(
    fn: Callable[..., Iterator[T]],
    request: Any,
    *,
    retry_for: float | None = None,
    address: str | None = None,
    resume: Callable[[Any, T], Any] | None = None,
) -> Iterator[T]:
    """Iterate a server-streaming RPC, converting errors. A transient failure before the
    first message is retried; after it, only if `resume(request, last)` gives the request
    that continues after the last message received."""
    backoff: Backoff | None = None
    last: T | None = None
    while True:
        responses = fn(request)
        try:
            for response in responses:
                last = response
                backoff = None
                yield response
            return
        except grpc.RpcError as error:
            backoff = backoff or Backoff(retry_for)
            restartable = last is None or resume is not None
            if is_transient(error) and restartable and backoff.wait():
                if last is not None and resume is not None:
                    request = resume(request, last)
                continue
            raise _give_up(error, address, backoff.attempts) from None
        finally:
            responses.cancel()
