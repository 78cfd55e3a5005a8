"""The W&B API's HTTP routes, mounted by the web server on its own address.

| route | answer |
|---|---|
| `POST /graphql` | GraphQL, see `graphql.py`; a refused operation is a 200 with `errors` |
| `POST /files/{entity}/{project}/{run}/file_stream` | see `file_stream.py` |
| `POST /sdk/...` (the SDK's telemetry probe) | 404, which turns the SDK's telemetry off |

Statuses follow what the SDK does with them: it retries a 5xx or a 429 for minutes
(GraphQL) or days (file_stream), and gives up at once on a 400, 401, 403, 404 or 409. So a
request is refused with a 4xx only when it must be (a bad key, a refused write, a fenced
session, a malformed post), and a 503 is kept for what a retry can fix.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from runhistory.domain.errors import RunHistoryError
from runhistory.service.database_errors import refusal_for
from runhistory.service.runs import RunService
from runhistory.service.wandb.caller import authenticate
from runhistory.service.wandb.file_stream import FileStream
from runhistory.service.wandb.graphql import GraphQL, errors
from runhistory.service.web.access import Access
from runhistory.service.web.api import encode
from runhistory.service.web.server import Response

log = logging.getLogger(__name__)

# The SDK splits its file_stream posts at about 10 MiB; configs and GraphQL stay far below.
MAX_BODY_BYTES = 32 * 1024 * 1024

# Domain error codes as file_stream statuses. None is 5xx or 429: the SDK would retry it
# for days, so refusals use the statuses it gives up on, and only ABORTED (a write
# conflict that a retry resolves) and UNAVAILABLE ask for a retry.
FILE_STREAM_STATUS = {
    "INVALID_ARGUMENT": 400,
    "OUT_OF_RANGE": 400,
    "RESOURCE_EXHAUSTED": 413,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 409,
    "ABORTED": 503,
    "UNAVAILABLE": 503,  # a busy server
}


class WandbApp:
    def __init__(self, service: RunService, access: Access) -> None:
        self.access = access
        self.graphql = GraphQL(service)
        self.file_stream = FileStream(service)

    @staticmethod
    def serves(method: str, path: str) -> bool:
        if method != "POST":
            return False
        parts = path.split("/")
        return path == "/graphql" or parts[1:2] == ["sdk"] or _file_stream_run(parts) is not None

    def handle(self, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        parts = path.split("/")
        if parts[1:2] == ["sdk"]:
            return _json({"error": "no telemetry is collected here"}, 404)
        try:
            caller = authenticate(self.access, headers)
            if path == "/graphql":
                # Refusals of an operation are GraphQL errors in a 200, inside `execute`.
                return _json(self.graphql.execute(caller, body), 200)
            entity, project, run_id = _file_stream_run(parts) or ("", "", "")
            return _json(self.file_stream.post(caller, entity, project, run_id, body), 200)
        except RunHistoryError as error:
            log.info("W&B API request %s refused: %s", path, error.message)
            status = FILE_STREAM_STATUS.get(error.code, 400)
            if path == "/graphql":
                return _json(errors(error.message, error.code), status)
            return _json({"error": {"code": error.code, "message": error.message}}, status)
        except Exception as error:
            # The database may be down, full or read-only: a retry keeps the SDK's data
            # until it is back.
            found = refusal_for(error)
            if found is not None:
                log.warning("W&B API request %s refused: %s", path, found.message)
                return _json({"error": {"code": found.code, "message": found.message}}, 503)
            log.exception("unexpected error serving the W&B API request %s", path)
            return _json({"error": {"code": "UNAVAILABLE", "message": "retry later"}}, 503)


def _file_stream_run(parts: list[str]) -> tuple[str, str, str] | None:
    if len(parts) == 6 and parts[1] == "files" and parts[5] == "file_stream":
        return unquote(parts[2]), unquote(parts[3]), unquote(parts[4])
    return None


def _json(document: Any, status: int) -> Response:
    return Response(status, "application/json", encode(document), {"Cache-Control": "no-store"})
