"""The read side of the SDK: `Api` and `ApiRun`.

Reads wait until the server's read models include every write this process had
acknowledged on the same address (read your writes), so a script that logs, finishes and
then reads sees its rows.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

from runhistory.client import (
    Connection,
    Credentials,
    call,
    default_entity,
    default_project,
    forget_position,
    run_url,
    stream,
    written_position,
)
from runhistory.domain.errors import InvalidArgument, OutOfRange
from runhistory.domain.rules import check_step_range
from runhistory.domain.series import sample
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos.codec import (
    SYSTEM_KEYS,
    chunk_rows,
    extend_columns,
    loads,
    row_from_proto,
    series_from_protos,
)

if TYPE_CHECKING:
    from runhistory.domain.listing import RunFilter

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


def _wanted_keys(keys: Sequence[str] | None) -> list[str]:
    """W&B's `keys`: a list of strings (a single string is taken as one key)."""
    wanted = _keys(keys)
    if not all(isinstance(key, str) and key for key in wanted):
        raise InvalidArgument(f"keys is a list of non-empty strings, got {keys!r}")
    return list(dict.fromkeys(wanted))


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
    min_step, max_step = check_step_range(min_step, max_step)
    return pb.HistoryRequest(
        path=path,
        keys=_keys(keys),
        min_step=min_step,
        max_step=max_step,
        own_only=bool(own_only),
        version=version or 0,
        min_position=min_position,
    )


