"""The web UI's HTTP server: pages, JSON endpoints and static files, standard library only.

`WebApp.handle` turns (method, target, headers) into a `Response` without sockets; the
`ThreadingHTTPServer` adapter only moves bytes. Every request goes through
`WebApp.authenticate` first (see `access.py`: the auth seam).

Page addresses follow W&B's: `/<entity>/<project>` and `/<entity>/<project>/runs/<run_id>`,
with `/charts`, `/lineage`, `/audit` and `/versions/<n>` below a run. Every page is the same
HTML shell; `static/app.js` reads the page's kind from it and fills it from `/api/...`, so
the pages show exactly what the JSON endpoints serve.
"""

from __future__ import annotations

import html
import json
import logging
import mimetypes
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from runhistory.domain.errors import RunHistoryError
from runhistory.service.runs import RunService
from runhistory.service.web.access import Access, Principal
from runhistory.service.web.api import WebApi, encode

log = logging.getLogger(__name__)

STATIC = resources.files("runhistory.service.web") / "static"

# Domain error codes (domain/errors.py and the auth errors) as HTTP statuses: the only place.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

PAGE_KINDS = ("overview", "charts", "lineage", "audit")


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_response(document: Any, status: int = 200) -> Response:
    return Response(status, "application/json", encode(document), {"Cache-Control": "no-store"})


def error_response(code: str, message: str, status: int | None = None) -> Response:
    status = status or HTTP_STATUS.get(code, 500)
    return json_response({"error": {"code": code, "status": status, "message": message}}, status)


def plotly_js() -> Path | None:
    """plotly.js as shipped inside the installed `plotly` package (no CDN, nothing copied)."""
    try:
        bundled = resources.files("plotly") / "package_data" / "plotly.min.js"
    except ModuleNotFoundError:
        return None
    path = Path(str(bundled))
    return path if path.is_file() else None


class WebApp:
    def __init__(self, service: RunService, access: Access | None = None) -> None:
        self.access = access or Access()
        self.api = WebApi(service, self.access)
        self._static_cache: dict[str, bytes] = {}

    # ---- the auth seam: every request passes here once ----------------------------------

    def authenticate(self, headers: Mapping[str, str]) -> Principal | None:
        return self.access.authenticate(headers)

    # ---- dispatch ----------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        if method not in ("GET", "HEAD"):
            response = error_response(
                "INVALID_ARGUMENT", f"method {method} is not allowed: the web UI is read-only", 405
            )
            response.headers["Allow"] = "GET, HEAD"
            return response
        principal = self.authenticate(headers)
        if principal is None:
            return error_response("UNAUTHENTICATED", "sign in or send an API key")
        split = urlsplit(target)
        parts = [unquote(p) for p in split.path.split("/") if p]
        query = parse_qs(split.query, keep_blank_values=True)
        try:
            if parts[:1] == ["api"]:
                return self._api(principal, parts[1:], query)
            if parts[:1] == ["static"]:
                return self._static(parts[1:])
            return self._page(parts)
        except RunHistoryError as error:
            return error_response(error.code, error.message)
        except Exception:
            # The details go to the server's log, never to the user.
            log.exception("unexpected error serving %s", target)
            return error_response("INTERNAL", "internal error; the server's log has the details")

    def _api(self, principal: Principal, parts: list[str], query: Any) -> Response:
        api = self.api
        routes: dict[tuple[int, str | None], Callable[..., dict]] = {
            (3, None): api.runs,
            (4, None): api.run,
            (5, "history"): api.history,
            (5, "lineage"): api.lineage,
            (5, "events"): api.events,
            (5, "as-of"): api.as_of,
        }
        if len(parts) >= 3 and parts[2] == "runs":
            entity, project = parts[0], parts[1]
            if len(parts) == 6 and parts[4] == "versions":
                return json_response(
                    api.version(principal, entity, project, parts[3], parts[5], query)
                )
            handler = routes.get((len(parts), parts[4] if len(parts) == 5 else None))
            if handler is not None:
                return json_response(handler(principal, entity, project, *parts[3:4], query))
        return error_response(
            "NOT_FOUND",
            "no such endpoint: use /api/ENTITY/PROJECT/runs[/RUN_ID[/history|/lineage|/events|"
            "/as-of|/versions/N]]",
        )

    def _static(self, parts: list[str]) -> Response:
        name = "/".join(parts)
        if name == "vendor/plotly.min.js":
            path = plotly_js()
            if path is None:
                return error_response("NOT_FOUND", "plotly is not installed: pip install plotly")
            body = self._static_cache.get(name) or path.read_bytes()
        else:
            if not parts or any(p in ("", ".", "..") or "\\" in p for p in parts):
                return error_response("NOT_FOUND", f"no static file {name!r}")
            resource = STATIC.joinpath(*parts)
            if not resource.is_file():
                return error_response("NOT_FOUND", f"no static file {name!r}")
            body = self._static_cache.get(name) or resource.read_bytes()
        self._static_cache[name] = body
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind.endswith("javascript"):
            kind += "; charset=utf-8"
        return Response(200, kind, body, {"Cache-Control": "public, max-age=3600"})

    def _page(self, parts: list[str]) -> Response:
        page: dict[str, Any] | None = None
        if not parts:
            page = {"kind": "home"}
        elif len(parts) == 2:
            page = {"kind": "project", "entity": parts[0], "project": parts[1]}
        elif len(parts) >= 4 and parts[2] == "runs":
            run = {"entity": parts[0], "project": parts[1], "run_id": parts[3]}
            if len(parts) == 4:
                page = {"kind": "overview", **run}
            elif len(parts) == 5 and parts[4] in PAGE_KINDS:
                page = {"kind": parts[4], **run}
            elif len(parts) == 6 and parts[4] == "versions" and parts[5].isdigit():
                page = {"kind": "version", "version": int(parts[5]), **run}
        if page is None:
            return Response(404, "text/html; charset=utf-8", _shell({"kind": "missing"}))
        return Response(
            200, "text/html; charset=utf-8", _shell(page), {"Cache-Control": "no-store"}
        )


def _shell(page: Mapping[str, Any]) -> bytes:
    template = STATIC.joinpath("page.html").read_text(encoding="utf-8")
    return template.replace("{{PAGE}}", html.escape(json.dumps(page), quote=True)).encode()


# ---- the HTTP adapter ---------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "runhistory"

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        response = self.server.app.handle(self.command, self.path, dict(self.headers.items()))
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: WebApp) -> None:
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


@dataclass
class RunningWeb:
    server: _Server
    thread: threading.Thread
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def parse_http_address(text: str) -> tuple[str, int]:
    """HOST:PORT (port 0: any free port); raises ValueError with what is allowed."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid HTTP address {text!r}: use HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)


def start_web(
    service: RunService, address: str = "127.0.0.1:8080", access: Access | None = None
) -> RunningWeb:
    """Serve the web UI over `service` on `address` in a background thread. Raises OSError
    when the address cannot be bound."""
    host, port = parse_http_address(address)
    server = _Server((host, port), WebApp(service, access))
    thread = threading.Thread(target=server.serve_forever, name="web", daemon=True)
    thread.start()
    return RunningWeb(server, thread, host, server.server_address[1])
