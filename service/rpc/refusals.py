"""How the gRPC edge refuses: every handler authenticates its caller, refuses a malformed
request as INVALID_ARGUMENT, and maps a domain error to the gRPC status of the same name
with the domain's message and, as a google.rpc.ErrorInfo, its reason. A failure of the
database that a retry can fix (a full disk, a read-only database, a busy server) is refused
as `database_errors.refusal_for` says. Anything else unexpected is logged here and reaches
the client as INTERNAL with a one-line message.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeVar

import grpc

from runhistory.domain.errors import InvalidArgument, RunHistoryError
from runhistory.protos.status import refusal_status
from runhistory.service.auth import Principal
from runhistory.service.database_errors import refusal_for

log = logging.getLogger(__name__)


class Authenticates(Protocol):
    """A servicer: it tells who calls from the call's context."""

    def authenticate(self, context: grpc.ServicerContext) -> Principal: ...


S = TypeVar("S", bound=Authenticates)
Request = TypeVar("Request")
Response = TypeVar("Response")


def _status_of(error: RunHistoryError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, error.code, grpc.StatusCode.INTERNAL)


@dataclass(frozen=True, slots=True)
class Malformed:
    """A request whose bytes are not a valid message of its RPC's type."""

    message_type: str
    error: str


def tolerant(message: type[Any]) -> Callable[[bytes], Any]:
    # grpc answers INTERNAL when a deserializer raises; a malformed request is the caller's
    # error, so parsing failures travel to the handler, which refuses them properly.
    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except Exception as error:
            return Malformed(message.DESCRIPTOR.full_name, str(error) or type(error).__name__)

    return parse


def well_formed(request: Request) -> Request:
    """The request as it came, unless `tolerant` could not parse it."""
    if isinstance(request, Malformed):
        raise InvalidArgument(
            f"the request is not a valid {request.message_type} message: {request.error}"
        )
    return request


def refusals(
    method: Callable[[S, Request, grpc.ServicerContext, Principal], Response],
) -> Callable[[S, Request, grpc.ServicerContext], Response]:
    """Authenticate the caller, refuse a malformed request, and map domain errors to
    statuses, for a handler that returns one response. The handler gets the caller; gRPC
    calls the handler this returns with the request and the context only."""

    @functools.wraps(method)
    def unary(self: S, request: Request, context: grpc.ServicerContext) -> Response:
        try:
            caller = self.authenticate(context)
            return method(self, well_formed(request), context, caller)
        except Exception as error:
            _abort(method.__name__, context, error)

    return unary


def stream_refusals(
    method: Callable[[S, Request, grpc.ServicerContext, Principal], Iterator[Response]],
) -> Callable[[S, Request, grpc.ServicerContext], Iterator[Response]]:
    """`refusals` for a handler that streams its responses: a refusal can come after some
    of them, so the errors are caught while the stream is read, not when it is made."""

    @functools.wraps(method)
    def streaming(self: S, request: Request, context: grpc.ServicerContext) -> Iterator[Response]:
        try:
            caller = self.authenticate(context)
            yield from method(self, well_formed(request), context, caller)
        except Exception as error:
            _abort(method.__name__, context, error)

    return streaming


def _abort(handler: str, context: grpc.ServicerContext, error: Exception) -> NoReturn:
    # Every refusal carries its reason (google.rpc.ErrorInfo) beside code and message.
    if not isinstance(error, RunHistoryError) and (found := refusal_for(error)):
        log.warning("%s refused: %s", handler, found.message)
        error = found
    if isinstance(error, RunHistoryError):
        context.abort_with_status(refusal_status(_status_of(error), error.message, error.reason))
    log.exception("unexpected error in %s", handler)
    internal = f"internal error: {type(error).__name__}: {error}"
    context.abort_with_status(
        refusal_status(grpc.StatusCode.INTERNAL, internal, RunHistoryError.reason)
    )
