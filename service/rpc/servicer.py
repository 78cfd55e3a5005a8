"""The gRPC servicer: the RunHistory RPCs over the run service.

Every RPC first authenticates its caller's API key (unless the server runs without keys)
and checks that the key may act on the runs the request names (`refusals.py` maps what it
refuses to statuses); `mapping.py` turns requests into the service's arguments and its
results into messages.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator

import grpc

from runhistory.domain.errors import InvalidArgument, ResourceExhausted
from runhistory.domain.identity import (
    BranchPoint,
    RunPath,
    VersionRef,
    check_name,
    parse_run_or_version,
)
from runhistory.projections.runner import Progress
from runhistory.protos import codec
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos import runhistory_pb2_grpc as pb_grpc
from runhistory.service.auth import LOCAL_OPERATOR, KeyStore, Principal, Role, bearer_key
from runhistory.service.rpc import mapping
from runhistory.service.rpc.refusals import refusals, stream_refusals, well_formed
from runhistory.service.runs import Details, RunService

FOLLOW_POLL_SECONDS = 0.1


def _path(text: str) -> RunPath:
    if not text:
        raise InvalidArgument("the request names no run: set path to 'entity/project/run_id'")
    return RunPath.parse(text)


# What a request does to the runs it names: the role it needs and the verb for refusals.
READ = (Role.READER, "read")
WRITE = (Role.WRITER, "write to")


def _allowed(caller: Principal, text: str, access: tuple[Role, str]) -> RunPath:
    """The run a request names, once the caller may access it that way."""
    path = _path(text)
    caller.require(path.entity, *access)
    return path


class RunHistoryServicer(pb_grpc.RunHistoryServicer):
    def __init__(self, service: RunService, keys: KeyStore | None) -> None:
        """`keys=None`: a server without keys, where every caller is the local operator."""
        self.service = service
        self.keys = keys
        # Set when the server stops: followers leave before the stores close under them.
        self.stopping = threading.Event()
        self.open_streams = threading.BoundedSemaphore(service.settings.max_open_streams)
        # The web UI's address (scheme://host:port) when this process serves one, set once
        # it listens: sessions and run infos tell it, so clients can link to a run's page.
        self.web_url = ""

    def authenticate(self, context: grpc.ServicerContext) -> Principal:
        if self.keys is None:
            return LOCAL_OPERATOR
        metadata = dict(context.invocation_metadata())
        authorization = metadata.get("authorization")
        # Only the values of keys ending in "-bin" are bytes: this one is text.
        header = authorization if isinstance(authorization, str) else None
        return self.keys.authenticate(bearer_key(header))

    @contextlib.contextmanager
    def _long_stream(self) -> Iterator[None]:
        """Hold one of the slots for streams that stay open as long as the client likes."""
        if not self.open_streams.acquire(blocking=False):
            limit = self.service.settings.max_open_streams
            raise ResourceExhausted(
                f"this server already has {limit} open log or follow streams "
                "(max_open_streams); close one or retry later"
            )
        try:
            yield
        finally:
            self.open_streams.release()

    def _located(
        self,
        caller: Principal,
        ref: RunPath | VersionRef,
        access: tuple[Role, str],
        min_position: int | None = None,
    ) -> tuple[RunPath, int | None]:
        """The run (and version, for an immutable ID) a request names, once the caller may
        access it that way. A bare immutable ID is looked for among the runs of the key's
        entity only, so a miss says nothing about other entities."""
        if isinstance(ref, RunPath):
            caller.require(ref.entity, *access)
            return ref, None
        if ref.entity is not None:
            caller.require(ref.entity, *access)
        path, version = self.service.resolve_version(
            ref, within_entity=caller.entity, min_position=min_position
        )
        caller.require(path.entity, *access)
        return path, version

    def _read(
        self, caller: Principal, text: str, min_position: int = 0
    ) -> tuple[RunPath, int | None]:
        """A read's run, and the version its path names by immutable ID (or None). A
        `project/run_id` is a run of the key's entity, as W&B's API takes the viewer's."""
        if not text:
            raise InvalidArgument(
                "the request names no run: set path to 'entity/project/run_id' (or a "
                "version's immutable ID)"
            )
        if text.count("/") == 1:
            text = f"{caller.own_entity}/{text}"
        ref = parse_run_or_version(text)
        return self._located(caller, ref, READ, mapping.min_position(min_position))

    # ---- sessions and writes -----------------------------------------------------------

    @refusals
    def Init(
        self, request: pb.InitRequest, context: grpc.ServicerContext, caller: Principal
    ) -> pb.Session:
        branch = request.branch
        if branch.mode != pb.Branch.MODE_UNSPECIFIED and not branch.point:
            raise InvalidArgument("a branch needs a point: '<run_id>?_step=<N>'")
        if branch.point and branch.mode == pb.Branch.MODE_UNSPECIFIED:
            raise InvalidArgument("a branch needs a mode: REWIND or FORK")
        # No entity: the key's, as W&B takes the account's default entity.
        entity = check_name("entity", request.entity or caller.own_entity)
        caller.require(entity, *WRITE)
        if branch.point:
            # A fork reads its source; a rewind rewrites the run it names.
            source = BranchPoint.parse(branch.point, entity, request.project or "_")
            self._located(caller, source.run, READ if branch.mode == pb.Branch.FORK else WRITE)
        session = self.service.init(
            entity,
            request.project,
            request.run_id or None,
            name=request.name or None,
            tags=list(request.tags),
            config=codec.loads_object(request.config_json, "config_json"),
            resume=request.resume or None,
            resume_from=branch.point if branch.mode == pb.Branch.REWIND else None,
            fork_from=branch.point if branch.mode == pb.Branch.FORK else None,
            started_at=request.started_at or None,
            notes=mapping.optional(request, "notes"),
            group=mapping.optional(request, "group"),
            job_type=mapping.optional(request, "job_type"),
        )
        return mapping.session(session, self.service.limits, self.web_url)

    def _log(self, batch: pb.LogBatch, caller: Principal) -> pb.LogAck:
        path = _allowed(caller, batch.path, WRITE)
        calls = mapping.log_calls(batch)
        ack = self.service.log(
            path,
            calls,
            drop_refused=batch.drop_refused_calls,
            **mapping.write_options(batch),
        )
        return mapping.log_ack(ack, batch.seq)

    @refusals
    def Log(
        self, request: pb.LogBatch, context: grpc.ServicerContext, caller: Principal
    ) -> pb.LogAck:
        return self._log(request, caller)

    @stream_refusals
    def LogStream(
        self,
        request_iterator: Iterator[pb.LogBatch],
        context: grpc.ServicerContext,
        caller: Principal,
    ) -> Iterator[pb.LogAck]:
        limit = self.service.settings.max_stream_batches
        with self._long_stream():
            for count, batch in enumerate(request_iterator, 1):
                if count > limit:
                    raise ResourceExhausted(
                        f"a log stream carries at most {limit} batches (max_stream_batches); "
                        "the batches before were acknowledged: open a new stream for more"
                    )
                yield self._log(well_formed(batch), caller)

    @refusals
    def UpdateConfig(
        self,
        request: pb.UpdateConfigRequest,
        context: grpc.ServicerContext,
        caller: Principal,
    ) -> pb.Ack:
        ack = self.service.update_config(
            _allowed(caller, request.path, WRITE),
            codec.loads_object(request.config_json, "config_json"),
            **mapping.write_options(request),
        )
        return mapping.ack(ack)

    @refusals
    def SetSummary(
        self, request: pb.SetSummaryRequest, context: grpc.ServicerContext, caller: Principal
    ) -> pb.Ack:
        ack = self.service.set_summary(
            _allowed(caller, request.path, WRITE),
            codec.from_values(request.values),
            **mapping.write_options(request),
        )
        return mapping.ack(ack)

    @refusals
    def UpdateDetails(
        self,
        request: pb.UpdateDetailsRequest,
        context: grpc.ServicerContext,
        caller: Principal,
    ) -> pb.Ack:
        details = Details(
            name=mapping.optional(request, "name"),
            tags=list(request.tags.values) if request.HasField("tags") else None,
            notes=mapping.optional(request, "notes"),
            group=mapping.optional(request, "group"),
            job_type=mapping.optional(request, "job_type"),
        )
        ack = self.service.update_details(
            _allowed(caller, request.path, WRITE), details, **mapping.write_options(request)
        )
        return mapping.ack(ack)

    @refusals
    def DefineMetric(
        self,
        request: pb.DefineMetricRequest,
        context: grpc.ServicerContext,
        caller: Principal,
    ) -> pb.Ack:
        ack = self.service.define_metric(
            _allowed(caller, request.path, WRITE),
            request.key,
            request.summary or "last",
            **mapping.write_options(request),
        )
        return mapping.ack(ack)

    @refusals
    def RecordArtifact(
        self,
        request: pb.RecordArtifactRequest,
        context: grpc.ServicerContext,
        caller: Principal,
    ) -> pb.Ack:
        ack = self.service.record_artifact(
            _allowed(caller, request.path, WRITE),
            request.direction,
            request.name,
            request.type,
            request.digest,
            request.size,
            request.uri,
            **mapping.write_options(request),
        )
        return mapping.ack(ack)

    @refusals
    def Finish(
        self, request: pb.FinishRequest, context: grpc.ServicerContext, caller: Principal
    ) -> pb.Ack:
        ack = self.service.finish(
            _allowed(caller, request.path, WRITE),
            request.exit_code,
            **mapping.write_options(request),
        )
        return mapping.ack(ack)

    @refusals
    def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.ServicerContext, caller: Principal
    ) -> pb.HeartbeatAck:
        path = _allowed(caller, request.path, WRITE)
        if not request.writer:
            raise InvalidArgument(
                "a heartbeat names its writer: the session's writer token that Init returned"
            )
        ack = self.service.heartbeat(path, writer=request.writer)
        return mapping.heartbeat_ack(ack, self.service.settings.crash_after)

    # ---- reads -------------------------------------------------------------------------

    @refusals
    def GetRun(
        self, request: pb.RunRequest, context: grpc.ServicerContext, caller: Principal
    ) -> pb.RunInfo:
        path, named = self._read(caller, request.path, request.min_position)
        record = self.service.run(
            path,
            mapping.min_position(request.min_position),
            version=mapping.pinned_version(named, request.version),
        )
        return mapping.run_info(record, self.web_url)

    @refusals
    def ListRuns(
        self,
        request: pb.ListRunsRequest,
        context: grpc.ServicerContext,
        caller: Principal,
    ) -> pb.ListRunsResponse:
        entity = check_name("entity", request.entity or caller.own_entity)
        caller.require(entity, *READ)
        page = self.service.runs_page(entity, request.project, **mapping.listing_options(request))
        return mapping.runs_page(page, self.web_url)

    @stream_refusals
    def ReadHistory(
        self,
        request: pb.HistoryRequest,
        context: grpc.ServicerContext,
        caller: Principal,
    ) -> Iterator[pb.HistoryChunk]:
        path, named = self._read(caller, request.path, request.min_position)
        pages = self.service.scan_series(
            path,
            min_position=mapping.min_position(request.min_position),
            **mapping.history_options(request, named),
        )
        yield from mapping.history_chunks(pages)

    @refusals
    def GetSummary(
        self, request: pb.RunRequest, context: grpc.ServicerContext, caller: Principal
    ) -> pb.JsonDocument:
        path, named = self._read(caller, request.path, request.min_position)
        summary = self.service.summary(
            path,
            mapping.pinned_version(named, request.version),
            mapping.min_position(request.min_position),
        )
        return mapping.document(summary)

    @refusals
    def GetConfig(
        self, request: pb.RunRequest, context: grpc.ServicerContext, caller: Principal
    ) -> pb.JsonDocument:
        path, named = self._read(caller, request.path, request.min_position)
        config = self.service.config(
            path,
            mapping.pinned_version(named, request.version),
            mapping.min_position(request.min_position),
        )
        return mapping.document(config)

    @refusals
    def ListVersions(
        self,
        request: pb.RunRequest,
        context: grpc.ServicerContext,
        caller: Principal,
    ) -> pb.VersionsResponse:
        path, _named = self._read(caller, request.path, request.min_position)
        versions = self.service.versions(path, mapping.min_position(request.min_position))
        return mapping.versions(versions)

    @refusals
    def ListArtifacts(
        self,
        request: pb.RunRequest,
        context: grpc.ServicerContext,
        caller: Principal,
    ) -> pb.ArtifactsResponse:
        path, named = self._read(caller, request.path, request.min_position)
        found = self.service.artifacts(
            path,
            mapping.pinned_version(named, request.version),
            mapping.min_position(request.min_position),
        )
        return mapping.artifacts(found)

    @refusals
    def GetLineage(
        self, request: pb.RunRequest, context: grpc.ServicerContext, caller: Principal
    ) -> pb.Lineage:
        path, _named = self._read(caller, request.path, request.min_position)
        tree = self.service.lineage(path, mapping.min_position(request.min_position))
        return mapping.lineage(tree)

    @stream_refusals
    def ReadEvents(
        self,
        request: pb.EventsRequest,
        context: grpc.ServicerContext,
        caller: Principal,
    ) -> Iterator[pb.Event]:
        if request.start < 0:
            raise InvalidArgument(f"invalid start {request.start}: positions are >= 0")
        if request.path:
            path: RunPath | None = _allowed(caller, request.path, READ)
        else:
            caller.require_role(Role.ADMIN, "read the whole event log")
            path = None
        with self._long_stream() if request.follow else contextlib.nullcontext():
            yield from self._events(request, path, context)

    def _events(
        self, request: pb.EventsRequest, path: RunPath | None, context: grpc.ServicerContext
    ) -> Iterator[pb.Event]:
        after = request.start
        while self._streaming(context):
            scanned = self.service.store.last_position()
            for event in self.service.scan_events(after, path):
                yield mapping.event(event)
                after = event.position
                if not self._streaming(context):
                    return
            if not request.follow:
                return
            # Nothing more of this run up to `scanned`: the next poll starts past it.
            after = max(after, scanned)
            self.stopping.wait(FOLLOW_POLL_SECONDS)

    def _streaming(self, context: grpc.ServicerContext) -> bool:
        """Whether a stream goes on: its client is there and the server is not stopping."""
        return context.is_active() and not self.stopping.is_set()

    @refusals
    def AsOf(
        self, request: pb.AsOfRequest, context: grpc.ServicerContext, caller: Principal
    ) -> pb.AsOfResponse:
        kind = request.WhichOneof("at")
        if kind is None:
            raise InvalidArgument("an as-of query needs a position or a time")
        snapshot = self.service.as_of(
            _allowed(caller, request.path, READ),
            position=request.position if kind == "position" else None,
            at=request.time if kind == "time" else None,
        )
        rows = snapshot.history(**mapping.history_options(request.history))
        return mapping.as_of(rows, snapshot.summary(), snapshot.config())

    @stream_refusals
    def Rebuild(
        self,
        request: pb.RebuildRequest,
        context: grpc.ServicerContext,
        caller: Principal,
    ) -> Iterator[pb.RebuildProgress]:
        caller.require_role(Role.ADMIN, "rebuild the read models")
        before = self.service.checksums()
        updates: queue.Queue[Progress | BaseException | None] = queue.Queue()

        def rebuild() -> None:
            try:
                self.service.rebuild(updates.put)
                updates.put(None)
            except BaseException as error:
                updates.put(error)

        worker = threading.Thread(target=rebuild, name="rebuild", daemon=True)
        worker.start()
        last = Progress(0, 0, 0)
        while (item := updates.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            last = item
            yield mapping.progress(item)
        worker.join()
        after = self.service.checksums()
        yield mapping.rebuilt(last, after, equal_to_live=after == before)
