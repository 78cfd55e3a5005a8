"""The gRPC adapter: RunHistory RPCs over the run service, plus health and reflection.

Every RPC first authenticates its caller's API key (unless the server runs without keys)
and checks that the key may act on the runs the request names. Domain errors become the
gRPC status of the same name with the domain's message; a request that is not even a valid
message is INVALID_ARGUMENT; anything unexpected is logged here and reaches the client as
INTERNAL with a one-line message.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from runhistory.domain.errors import InvalidArgument, ResourceExhausted, RunHistoryError
from runhistory.domain.identity import BranchPoint, RunPath, check_name
from runhistory.domain.values import LogCall
from runhistory.projections.runner import Progress
from runhistory.protos import codec
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos import runhistory_pb2_grpc as pb_grpc
from runhistory.service.auth import LOCAL_OPERATOR, KeyStore, Principal, Role, bearer_key
from runhistory.service.runs import RunService, Session
from runhistory.service.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "127.0.0.1:50051"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RunHistory"].full_name
HISTORY_CHUNK_ROWS = 1000
FOLLOW_POLL_SECONDS = 0.1

F = TypeVar("F", bound=Callable[..., Any])


def _status_of(error: RunHistoryError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, error.code, grpc.StatusCode.INTERNAL)


@dataclass(frozen=True, slots=True)
class Malformed:
    """A request whose bytes are not a valid message of its RPC's type."""

    message_type: str
    error: str


def _tolerant(message: type[Any]) -> Callable[[bytes], Any]:
    # grpc answers INTERNAL when a deserializer raises; a malformed request is the caller's
    # error, so parsing failures travel to the handler, which refuses them properly.
    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except Exception as error:
            return Malformed(message.DESCRIPTOR.full_name, str(error) or type(error).__name__)

    return parse


def _well_formed(request: Any) -> Any:
    if isinstance(request, Malformed):
        raise InvalidArgument(
            f"the request is not a valid {request.message_type} message: {request.error}"
        )
    return request


