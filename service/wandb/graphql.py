"""`POST /graphql`: operations dispatched by the name in their query text.

The SDK sends fixed query texts, so no schema is parsed: each operation it uses has one
resolver that answers every field its query asks for. An operation runhistory does not
serve (artifacts, sweeps, reports, ...) is answered with a GraphQL error, never a 5xx,
which the SDK would retry for minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from runhistory.domain.errors import InvalidArgument, RunHistoryError
from runhistory.service.runs import RunService
from runhistory.service.wandb.caller import Caller
from runhistory.service.wandb.protocol import parse_json, read_operation
from runhistory.service.wandb.reading import Reading
from runhistory.service.wandb.sessions import Sessions

log = logging.getLogger(__name__)

Resolver = Callable[[Caller, Mapping[str, Any]], dict[str, Any]]


class GraphQL:
    def __init__(self, service: RunService) -> None:
        sessions = Sessions(service)
        reading = Reading(service)
        self.operations: dict[str, Resolver] = {
            # wandb.init, run.log, run.finish
            "Viewer": viewer,
            "UpsertBucket": sessions.upsert_bucket,
            "RunResumeStatus": sessions.run_resume_status,
            "RewindRun": sessions.rewind_run,
            "CreateRunFiles": create_run_files,
            "ServerFeaturesQuery": server_features,
            "OrganizationCoreWeaveOrganizationID": coreweave_organization,
            # wandb.Api()
            "GetDefaultEntity": viewer,
            "Run": reading.run,
            "RunState": reading.run_state,
            "QueryRunInfo": reading.query_run_info,
            "RunFullHistory": reading.run_full_history,
            "RunSampledHistory": reading.run_sampled_history,
            "RunHistoryKeys": reading.run_history_keys,
            "RunParquetHistory": reading.run_parquet_history,
            "HistoryPage": reading.history_page,
            "SampledHistoryPage": reading.sampled_history_page,
        }

    def execute(self, caller: Caller, body: bytes) -> dict[str, Any]:
        """The GraphQL answer to a request body: `{"data": ...}` or `{"errors": [...]}`."""
        try:
            request = parse_json(body, "the GraphQL request")
            if not isinstance(request, dict) or not isinstance(request.get("query"), str):
                raise InvalidArgument('a GraphQL request is {"query": "...", "variables": {...}}')
            operation = read_operation(request["query"])
            variables = request.get("variables") or {}
            if not isinstance(variables, dict):
                raise InvalidArgument("GraphQL variables are a JSON object")
            resolver = self.operations.get(operation.name)
            if resolver is None:
                return errors(
                    f"runhistory does not serve the W&B operation {operation.name or '(unnamed)'}"
                    "; it serves logging, resume, rewind, fork and reading runs back",
                    "NOT_IMPLEMENTED",
                )
            return {"data": resolver(caller, operation.given(variables))}
        except RunHistoryError as error:
            return errors(error.message, error.code)
        except Exception:
            log.exception("unexpected error in a W&B GraphQL operation")
            return errors("internal error; the server's log has the details", "INTERNAL")


def errors(message: str, code: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": code}}], "data": None}


# ---- operations with nothing of a run to say ---------------------------------------------


def viewer(caller: Caller, _variables: Mapping[str, Any]) -> dict[str, Any]:
    """Who the key is: its entity is the default one (`Viewer`, `GetDefaultEntity`)."""
    entity = caller.entity
    return {
        "viewer": {
            "id": caller.key_id or entity,
            "entity": entity,
            "username": entity,
            "email": "",
            "flags": "{}",
            "teams": {"edges": []},
        }
    }


def create_run_files(caller: Caller, v: Mapping[str, Any]) -> dict[str, Any]:
    """No upload URLs: runhistory stores no files, and the SDK skips a file without one."""
    files = v.get("files")
    if not isinstance(files, list):
        raise InvalidArgument("files is a list of file names")
    return {
        "createRunFiles": {
            "runID": v.get("run"),
            "uploadHeaders": [],
            "files": [{"name": name, "uploadUrl": None} for name in files],
        }
    }


def server_features(_caller: Caller, _variables: Mapping[str, Any]) -> dict[str, Any]:
    """None of W&B's optional features (gzip file_stream, structured console logs, ...)."""
    return {"serverInfo": {"features": []}}


def coreweave_organization(_caller: Caller, _variables: Mapping[str, Any]) -> dict[str, Any]:
    return {"entity": {"organization": None}}
