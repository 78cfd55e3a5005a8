"""The SDK's connection to a runhistory server: channels, retries and error conversion.

Every RPC of the SDK goes through `call` (unary) or `stream` (server streaming). Both retry
UNAVAILABLE, DEADLINE_EXCEEDED and a full disk on the server (RESOURCE_EXHAUSTED, reason
DISK_FULL) with exponential backoff for a bounded total time, and turn
a `grpc.RpcError` into the domain error class of the same status name, keeping the server's
message. A server that stays unreachable ends in `ConnectionFailed`.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

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
T_co = TypeVar("T_co", covariant=True)


class ResponseStream(Protocol[T_co]):
    """What a server-streaming RPC returns: the responses, and the call to cancel."""

    def __iter__(self) -> Iterator[T_co]: ...

    def cancel(self) -> bool: ...


class ConnectionFailed(errors.Unavailable):
    """The server could not be reached, even after retrying."""


class Cancelled(RunHistoryError):
    code = "CANCELLED"


# The classes a refusal can be raised as: by the reason the server attached to it, else
# (a status gRPC made itself: unreachable, deadline, size limit) by its status code.
_REFUSALS: tuple[type[RunHistoryError], ...] = (
    *(
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, RunHistoryError)
    ),
    ConnectionFailed,
    Cancelled,
)
_BY_REASON: dict[str, type[RunHistoryError]] = {cls.reason: cls for cls in _REFUSALS}
# A code's own class: the one whose reason is the code.
_BY_CODE: dict[str, type[RunHistoryError]] = {
    cls.code: cls for cls in _REFUSALS if cls.reason == cls.code
}


def resolve_address(address: str | None = None) -> str:
    """The address argument, else $RUNHISTORY_ADDRESS, else 127.0.0.1:50051."""
    return address or os.environ.get("RUNHISTORY_ADDRESS") or DEFAULT_ADDRESS


def default_entity() -> str:
    """The entity of a run named without one: $RUNHISTORY_ENTITY, else "": the API key's
    entity, which the server fills in ("default" on a server without keys), as W&B takes
    the account's default entity."""
    return os.environ.get("RUNHISTORY_ENTITY") or ""


def default_project() -> str:
    """The project of a run named without one: $RUNHISTORY_PROJECT, else "uncategorized"."""
    return os.environ.get("RUNHISTORY_PROJECT") or "uncategorized"


def init_target(entity: str | None, project: str | None) -> tuple[str, str]:
    """The entity and project `init` sends. One left out (None) is $RUNHISTORY_ENTITY or
    $RUNHISTORY_PROJECT; else the entity is sent empty, which the server reads as the API
    key's entity (as W&B uses the account's default entity; "default" on a server without
    keys), and the project is "uncategorized". An empty string is refused: it is a
    mistake, not a wish for the default."""
    for kind, given, default in (
        ("entity", entity, "your API key's entity"),
        ("project", project, "$RUNHISTORY_PROJECT or 'uncategorized'"),
    ):
        if given is not None and (not isinstance(given, str) or not given.strip()):
            raise errors.InvalidArgument(
                f"{kind} {given!r} is empty: give {errors.a_or_an(kind)} name, or leave "
                f"{kind} out (None) for {default}"
            )
    return default_entity() if entity is None else entity, project or default_project()


def run_url(web_url: str, address: str, path: str) -> str | None:
    """The web UI's page of the run, W&B's `/<entity>/<project>/runs/<id>`; None when the
    server serves no web UI. A web UI listening on every interface is reached at the host
    the client reaches the server by."""
    if not web_url:
        return None
    scheme, _, host_port = web_url.partition("://")
    host, _, port = host_port.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::", ""):
        host = address.rpartition(":")[0] or "127.0.0.1"
    entity, project, run_id = path.split("/")
    return f"{scheme}://{host}:{port}/{entity}/{project}/runs/{run_id}"


def retry_seconds() -> float:
    return env_seconds("RUNHISTORY_RETRY_SECONDS", DEFAULT_RETRY_SECONDS)


def env_seconds(variable: str, default: float) -> float:
    """A number of seconds >= 0 from the environment variable, else `default`."""
    text = os.environ.get(variable)
    if not text:
        return default
    try:
        return max(0.0, float(text))
    except ValueError:
        raise errors.InvalidArgument(
            f"{variable} is {text!r}: use a number of seconds >= 0"
        ) from None


CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Reconnect quickly after a server restart instead of gRPC's default (up to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