def refusals(method: F) -> F:
    """Authenticate the caller, refuse malformed requests, and map domain errors to
    statuses, for unary and streaming handlers alike. The handler gets the caller."""

    def abort(context: grpc.ServicerContext, error: Exception) -> None:
        if isinstance(error, RunHistoryError):
            context.abort(_status_of(error), error.message)
        log.exception("unexpected error in %s", method.__name__)
        context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}")

    if getattr(method, "_streams", False):

        @functools.wraps(method)
        def streaming(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                caller = self.authenticate(context)
                yield from method(self, _well_formed(request), context, caller)
            except Exception as error:
                abort(context, error)

        return streaming  # type: ignore[return-value]

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            caller = self.authenticate(context)
            return method(self, _well_formed(request), context, caller)
        except Exception as error:
            abort(context, error)

    return unary  # type: ignore[return-value]


def streams(method: F) -> F:
    method._streams = True  # type: ignore[attr-defined]
    return method


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


def _version(value: int) -> int | None:
    if value < 0:
        raise InvalidArgument(f"invalid version {value}: versions are 1, 2, ...; 0 is the live one")
    return value or None


def _seq(value: int) -> int | None:
    if value < 0:
        raise InvalidArgument(f"invalid sequence number {value}: use 1, 2, ... (0: none)")
    return value or None


def _forked_from(link: dict[str, Any] | None) -> pb.ForkedFrom | None:
    if link is None:
        return None
    return pb.ForkedFrom(run=link["run"], step=link["step"], version=link["version"])


def _session(session: Session) -> pb.Session:
    return pb.Session(
        path=str(session.path),
        writer=session.writer,
        version=session.version,
        next_step=session.next_step,
        position=session.position,
        config_json=codec.dumps(session.config),
        forked_from=_forked_from(session.forked_from),
    )


def _run_info(record: dict[str, Any]) -> pb.RunInfo:
    return pb.RunInfo(
        path=record["path"],
        entity=record["entity"],
        project=record["project"],
        run_id=record["run_id"],
        name=record["name"],
        tags=record["tags"],
        state=record["state"],
        version=record["version"],
        last_step=record["last_step"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        forked_from=_forked_from(record.get("forked_from")),
        exit_code=record["exit_code"],
    )


def _history_options(request: pb.HistoryRequest) -> dict[str, Any]:
    return {
        "keys": list(request.keys) or None,
        "min_step": request.min_step if request.HasField("min_step") else None,
        "max_step": request.max_step if request.HasField("max_step") else None,
        "own_only": request.own_only,
        "version": _version(request.version),
    }


def _json_chunks(rows: Iterator[str]) -> Iterator[pb.HistoryChunk]:
    chunk: list[str] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == HISTORY_CHUNK_ROWS:
            yield pb.HistoryChunk(rows_json=f"[{','.join(chunk)}]".encode())
            chunk = []
    if chunk:
        yield pb.HistoryChunk(rows_json=f"[{','.join(chunk)}]".encode())


def _chunks(rows: Iterator[dict[str, Any]]) -> Iterator[pb.HistoryChunk]:
    chunk: list[pb.Row] = []
    for row in rows:
        chunk.append(codec.row_to_proto(row))
        if len(chunk) == HISTORY_CHUNK_ROWS:
            yield pb.HistoryChunk(rows=chunk)
            chunk = []
    if chunk:
        yield pb.HistoryChunk(rows=chunk)


def _descendant(node: dict[str, Any]) -> pb.Descendant:
    return pb.Descendant(
        run=node["run"],
        source_version=node["source_version"],
        step=node["step"],
        descendants=[_descendant(child) for child in node["descendants"]],
    )


def _event(event: dict[str, Any]) -> pb.Event:
    return pb.Event(
        position=event["position"],
        run_uuid=event["run_uuid"],
        run_event=event["run_event"],
        type=event["type"],
        timestamp=event["timestamp"],
        payload_json=codec.dumps(event["payload"]),
    )


class RunHistoryServicer(pb_grpc.RunHistoryServicer):
    def __init__(self, service: RunService, keys: KeyStore | None) -> None:
        """`keys=None`: a server without keys, where every caller is the local operator."""
        self.service = service
        self.keys = keys
        # Set when the server stops: followers leave before the stores close under them.
        self.stopping = threading.Event()
        self.open_streams = threading.BoundedSemaphore(service.settings.max_open_streams)

    def authenticate(self, context: grpc.ServicerContext) -> Principal:
        if self.keys is None:
            return LOCAL_OPERATOR
        metadata = dict(context.invocation_metadata())
        return self.keys.authenticate(bearer_key(metadata.get("authorization")))

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
        caller.require(check_name("entity", request.entity), *WRITE)
        if branch.point:
            # A fork reads its source; a rewind rewrites the run it names.
            source = BranchPoint.parse(branch.point, request.entity, request.project or "_")
            caller.require(source.run.entity, *(READ if branch.mode == pb.Branch.FORK else WRITE))
        session = self.service.init(
            request.entity,
            request.project,
            request.run_id or None,
            name=request.name or None,
            tags=list(request.tags),
            config=codec.loads_object(request.config_json, "config_json"),
            resume=request.resume or None,
            resume_from=branch.point if branch.mode == pb.Branch.REWIND else None,
            fork_from=branch.point if branch.mode == pb.Branch.FORK else None,
            started_at=request.started_at or None,
        )
        return _session(session)

    def _log(self, batch: pb.LogBatch, caller: Principal) -> pb.LogAck:
        path = _allowed(caller, batch.path, WRITE)
        if batch.calls and batch.calls_json:
            raise InvalidArgument("a batch carries calls or calls_json, not both")
        calls = (
            codec.calls_from_json(batch.calls_json)
            if batch.calls_json
            else [
                LogCall(
                    data=codec.from_values(call.data),
                    timestamp=call.timestamp or time.time(),
                    step=call.step if call.HasField("step") else None,
                    commit=call.commit if call.HasField("commit") else None,
                )
                for call in batch.calls
            ]
        )
        ack = self.service.log(path, calls, writer=batch.writer or None, seq=_seq(batch.seq))
        return pb.LogAck(
            seq=batch.seq,
            position=ack.position,
            applied=ack.applied,
            next_step=ack.next_step,
            rows=ack.rows,
            warnings=ack.warnings,
        )

    @refusals
    def Log(
        self, request: pb.LogBatch, context: grpc.ServicerContext, caller: Principal
    ) -> pb.LogAck:
        return self._log(request, caller)

    @refusals
    @streams
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
                yield self._log(_well_formed(batch), caller)

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
            writer=request.writer or None,
            seq=_seq(request.seq),
        )
        return pb.Ack(position=ack.position, applied=ack.applied)

    @refusals
    def SetSummary(
        self, request: pb.SetSummaryRequest, context: grpc.ServicerContext, caller: Principal
    ) -> pb.Ack:
        ack = self.service.set_summary(
            _allowed(caller, request.path, WRITE),
            codec.from_values(request.values),
            writer=request.writer or None,
            seq=_seq(request.seq),
        )
        return pb.Ack(position=ack.position, applied=ack.applied)

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
            writer=request.writer or None,
            seq=_seq(request.seq),
        )
        return pb.Ack(position=ack.position, applied=ack.applied)

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
            writer=request.writer or None,
            seq=_seq(request.seq),
        )
        return pb.Ack(position=ack.position, applied=ack.applied)

    @refusals
    def Finish(
        self, request: pb.FinishRequest, context: grpc.ServicerContext, caller: Principal
    ) -> pb.Ack:
        ack = self.service.finish(
            _allowed(caller, request.path, WRITE),
            request.exit_code,
            writer=request.writer or None,
            seq=_seq(request.seq),
        )
        return pb.Ack(position=ack.position, applied=ack.applied)

    # ---- reads -------------------------------------------------------------------------

    def _wait(self, min_position: int) -> int | None:
        # Read your writes across servers: the client names the last position it wrote.
        return min_position or None

    @refusals
    def GetRun(
        self, request: pb.RunRequest, context: grpc.ServicerContext, caller: Principal
    ) -> pb.RunInfo:
        record = self.service.run(
            _allowed(caller, request.path, READ), self._wait(request.min_position)
        )
        return _run_info(record)

    @refusals
    def ListRuns(
        self,
        request: pb.ListRunsRequest,
        context: grpc.ServicerContext,
        caller: Principal,
    ) -> pb.ListRunsResponse:
        caller.require(check_name("entity", request.entity), *READ)
        records = self.service.runs(
            request.entity, request.project, self._wait(request.min_position)
        )
        return pb.ListRunsResponse(runs=[_run_info(r) for r in records])

    @refusals
    @streams
    def ReadHistory(
        self,
        request: pb.HistoryRequest,
        context: grpc.ServicerContext,
        caller: Principal,
    ) -> Iterator[pb.HistoryChunk]:
        path = _allowed(caller, request.path, READ)
        min_position = self._wait(request.min_position)
        if request.series:
            pages = self.service.scan_series(
                path, min_position=min_position, **_history_options(request)
            )
            for page in pages:
                if page.series:
                    yield pb.HistoryChunk(
                        series=codec.series_to_protos(page.series), upto_step=page.upto
                    )
            return
        rows = self.service.scan_history(
            path, min_position=min_position, as_json=request.json, **_history_options(request)
        )
        yield from _json_chunks(rows) if request.json else _chunks(rows)

    @refusals
    def GetSummary(
        self, request: pb.RunRequest, context: grpc.ServicerContext, caller: Principal
    ) -> pb.JsonDocument:
        summary = self.service.summary(
            _allowed(caller, request.path, READ),
            _version(request.version),
            self._wait(request.min_position),
        )
        return pb.JsonDocument(json=codec.dumps(summary))

    @refusals
    def GetConfig(
        self, request: pb.RunRequest, context: grpc.ServicerContext, caller: Principal
    ) -> pb.JsonDocument:
        config = self.service.config(
            _allowed(caller, request.path, READ),
            _version(request.version),
            self._wait(request.min_position),
        )
        return pb.JsonDocument(json=codec.dumps(config))

    @refusals
    def ListVersions(
        self,
        request: pb.RunRequest,
        context: grpc.ServicerContext,
        caller: Principal,
    ) -> pb.VersionsResponse:
        versions = self.service.versions(
            _allowed(caller, request.path, READ), self._wait(request.min_position)
        )
        return pb.VersionsResponse(
            versions=[
                pb.Version(
                    version=v["version"],
                    archived=v["archived"],
                    rewound_to_step=v["rewound_to_step"],
                    started_at=v["started_at"],
                    archived_at=v["archived_at"],
                    state=v["state"],
                    last_step=v["last_step"],
                    rows=v["rows"],
                    summary_json=codec.dumps(v["summary"]),
                    config_json=codec.dumps(v["config"]),
                )
                for v in versions
            ]
        )

    @refusals
    def ListArtifacts(
        self,
        request: pb.RunRequest,
        context: grpc.ServicerContext,
        caller: Principal,
    ) -> pb.ArtifactsResponse:
        found = self.service.artifacts(
            _allowed(caller, request.path, READ),
            _version(request.version),
            self._wait(request.min_position),
        )
        return pb.ArtifactsResponse(artifacts=[pb.Artifact(**a) for a in found])

    @refusals
    def GetLineage(
        self, request: pb.RunRequest, context: grpc.ServicerContext, caller: Principal
    ) -> pb.Lineage:
        tree = self.service.lineage(
            _allowed(caller, request.path, READ), self._wait(request.min_position)
        )
        return pb.Lineage(
            run=tree["run"],
            version=tree["version"],
            ancestors=[pb.Ancestor(**a) for a in tree["ancestors"]],
            versions=[pb.LineageVersion(**v) for v in tree["versions"]],
            descendants=[_descendant(d) for d in tree["descendants"]],
        )

    @refusals
    @streams
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
        while context.is_active() and not self.stopping.is_set():
            scanned = self.service.store.last_position()
            page = self.service.events(after, path, limit=500)
            for event in page:
                yield _event(event)
            if page:
                after = page[-1]["position"]
                continue
            if not request.follow:
                return
            # Nothing of this run up to `scanned`: the next poll starts past it.
            after = max(after, scanned)
            self.stopping.wait(FOLLOW_POLL_SECONDS)

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
        options = _history_options(request.history)
        return pb.AsOfResponse(
            rows=[codec.row_to_proto(row) for row in snapshot.history(**options)],
            summary_json=codec.dumps(snapshot.summary()),
            config_json=codec.dumps(snapshot.config()),
        )

    @refusals
    @streams
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
            yield pb.RebuildProgress(
                applied=item.applied, position=item.position, target=item.target
            )
        worker.join()
        after = self.service.checksums()
        yield pb.RebuildProgress(
            applied=last.applied,
            position=last.position,
            target=last.target,
            done=True,
            checksums=after,
            equal_to_live=after == before,
        )


