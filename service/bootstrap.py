"""Builds the services once from `Settings` and starts the entrypoints over them.

`start` is the one place that wires runhistory together: the run service, the API keys
(unless `require_keys` is off), the web UI's access rules and the TLS credentials of both
entrypoints, then the gRPC server and the web UI over that one run service. `runhistory
serve`, `runhistory demo`, the benchmarks and the tests all start servers through it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import grpc

from runhistory.service.addresses import DEFAULT_ADDRESS, parse_http_address
from runhistory.service.auth import KeyStore
from runhistory.service.liveness import CrashSweeper
from runhistory.service.rpc.server import RunningServer, start_server
from runhistory.service.rpc.server import refuse_without_keys as refuse_rpc_without_keys
from runhistory.service.runs import RunService
from runhistory.service.settings import Settings
from runhistory.service.web.access import Access
from runhistory.service.web.server import RunningWeb, start_web
from runhistory.service.web.server import refuse_without_keys as refuse_web_without_keys


@dataclass
class Running:
    """The services and the entrypoints serving them, until `stop`."""

    settings: Settings
    service: RunService
    keys: KeyStore | None  # None: a server without API keys
    rpc: RunningServer | None
    web: RunningWeb | None
    sweeper: CrashSweeper | None = None  # None: crash detection is off (crash_after 0)

    @property
    def address(self) -> str:
        """The gRPC server's address, with the port it got."""
        if self.rpc is None:
            raise ValueError("this server was started without gRPC")
        return self.rpc.address

    def stop(self, grace: float = 5.0) -> None:
        """Stop the web UI, then gRPC (requests in flight get `grace` seconds to finish),
        then close the stores. Every acknowledged write is already durable."""
        try:
            if self.sweeper is not None:
                self.sweeper.stop()
            if self.web is not None:
                self.web.stop()
            if self.rpc is not None:
                self.rpc.stop(grace)
        finally:
            self.service.close()


def start(
    settings: Settings | None = None,
    address: str | None = DEFAULT_ADDRESS,
    http: str | None = None,
    *,
    projections: bool = True,
    http_fallback: bool = False,
    max_workers: int = 16,
) -> Running:
    """Serve gRPC on `address` and, if given, the web UI on `http` (port 0: any free port;
    `address=None`: no gRPC). `projections=False` leaves the read models to `runhistory
    project` workers; reads still wait for the client's writes. With `http_fallback`, the
    web UI takes a free port on the same host when its own is taken.

    API keys are required unless `settings.require_keys` is off, which only loopback
    addresses allow; `settings.tls_cert` and `tls_key` turn on TLS for both entrypoints.
    Unless `settings.crash_after` is 0, a thread marks runs whose writers fell silent
    crashed.
    Raises OSError, saying which, when an address cannot be bound; nothing is left open."""
    settings = settings or Settings()
    if not settings.require_keys:
        # Refused before anything is opened or created.
        if address is not None:
            refuse_rpc_without_keys(address)
        if http is not None:
            refuse_web_without_keys(http)
    credentials, tls = _grpc_credentials(settings), _ssl_context(settings)
    service = RunService(settings, background=True, projections=projections)
    running = Running(settings, service, None, None, None)
    try:
        running.keys = KeyStore(service.db) if settings.require_keys else None
        if address is not None:
            try:
                running.rpc = start_server(service, running.keys, address, credentials, max_workers)
            except (OSError, RuntimeError) as error:  # grpc: RuntimeError("Failed to bind")
                raise OSError(f"cannot serve on {address}: {error}") from error
        if http is not None:
            access = Access(running.keys, secure_cookies=tls is not None)
            running.web = _start_web(service, http, access, tls, http_fallback)
            if running.rpc is not None:
                running.rpc.servicer.web_url = running.web.url
        if settings.crash_after > 0:
            running.sweeper = CrashSweeper(service).start()
    except BaseException:
        running.stop()
        raise
    return running


def _start_web(
    service: RunService, http: str, access: Access, tls: ssl.SSLContext | None, fallback: bool
) -> RunningWeb:
    try:
        return start_web(service, http, access, tls)
    except OSError as error:
        if not fallback:
            raise OSError(f"cannot serve the web UI on {http}: {error}") from error
        host, _port = parse_http_address(http)
        try:
            return start_web(service, f"{host}:0", access, tls)
        except OSError as again:
            raise OSError(f"cannot serve the web UI on {host}: {again}") from again


def _grpc_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The web UI's TLS: the same certificate as gRPC, and the same client CA if any."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca is not None:
        tls.verify_mode = ssl.CERT_REQUIRED
        tls.load_verify_locations(settings.tls_client_ca)
    return tls
