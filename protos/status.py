"""Refusals on the wire, shared by the server and the SDK: a gRPC status whose details hold
the standard `google.rpc.ErrorInfo` with the domain error's reason.

The status code and message are those of the domain error; the reason tells apart refusals
that share a code (SUPERSEDED and RUN_NOT_RUNNING are both FAILED_PRECONDITION), so a client
never has to read the message to know which it got. Statuses made by gRPC itself (an
unreachable server, a deadline, a message over the size limit) carry no reason.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "runhistory"


def refusal_status(code: grpc.StatusCode, message: str, reason: str) -> grpc.Status:
    """The status to abort a call with: `code`, `message`, and an ErrorInfo of `reason`."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=[info])
    )


def refusal_reason(error: grpc.RpcError) -> str | None:
    """The reason of a runhistory refusal, or None for a status without one."""
    if not hasattr(error, "trailing_metadata"):
        return None
    try:
        # grpc's stubs keep RpcError and Call apart; the errors of a call are both.
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:  # details that do not match the status: not ours
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN:
                return info.reason
    return None
