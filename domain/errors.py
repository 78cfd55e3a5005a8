"""Domain errors. Each names the status it maps to at the edges (gRPC, CLI).

The codes are plain strings so the domain does not depend on grpc; the service layer
maps them to `grpc.StatusCode` members of the same name.
"""

from __future__ import annotations


class RunHistoryError(Exception):
    """Base class: a request that was refused. It changed nothing."""

    code = "INTERNAL"

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


class RunNotRunning(FailedPrecondition):
    """Rows were logged to a run that is finished or crashed, without resuming it."""


class Aborted(RunHistoryError):
    code = "ABORTED"


class ResourceExhausted(RunHistoryError):
    code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(RunHistoryError):
    code = "DEADLINE_EXCEEDED"


class Unauthenticated(RunHistoryError):
    """No API key, or one that is unknown, malformed or revoked."""

    code = "UNAUTHENTICATED"


class PermissionDenied(RunHistoryError):
    """A valid key asked for something outside its entity or above its role."""

    code = "PERMISSION_DENIED"