def _resume_history(request: pb.HistoryRequest, last: pb.HistoryChunk) -> pb.HistoryRequest | None:
    """The read that continues after `last`; None when `last` reached `max_step` (a
    resumed `min_step` past it would be refused as bounds out of order)."""
    if request.HasField("max_step") and last.upto_step >= request.max_step:
        return None
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
        `project/run_id` or `run_id` is of $RUNHISTORY_ENTITY, else of the API key's
        entity, and a bare `run_id` of $RUNHISTORY_PROJECT, else "uncategorized"). Or
        one version by its immutable ID, bare or as `entity/project/ID`: the run object then
        reads that version (live or archived) and keeps reading it after later rewinds."""
        # Imported here: uuid and secrets, which identity needs, are a few ms of every
        # `import runhistory` otherwise.
        from runhistory.domain.identity import RunPath, is_version_id

        parts = path.strip("/").split("/") if isinstance(path, str) else []
        if parts and is_version_id(parts[-1]) and len(parts) in (1, 3):
            reference = "/".join(parts)  # bare: any run of the key's entity
        else:
            entity = default_entity()
            # "_" stands for the key's entity while the path is checked; the server, which
            # knows the key, fills it in for a `project/run_id`.
            run = RunPath.parse_reference(path, entity or "_", default_project())
            named = entity or len(parts) >= 3
            reference = str(run) if named else f"{run.project}/{run.run_id}"
        request = pb.RunRequest(path=reference, min_position=self._min_position())
        info = self._call("GetRun", request)
        return ApiRun(self, info, pinned=reference != info.path)

    def runs(
        self,
        path: str | None = None,
        filters: Mapping[str, Any] | None = None,
        order: str = "+created_at",
        per_page: int = 50,
        cursor: str | None = None,
    ) -> Runs:
        """The runs of a project, `entity/project` (a bare `project` uses the default
        entity; none: the default entity and project), as W&B's `api.runs` gives them: a
        lazy sequence that reads a page of `per_page` runs (at most 1000) at a time.

        `order`: "+created_at" (oldest first), "-created_at", "+updated_at" or
        "-updated_at". `filters`: W&B's MongoDB-style filters, the subset of
        `{"state": S or {"$in": [...]}}`, `{"tags": T or {"$in": [...]}}` (any of),
        `{"display_name": N or {"$regex": R}}` (the run's name) and `{"name": ID or
        {"$regex": R}}` (the run ID), combined directly or in an `{"$and": [...]}`;
        anything else raises InvalidArgument. `cursor`: start after the runs a listing with
        the same options had read (its `cursor`)."""
        from runhistory.domain.listing import check_order, check_page_size, from_mongo

        entity, project = _project_path(path)
        return Runs(
            self,
            entity,
            project,
            from_mongo(filters),
            check_order(order),
            check_page_size(per_page),
            cursor or "",
        )

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
    raise InvalidArgument(
        f"invalid project path {path!r}: use 'entity/project' (or 'project', of your API "
        "key's entity)"
    )


class Runs:
    """A project's runs in order, read a page at a time as they are iterated or indexed
    (W&B's `Runs`). Each page is one ListRuns call; a page continues after the last run
    of the one before, so runs created meanwhile never shift a run into a second page.
    `len()` asks the server for the count once (one count query, no runs sent)."""

    def __init__(
        self,
        api: Api,
        entity: str,
        project: str,
        run_filter: RunFilter,
        order: str,
        per_page: int,
        cursor: str = "",
    ) -> None:
        self._api = api
        self.entity = entity
        self.project = project
        self.order = order
        self.per_page = per_page
        self._filter = run_filter
        self._loaded: list[ApiRun] = []
        self._cursor = cursor
        self._more = True
        self._total: int | None = None

    def __repr__(self) -> str:
        entity = self.entity or "(the key's entity)"
        return f"<runhistory.Runs {entity}/{self.project} ({self.order})>"

    def _request(self, cursor: str = "", page_size: int = 0, total: bool = False) -> Any:
        given = self._filter
        return pb.ListRunsRequest(
            entity=self.entity,
            project=self.project,
            min_position=self._api._min_position(),
            page_size=page_size or self.per_page,
            cursor=cursor,
            order=self.order,
            filter=pb.RunFilter(
                states=given.states,
                tags=given.tags,
                run_id=given.run_id,
                run_id_regex=given.run_id_regex,
                name=given.name,
                name_regex=given.name_regex,
            ),
            with_total=total,
        )

    def next_page(self) -> list[ApiRun]:
        """Read the next page and return its runs (none once every page is read)."""
        if not self._more:
            return []
        response = self._api._call("ListRuns", self._request(self._cursor))
        page = [ApiRun(self._api, info) for info in response.runs]
        self._loaded.extend(page)
        self._cursor = response.next_cursor
        self._more = bool(response.next_cursor)
        return page

    @property
    def cursor(self) -> str | None:
        """Continues after the runs read so far (`Api.runs(..., cursor=)`); None once every
        page is read."""
        return self._cursor if self._more else None

    def __iter__(self) -> Iterator[ApiRun]:
        index = 0
        while True:
            while index < len(self._loaded):
                yield self._loaded[index]
                index += 1
            if not self.next_page():
                return

    def __len__(self) -> int:
        if not self._more:
            return len(self._loaded)
        if self._total is None:
            response = self._api._call("ListRuns", self._request(page_size=1, total=True))
            self._total = response.total
        return self._total

    def __bool__(self) -> bool:
        return bool(self._loaded or self.next_page())

    @overload
    def __getitem__(self, index: int) -> ApiRun: ...

    @overload
    def __getitem__(self, index: slice) -> list[ApiRun]: ...

    def __getitem__(self, index: int | slice) -> ApiRun | list[ApiRun]:
        # How many runs must be read: all of them for an index from the end.
        needed = index.stop if isinstance(index, slice) else index + 1
        if needed is None or needed <= 0:
            while self.next_page():
                pass
        else:
            while len(self._loaded) < needed and self.next_page():
                pass
        return self._loaded[index]


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
        self.notes: str | None = info.notes or None
        self.group: str | None = info.group or None
        self.job_type: str | None = info.job_type or None
        self.state: str = info.state
        self.version: int = info.version
        # The immutable ID of `version`: the live one's, or the one this object was opened by.
        self.immutable_id: str = info.immutable_id
        self.archived: bool = info.archived
        self.last_step: int | None = _optional(info, "last_step")
        # W&B's created_at: an ISO 8601 time in UTC; the same in seconds since the epoch.
        self.creation_time: float = info.created_at
        self.created_at: str = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.created_at))
        self.updated_at: float = info.updated_at
        self.exit_code: int | None = _optional(info, "exit_code")
        self.url: str | None = run_url(info.web_url, self._api.address, info.path)

    @property
    def lastHistoryStep(self) -> int:
        """The last step of the history, -1 when it has none (W&B's)."""
        return -1 if self.last_step is None else self.last_step

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
        keys: Sequence[str] | None = None,
        page_size: int = 1000,
        min_step: int | None = None,
        max_step: int | None = None,
        *,
        own_only: bool = False,
        version: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every row in step order, each with `_step`, `_timestamp`, `_runtime` and the
        values, as W&B's: with `keys`, only the rows that hold every key (and only those
        keys); `min_step` included, `max_step` excluded. A fork's inherited rows come first
        unless `own_only`; `version` reads an archived version. The server sends rows in
        chunks of its own size, so `page_size` has no effect."""
        min_step, max_step = check_step_range(min_step, max_step)
        wanted = _wanted_keys(keys)
        upto = None if max_step is None else max_step - 1
        if upto is not None and upto < (min_step or 0):
            return
        for rows in self._history_chunks(wanted, min_step, upto, own_only, version):
            if wanted:
                rows = [row for row in rows if all(key in row for key in wanted)]
            yield from rows

    def history(
        self,
        samples: int = 500,
        keys: Sequence[str] | None = None,
        x_axis: str = "_step",
        pandas: bool = True,
        stream: str = "default",
        *,
        own_only: bool = False,
        version: int | None = None,
    ) -> Any:
        """W&B's sampled history: at most `samples` rows, evenly spread over the run (the
        first and the last among them); with `keys`, only the rows that hold every key, with
        those keys and `x_axis`. A pandas DataFrame when pandas is installed, else (or with
        `pandas=False`) a list of dicts. `scan_history` reads every row; `history_columns`
        every row as columns, fastest."""
        if stream != "default":
            raise InvalidArgument(f"stream {stream!r}: only the 'default' stream is kept here")
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise InvalidArgument(f"samples is an integer >= 1, got {samples!r}")
        wanted = _wanted_keys(keys)
        rows: list[dict[str, Any]] = []
        if wanted:
            # W&B's rule: the rows holding every key, the x axis among them.
            shown = list(dict.fromkeys([x_axis, *wanted]))
            asked = [key for key in shown if key not in SYSTEM_KEYS]
            for chunk in self._history_chunks(asked, None, None, own_only, version):
                rows += [
                    {key: row[key] for key in shown}
                    for row in chunk
                    if all(key in row for key in shown)
                ]
        else:
            for chunk in self._history_chunks(None, None, None, own_only, version):
                rows += chunk  # a chunk at a time: a generator step per row cost 15% of a read
        rows = sample(rows, samples)
        if not pandas:
            return rows
        try:
            import pandas as pd
        except ImportError:
            warnings.warn(
                "history() returns a list of dicts: pandas is not installed (pass "
                "pandas=False to ask for the list)",
                stacklevel=2,
            )
            return rows
        return pd.DataFrame.from_records(rows)

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
        columns: dict[str, list[Any]] = {}
        for chunk in self._history_stream(keys, min_step, max_step, own_only, version):
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
        for chunk in self._history_stream(keys, min_step, max_step, own_only, version):
            yield chunk_rows(chunk)

    def _history_stream(
        self,
        keys: str | Sequence[str] | None,
        min_step: int | None,
        max_step: int | None,
        own_only: bool,
        version: int | None,
    ) -> Iterator[pb.HistoryChunk]:
        """The ReadHistory chunks of this run (or `version`), resumed after a dropped stream."""
        request = _history_request(
            self.path,
            keys,
            min_step,
            max_step,
            own_only,
            self._version(version),
            self._api._min_position(),
        )
        yield from self._api._stream("ReadHistory", request, resume=_resume_history)

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
