"""The gRPC server: the RunHistory servicer plus health and reflection, started over
services that `bootstrap` built, and stopped gracefully."""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from runhistory.domain.errors import InvalidArgument
from runhistory.protos import runhistory_pb2 as pb
from runhistory.service.addresses import is_loopback
from runhistory.service.auth import KeyStore
from runhistory.service.rpc.refusals import tolerant
from runhistory.service.rpc.servicer import RunHistoryServicer
from runhistory.service.runs import RunService

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RunHistory"].full_name


@dataclass
class RunningServer:
    server: grpc.Server
    servicer: RunHistoryServicer
    health: health.HealthServicer
    port: int
    address: str

    def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, stop taking requests and let those in flight finish. Every
        acknowledged write is already durable in the event store."""
        self.health.enter_graceful_shutdown()
        self.servicer.stopping.set()
        self.server.stop(grace).wait()


def start_server(
    service: RunService,
    keys: KeyStore | None,
    address: str,
    credentials: grpc.ServerCredentials | None = None,
    max_workers: int = 16,
) -> RunningServer:
    """Serve `service` on `address` (port 0: any free port), with TLS when `credentials`
    are given. `keys=None` serves without API keys, which only a loopback address allows.
    Raises OSError when the address cannot be bound."""
    if keys is None:
        refuse_without_keys(address)
    limit = service.settings.max_request_bytes + 1024 * 1024  # headroom for the framing
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
        raise OSError(f"cannot listen on {address}: the address is in use or not valid here")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    host = address.rsplit(":", 1)[0]
    return RunningServer(server, servicer, health_servicer, port, f"{host}:{port}")


def refuse_without_keys(address: str) -> None:
    """Serving without API keys is for this machine only."""
    if not is_loopback(address):
        raise InvalidArgument(
            f"refusing to serve without API keys on {address}: other machines could reach "
            "it. Serve on 127.0.0.1, or create keys with `runhistory keys create`"
        )


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
            request_deserializer=tolerant(request),
            response_serializer=response.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
