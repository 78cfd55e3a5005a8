"""Domain errors. Each names the status it maps to at the edges (gRPC, CLI), and a reason.

The codes are plain strings so the domain does not depend on grpc; the service layer
maps them to `grpc.StatusCode` members of the same name. The reason tells apart errors that
share a status (a superseded writer and a finished run are both FAILED_PRECONDITION): the
gRPC server sends it as a `google.rpc.ErrorInfo`, and the SDK raises the class of that
reason. A class that names no reason of its own has its code as its reason.
"""

from __future__ import annotations


def a_or_an(noun: str) -> str:
    """The noun with its indefinite article, for messages: "an entity", "a project"."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


class RunHistoryError(Exception):
    """Base class: a request that was refused. It changed nothing."""

    code = "INTERNAL"
    reason = "INTERNAL"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "reason" not in cls.__dict__ and "code" in cls.__dict__:
            cls.reason = cls.code

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(RunHistoryError):
    code = "INVALID_ARGUMENT"


class NotFound(RunHistoryError):
    code = "NOT_FOUND"


class AlreadyExists(RunHistoryError):
    code = "ALREADY_EXISTS"


class OutOfRange(RunHistoryError):
    code = "OUT_OF_RANGE"


class FailedPrecondition(RunHistoryError):
    code = "FAILED_PRECONDITION"


class Superseded(FailedPrecondition):
    """The writer's session was replaced by a rewind or a resume of the same run."""

    reason = "SUPERSEDED"


class RunNotRunning(FailedPrecondition):
    """Rows were logged to a run that is finished or crashed, without resuming it."""

    reason = "RUN_NOT_RUNNING"


class Aborted(RunHistoryError):
    code = "ABORTED"


class ResourceExhausted(RunHistoryError):
    code = "RESOURCE_EXHAUSTED"


class DiskFull(ResourceExhausted):
    """The server's database could not store the request: its disk is full. Retrying once
    space is freed succeeds; the SDK keeps such writes and retries them."""

    reason = "DISK_FULL"


class Unavailable(RunHistoryError):
    """The server cannot serve the request now; retrying it later may succeed."""

    code = "UNAVAILABLE"


class ServerBusy(Unavailable):
    """The request waited too long for the database (many writers at once)."""

    reason = "SERVER_BUSY"


class ReadOnlyDatabase(Unavailable):
    """The server's database refuses writes (a read-only file, mount or replica)."""

    reason = "DATABASE_READ_ONLY"


class DeadlineExceeded(RunHistoryError):
    code = "DEADLINE_EXCEEDED"


class Unauthenticated(RunHistoryError):
    """No API key, or one that is unknown, malformed or revoked."""

    code = "UNAUTHENTICATED"


class PermissionDenied(RunHistoryError):
    """A valid key asked for something outside its entity or above its role."""

    code = "PERMISSION_DENIED"