@dataclass
class RunningServer:
    server: grpc.Server
    servicer: RunHistoryServicer
    health: health.HealthServicer
    port: int
    address: str

    def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, stop taking requests, let those in flight finish, then
        close the stores. Every acknowledged write is already durable in the event store."""
        self.health.enter_graceful_shutdown()
        self.servicer.stopping.set()
        self.server.stop(grace).wait()
        self.service.close()

    @property
    def service(self) -> RunService:
        return self.servicer.service


def start_server(
    settings: Settings | None = None,
    address: str = DEFAULT_ADDRESS,
    max_workers: int = 16,
    projections: bool = True,
) -> RunningServer:
    """Serve on `address` (port 0: any free port). `projections=False` leaves the read
    models to `runhistory project` workers; reads still wait for the client's writes.
    API keys are required unless `settings.require_keys` is off, which only a loopback
    address allows; `settings.tls_cert` and `tls_key` turn on TLS."""
    settings = settings or Settings()
    if not settings.require_keys and not is_loopback(address):
        raise InvalidArgument(
            f"refusing to serve without API keys on {address}: other machines could reach "
            "it. Serve on 127.0.0.1, or create keys with `runhistory keys create`"
        )
    credentials = _server_credentials(settings)
    service = RunService(settings, background=True, projections=projections)
    keys = KeyStore(service.db) if settings.require_keys else None
    limit = settings.max_request_bytes + 1024 * 1024  # headroom for the message's framing
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            # Two servers on one port would silently split the clients between them.
            ("grpc.so_reuseport", 0),
        ],
        # Beyond this many calls waiting for a thread, grpc answers RESOURCE_EXHAUSTED.
        maximum_concurrent_rpcs=max_workers * 16,
    )
    servicer = RunHistoryServicer(service, keys)
    server.add_generic_rpc_handlers((_method_handlers(servicer),))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        service.close()
        raise OSError(f"cannot listen on {address}: the address is in use or not valid here")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    host = address.rsplit(":", 1)[0]
    return RunningServer(server, servicer, health_servicer, port, f"{host}:{port}")


def _method_handlers(servicer: RunHistoryServicer) -> grpc.GenericRpcHandler:
    """The RunHistory service's handlers, built from its descriptor like the generated
    registration, but with deserializers that hand malformed requests to the handler."""
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    service = pb.DESCRIPTOR.services_by_name["RunHistory"]
    handlers = {}
    for method in service.methods:
        request, response = (
            getattr(pb, method.input_type.name),
            getattr(pb, method.output_type.name),
        )
        kind = kinds[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = kind(
            getattr(servicer, method.name),
            request_deserializer=_tolerant(request),
            response_serializer=response.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def is_loopback(address: str) -> bool:
    """Whether `host:port` listens on this machine only."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
