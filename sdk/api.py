"""The read side of the SDK: `Api` and `ApiRun`.

Reads wait until the server's read models include every write this process had
acknowledged on the same address (read your writes), so a script that logs, finishes and
then reads sees its rows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from runhistory.client import (
    Connection,
    Credentials,
    call,
    default_entity,
    default_project,
    forget_position,
    stream,
    written_position,
)
from runhistory.domain.errors import InvalidArgument, OutOfRange
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos.codec import (
    chunk_rows,
    extend_columns,
    loads,
    row_from_proto,
    series_from_protos,
)

READ_TIMEOUT = 60.0

log = logging.getLogger(__name__)


def _optional(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def _forked_from(message: Any) -> dict[str, Any] | None:
    if not message.HasField("forked_from"):
        return None
    link = message.forked_from
    return {
        "run": link.run,
        "step": link.step,
        "version": link.version,
        "immutable_id": link.immutable_id,
    }


def _descendant(node: pb.Descendant) -> dict[str, Any]:
    return {
        "run": node.run,
        "source_version": node.source_version,
        "step": node.step,
        "descendants": [_descendant(child) for child in node.descendants],
    }


def _event(event: pb.Event) -> dict[str, Any]:
    return {
        "position": event.position,
        "run_uuid": event.run_uuid,
        "run_event": event.run_event,
        "type": event.type,
        "timestamp": event.timestamp,
        "payload": loads(event.payload_json) if event.payload_json else {},
    }


def _keys(keys: str | Sequence[str] | None) -> list[str]:
    if keys is None:
        return []
    if isinstance(keys, str):
        return [keys]
    return list(keys)


def _history_request(
    path: str,
    keys: str | Sequence[str] | None,
    min_step: int | None,
    max_step: int | None,
    own_only: bool,
    version: int | None,
    min_position: int = 0,
) -> pb.HistoryRequest:
    return pb.HistoryRequest(
        path=path,
        keys=_keys(keys),
        min_step=min_step,
        max_step=max_step,
        own_only=bool(own_only),
        version=version or 0,
        min_position=min_position,
    )


def _resume_history(request: pb.HistoryRequest, last: pb.HistoryChunk) -> pb.HistoryRequest:
    resumed = pb.HistoryRequest()
    resumed.CopyFrom(request)
    resumed.min_step = last.upto_step + 1
    return resumed


def _resume_events(request: pb.EventsRequest, last: pb.Event) -> pb.EventsRequest:
    return pb.EventsRequest(start=last.position, path=request.path, follow=request.follow)


class Api:
    """Read runs, their history, versions, lineage, artifacts and the event log."""

    def __init__(
        self,
        address: str | None = None,
        timeout: float = READ_TIMEOUT,
        *,
        api_key: str | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
    ) -> None:
        """`api_key` defaults to $RUNHISTORY_API_KEY; `tls_ca` (a PEM file, default
        $RUNHISTORY_TLS_CA) turns on TLS, with an optional client certificate."""
        self._connection = Connection(
            address, Credentials.resolve(api_key, tls_ca, tls_cert, tls_key)
        )
        self.address = self._connection.address
        self.timeout = timeout

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<runhistory.Api {self.address}>"

    # ---- plumbing ----------------------------------------------------------------------

    def _call(self, rpc: str, request: Any) -> Any:
        method = getattr(self._connection.stub, rpc)
        try:
            return call(method, request, timeout=self.timeout, address=self.address)
        except OutOfRange:
            fresh = self._without_stale_position(request)
            if fresh is None:
                raise
            response = call(method, fresh, timeout=self.timeout, address=self.address)
            self._forget_stale_position(request)
            return response

    def _stream(self, rpc: str, request: Any, resume: Any = None) -> Iterator[Any]:
        method = getattr(self._connection.stub, rpc)
        received = False
        try:
            for response in stream(method, request, address=self.address, resume=resume):
                received = True
                yield response
        except OutOfRange:
            fresh = None if received else self._without_stale_position(request)
            if fresh is None:
                raise
            yield from stream(method, fresh, address=self.address, resume=resume)
            self._forget_stale_position(request)

    # A read waits for the last position this process wrote to the address at. If the server
    # there now has a shorter event log (restarted on another database, or another server on
    # the same port), that position means nothing to it and it refuses the read as
    # OUT_OF_RANGE: the read is asked again without it, and the position is forgotten.

    def _without_stale_position(self, request: Any) -> Any | None:
        remembered = self._min_position()
        if not remembered or getattr(request, "min_position", 0) != remembered:
            return None
        fresh = type(request)()
        fresh.CopyFrom(request)
        fresh.min_position = 0
        return fresh

    def _forget_stale_position(self, request: Any) -> None:
        log.warning(
            "the server at %s has no event at position %d, where this process's last write "
            "to that address was acknowledged (another server or database now?): reading "
            "without waiting for it",
            self.address,
            request.min_position,
        )
        forget_position(self.address, request.min_position)

    def _min_position(self) -> int:
        return written_position(self.address)

    # ---- runs --------------------------------------------------------------------------

    def run(self, path: str) -> ApiRun:
        """A run by `entity/project/run_id` (also `entity/project/runs/run_id`; a bare
        `project/run_id` or `run_id` uses $RUNHISTORY_ENTITY and $RUNHISTORY_PROJECT). Or
        one version by its immutable ID, bare or as `entity/project/ID`: the run object then
        reads that version (live or archived) and keeps reading it after later rewinds."""
        # Imported here: uuid and secrets, which identity needs, are a few ms of every
        # `import runhistory` otherwise.
        from runhistory.domain.identity import RunPath, is_version_id

        parts = path.strip("/").split("/") if isinstance(path, str) else []
        if parts and is_version_id(parts[-1]) and len(parts) in (1, 3):
            reference = "/".join(parts)  # bare: any run of the key's entity
        else:
            reference = str(RunPath.parse_reference(path, default_entity(), default_project()))
        request = pb.RunRequest(path=reference, min_position=self._min_position())
        info = self._call("GetRun", request)
        return ApiRun(self, info, pinned=reference != info.path)

    def runs(self, path: str | None = None) -> list[ApiRun]:
        """The runs of a project, `entity/project` (a bare `project` uses the default
        entity; none: the default entity and project)."""
        entity, project = _project_path(path)
        response = self._call(
            "ListRuns",
            pb.ListRunsRequest(entity=entity, project=project, min_position=self._min_position()),
        )
        return [ApiRun(self, info) for info in response.runs]

    # ---- the event log and maintenance -------------------------------------------------

    def events(self, start: int = 0, follow: bool = False) -> Iterator[dict[str, Any]]:
        """Every run's events with position > `start`, in order; with `follow`, new events
        as they come until the iterator is closed."""
        return self._events(pb.EventsRequest(start=start, follow=follow))

    def _events(self, request: pb.EventsRequest) -> Iterator[dict[str, Any]]:
        for event in self._stream("ReadEvents", request, resume=_resume_events):
            yield _event(event)

    def rebuild(self) -> Iterator[dict[str, Any]]:
        """Drop every read model and replay the event log; yields progress, the last item
        with `done`, the `checksums` and whether they equal the live ones."""
        for progress in self._stream("Rebuild", pb.RebuildRequest()):
            yield {
                "applied": progress.applied,
                "position": progress.position,
                "target": progress.target,
                "done": progress.done,
                "checksums": dict(progress.checksums),
                "equal_to_live": progress.equal_to_live,
            }


def _project_path(path: str | None) -> tuple[str, str]:
    entity = default_entity()
    if not path:
        return entity, default_project()
    parts = path.strip("/").split("/")
    if len(parts) == 1:
        return entity, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise InvalidArgument(f"invalid project path {path!r}: use 'entity/project'")


class ApiRun:
    """A run as the server stood when it was read; `refresh()` reads it again."""

    def __init__(self, api: Api, info: pb.RunInfo, pinned: bool = False) -> None:
        """`pinned`: opened by a version's immutable ID; reads are of that version."""
        self._api = api
        self._pinned = pinned
        self._set(info)

    def _set(self, info: pb.RunInfo) -> None:
        self._info = info
        self._config: dict[str, Any] | None = None
        self._summary: dict[str, Any] | None = None
        self.path: str = info.path
        self.id: str = info.run_id
        self.entity: str = info.entity
        self.project: str = info.project
        self.name: str = info.name
        self.tags: list[str] = list(info.tags)
        self.state: str = info.state
        self.version: int = info.version
        # The immutable ID of `version`: the live one's, or the one this object was opened by.
        self.immutable_id: str = info.immutable_id
        self.archived: bool = info.archived
        self.last_step: int | None = _optional(info, "last_step")
        self.created_at: float = info.created_at
        self.updated_at: float = info.updated_at
        self.exit_code: int | None = _optional(info, "exit_code")

    def __repr__(self) -> str:
        return f"<runhistory.ApiRun {self.path} ({self.state}, version {self.version})>"

    def refresh(self) -> ApiRun:
        info = self._api._call("GetRun", self._request())
        self._set(info)
        return self

    def _version(self, version: int | None) -> int | None:
        """The version a read is of: the one asked for, or the pinned one."""
        return version or (self.version if self._pinned else None)

    def _request(self, version: int | None = None) -> pb.RunRequest:
        return pb.RunRequest(
            path=self.path,
            version=self._version(version) or 0,
            min_position=self._api._min_position(),
        )

    @property
    def forked_from(self) -> dict[str, Any] | None:
        """`{"run": path, "step": N, "version": V, "immutable_id": ID}` for a fork (the
        source version and the step this version stands on), else None."""
        return _forked_from(self._info)

    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            self._config = loads(self._api._call("GetConfig", self._request()).json)
        return self._config

    @property
    def summary(self) -> dict[str, Any]:
        if self._summary is None:
            self._summary = loads(self._api._call("GetSummary", self._request()).json)
        return self._summary

    # ---- history ------------------------------------------------------------------------

    def scan_history(
        self,
        keys: str | Sequence[str] | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
        own_only: bool = False,
        version: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Rows in step order, each with `_step`, `_timestamp`, `_runtime` and the values. A
        fork's inherited rows come first unless `own_only`; `version` reads an archived
        version."""
        for rows in self._history_chunks(keys, min_step, max_step, own_only, version):
            yield from rows

    def history(
        self,
        keys: str | Sequence[str] | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
        own_only: bool = False,
        version: int | None = None,
    ) -> list[dict[str, Any]]:
        """`scan_history` as a list."""
        rows: list[dict[str, Any]] = []
        for chunk in self._history_chunks(keys, min_step, max_step, own_only, version):
            rows += chunk  # a chunk at a time: a generator step per row cost 15% of a read
        return rows

    def history_columns(
        self,
        keys: str | Sequence[str] | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
        own_only: bool = False,
        version: int | None = None,
    ) -> dict[str, list[Any]]:
        """The rows of `history` column by column, as `pandas.DataFrame(...)` takes them:
        `{"_step": [...], "_timestamp": [...], "_runtime": [...], key: [...]}`, every list
        one entry per row, None where a row lacks the key. Several times faster than rows
        for long histories: no object is built per row."""
        request = _history_request(
            self.path,
            keys,
            min_step,
            max_step,
            own_only,
            self._version(version),
            self._api._min_position(),
        )
        columns: dict[str, list[Any]] = {}
        for chunk in self._api._stream("ReadHistory", request, resume=_resume_history):
            extend_columns(columns, series_from_protos(chunk.series))
        return columns

    def _history_chunks(
        self,
        keys: str | Sequence[str] | None,
        min_step: int | None,
        max_step: int | None,
        own_only: bool,
        version: int | None,
    ) -> Iterator[list[dict[str, Any]]]:
        request = _history_request(
            self.path,
            keys,
            min_step,
            max_step,
            own_only,
            self._version(version),
            self._api._min_position(),
        )
        for chunk in self._api._stream("ReadHistory", request, resume=_resume_history):
            yield chunk_rows(chunk)

    # ---- versions, lineage, artifacts, events ------------------------------------------

    def versions(self) -> list[dict[str, Any]]:
        """Every version, oldest first; all but the last are archived by rewinds."""
        response = self._api._call("ListVersions", self._request())
        return [
            {
                "version": v.version,
                "archived": v.archived,
                "rewound_to_step": _optional(v, "rewound_to_step"),
                "started_at": v.started_at,
                "archived_at": _optional(v, "archived_at"),
                "state": v.state,
                "last_step": _optional(v, "last_step"),
                "rows": v.rows,
                "summary": loads(v.summary_json) if v.summary_json else {},
                "config": loads(v.config_json) if v.config_json else {},
                "immutable_id": v.immutable_id,
            }
            for v in response.versions
        ]

    def lineage(self) -> dict[str, Any]:
        """Ancestors (nearest first), versions and the tree of descendants."""
        tree = self._api._call("GetLineage", self._request())
        return {
            "run": tree.run,
            "version": tree.version,
            "immutable_id": tree.immutable_id,
            "ancestors": [
                {"run": a.run, "version": a.version, "step": a.step, "immutable_id": a.immutable_id}
                for a in tree.ancestors
            ],
            "versions": [
                {
                    "version": v.version,
                    "archived": v.archived,
                    "rewound_to_step": _optional(v, "rewound_to_step"),
                    "immutable_id": v.immutable_id,
                }
                for v in tree.versions
            ],
            "descendants": [_descendant(d) for d in tree.descendants],
        }

    def artifacts(self, version: int | None = None) -> list[dict[str, Any]]:
        """Artifacts the run produced and used, each with the run version that recorded it
        (of every version, or of the given one)."""
        response = self._api._call("ListArtifacts", self._request(version))
        return [
            {
                "position": a.position,
                "version": a.version,
                "direction": a.direction,
                "name": a.name,
                "type": a.type,
                "digest": a.digest,
                "size": a.size,
                "uri": a.uri,
                "recorded_at": a.recorded_at,
            }
            for a in response.artifacts
        ]

    def events(self, start: int = 0, follow: bool = False) -> Iterator[dict[str, Any]]:
        """This run's events with position > `start`, in order."""
        return self._api._events(pb.EventsRequest(start=start, path=self.path, follow=follow))

    def as_of(
        self,
        position: int | None = None,
        time: float | None = None,
        keys: str | Sequence[str] | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
        own_only: bool = False,
    ) -> dict[str, Any]:
        """History rows, summary and config as they stood at an event position or a time
        (seconds since the epoch): give exactly one."""
        if (position is None) == (time is None):
            raise InvalidArgument("give exactly one of position and time for an as-of query")
        request = pb.AsOfRequest(
            path=self.path,
            position=position,
            time=time,
            history=_history_request(self.path, keys, min_step, max_step, own_only, None),
        )
        response = self._api._call("AsOf", request)
        return {
            "rows": [row_from_proto(row) for row in response.rows],
            "summary": loads(response.summary_json) if response.summary_json else {},
            "config": loads(response.config_json) if response.config_json else {},
        }


__all__ = ["Api", "ApiRun"]