@dataclass(frozen=True)
class Credentials:
    """What the SDK shows the server: an API key (sent as `authorization: Bearer KEY`) and,
    for TLS, the CA to trust and optionally a client certificate, as PEM file paths."""

    api_key: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @classmethod
    def resolve(
        cls,
        api_key: str | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
    ) -> Credentials:
        """The arguments, else $RUNHISTORY_API_KEY, $RUNHISTORY_TLS_CA, $RUNHISTORY_TLS_CERT
        and $RUNHISTORY_TLS_KEY."""

        def pick(value: Any, variable: str) -> str | None:
            chosen = value if value is not None else os.environ.get(variable)
            return str(chosen) if chosen else None

        made = cls(
            api_key=pick(api_key, "RUNHISTORY_API_KEY"),
            tls_ca=pick(tls_ca, "RUNHISTORY_TLS_CA"),
            tls_cert=pick(tls_cert, "RUNHISTORY_TLS_CERT"),
            tls_key=pick(tls_key, "RUNHISTORY_TLS_KEY"),
        )
        if (made.tls_cert is None) != (made.tls_key is None):
            raise errors.InvalidArgument(
                "a client certificate needs both tls_cert and tls_key (or RUNHISTORY_TLS_CERT "
                "and RUNHISTORY_TLS_KEY)"
            )
        if made.tls_cert is not None and made.tls_ca is None:
            raise errors.InvalidArgument(
                "a client certificate is only sent over TLS: set tls_ca or RUNHISTORY_TLS_CA"
            )
        return made

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        if self.tls_ca is None:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read_pem(self.tls_ca, "tls_ca"),
            private_key=_read_pem(self.tls_key, "tls_key") if self.tls_key else None,
            certificate_chain=_read_pem(self.tls_cert, "tls_cert") if self.tls_cert else None,
        )


def _read_pem(path: str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as error:
        raise errors.InvalidArgument(f"cannot read {what} {path!r}: {error.strerror}") from None


class _BearerKey(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the API key to every call's metadata, over plaintext and TLS alike."""

    def __init__(self, api_key: str) -> None:
        self.metadata = (("authorization", f"Bearer {api_key}"),)

    def _with_key(self, details: Any) -> Any:
        return details._replace(metadata=(*(details.metadata or ()), *self.metadata))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_key(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_key(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_key(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_key(details), requests)


def open_channel(address: str, credentials: Credentials | None = None) -> grpc.Channel:
    credentials = credentials or Credentials()
    tls = credentials.channel_credentials()
    if tls is None:
        channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    else:
        channel = grpc.secure_channel(address, tls, options=CHANNEL_OPTIONS)
    if credentials.api_key:
        channel = grpc.intercept_channel(channel, _BearerKey(credentials.api_key))
    return channel


class Connection:
    """A channel and a RunHistory stub for one address."""

    def __init__(self, address: str | None = None, credentials: Credentials | None = None) -> None:
        self.address = resolve_address(address)
        self.credentials = credentials or Credentials.resolve()
        self.channel = open_channel(self.address, self.credentials)
        self.stub = pb_grpc.RunHistoryStub(self.channel)

    def reopen(self) -> Connection:
        """A new connection to the same server with the same credentials."""
        return Connection(self.address, self.credentials)

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


def forget_position(address: str, position: int) -> None:
    """Forget `position` for `address`, unless a later write has raised it since."""
    with _positions_lock:
        if _positions.get(address) == position:
            del _positions[address]


def written_position(address: str) -> int:
    """The highest position any write of this process to `address` was acknowledged at."""
    return _positions.get(address, 0)


# ---- errors and retries -----------------------------------------------------------------


def error_from_rpc(error: grpc.RpcError) -> RunHistoryError:
    """The domain error of the refusal's reason (else of its status code), with the server's
    message; a reason this SDK does not know keeps the class of its status code."""
    code = error.code() if hasattr(error, "code") else None
    name = code.name if code is not None else "UNKNOWN"
    message = (error.details() if hasattr(error, "details") else None) or str(error)
    # Imported at the first error: grpc_status and google.rpc are a few ms of every
    # `import runhistory` otherwise.
    from runhistory.protos.status import refusal_reason

    reason = refusal_reason(error)
    cls = _BY_REASON.get(reason) if reason else None
    if cls is None or cls.code != name:
        cls = _BY_CODE.get(name, RunHistoryError)
    converted = cls(message)
    converted.code = name
    converted.reason = reason or name
    return converted


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
    """Worth retrying: the server was unreachable or busy (UNAVAILABLE, which includes a
    read-only database), its disk was full, or the call ran out of its own time. A
    DEADLINE_EXCEEDED the server decided (its message says why) is final."""
    code = error.code()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # The refusal changed nothing; only this reason is about the server, not the request.
        from runhistory.protos.status import refusal_reason

        return refusal_reason(error) == errors.DiskFull.reason
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
    fn: Callable[..., ResponseStream[T]],
    request: Any,
    *,
    retry_for: float | None = None,
    address: str | None = None,
    resume: Callable[[Any, T], Any] | None = None,
) -> Iterator[T]:
    """Iterate a server-streaming RPC, converting errors. A transient failure before the
    first message is retried; after it, only if `resume(request, last)` gives the request
    that continues after the last message received (None: nothing is left to read)."""
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
                    if request is None:
                        return
                continue
            raise _give_up(error, address, backoff.attempts) from None
        finally:
            responses.cancel()
