"""The web UI's HTTP server: pages, JSON endpoints and static files, standard library only.

`WebApp.handle` turns (method, target, headers, body) into a `Response` without sockets;
the `ThreadingHTTPServer` adapter only moves bytes. Every request but the sign-in page and
the static files goes through `Access.authenticate` first (see `access.py`: the auth seam);
a browser without a session is sent to `/login`, a script gets 401.

Page addresses follow W&B's: `/<entity>/<project>` and `/<entity>/<project>/runs/<run_id>`,
with `/charts`, `/lineage`, `/audit` and `/versions/<n>` below a run; a version's immutable
ID in place of the run ID redirects to that version's page. Every page is the same
HTML shell; `static/app.js` reads the page's kind from it and fills it from `/api/...`, so
the pages show exactly what the JSON endpoints serve.
"""

from __future__ import annotations

import html
import json
import logging
import mimetypes
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from runhistory.domain.errors import InvalidArgument, RunHistoryError, Unauthenticated
from runhistory.domain.identity import is_version_id
from runhistory.service.addresses import DEFAULT_HTTP, is_loopback, parse_http_address
from runhistory.service.auth import Principal
from runhistory.service.database_errors import refusal_for
from runhistory.service.runs import RunService
from runhistory.service.web.access import Access, header
from runhistory.service.web.api import Document, WebApi, encode

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
MAX_FORM_BYTES = 16 * 1024


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
        # Imported here: the W&B API answers with this module's `Response`.
        from runhistory.service.wandb.app import MAX_BODY_BYTES, WandbApp

        self.access = access or Access()
        self.api = WebApi(service, self.access)
        self.wandb = WandbApp(service, self.access)  # the W&B API, on the same address
        self.wandb_body_bytes = MAX_BODY_BYTES
        self._static_cache: dict[str, bytes] = {}

    def body_limit(self, method: str, target: str) -> int:
        """The largest request body taken: the W&B API's posts carry runs' rows."""
        if self.wandb.serves(method, urlsplit(target).path):
            return self.wandb_body_bytes
        return MAX_FORM_BYTES

    # ---- dispatch ----------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes = b""
    ) -> Response:
        split = urlsplit(target)
        if self.wandb.serves(method, split.path):
            return self.wandb.handle(split.path, headers, body)
        parts = [unquote(p) for p in split.path.split("/") if p]
        query = parse_qs(split.query, keep_blank_values=True)
        try:
            if parts in (["login"], ["logout"]):
                return self._session(method, parts[0], query, headers, body)
            if method not in ("GET", "HEAD"):
                return _not_allowed(f"method {method} is not allowed: the web UI is read-only")
            if parts[:1] == ["static"]:
                return self._static(parts[1:])  # public: no run data in there
            is_api = parts[:1] == ["api"]
            try:
                principal = self.access.authenticate(headers)
            except Unauthenticated as error:
                if is_api:
                    raise
                return _to_login(split.path, error.message)
            if principal is None:
                if is_api:
                    raise Unauthenticated(
                        "sign in at /login, or send 'Authorization: Bearer KEY' with an API key"
                    )
                return _to_login(split.path)
            if is_api:
                return self._api(principal, parts[1:], query)
            return self._page(principal, parts)
        except RunHistoryError as error:
            return error_response(error.code, error.message)
        except Exception as error:
            if found := refusal_for(error):  # a full disk, a read-only database, busy
                log.warning("refused %s: %s", target, found.message)
                return error_response(found.code, found.message)
            # The details go to the server's log, never to the user.
            log.exception("unexpected error serving %s", target)
            return error_response("INTERNAL", "internal error; the server's log has the details")

    # ---- signing in and out ------------------------------------------------------------

    def _session(
        self,
        method: str,
        action: str,
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        body: bytes,
    ) -> Response:
        next_page = _local_target(query.get("next", ["/"])[-1])
        if method in ("GET", "HEAD"):
            if action == "logout" or self.access.open:
                return _redirect(next_page)
            reason = query.get("reason", [""])[-1]
            return _login_page(next_page, reason[:200], 200)
        if method != "POST":
            return _not_allowed(
                f"method {method} is not allowed on /{action}: GET or POST", "GET, HEAD, POST"
            )
        _same_origin(headers)
        if action == "logout":
            response = _redirect("/login")
            response.headers["Set-Cookie"] = self.access.sign_out(headers)
            return response
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        next_page = _local_target(form.get("next", [next_page])[-1])
        try:
            principal, cookie = self.access.sign_in(form.get("key", [""])[-1])
        except Unauthenticated as error:
            return _login_page(next_page, error.message, 401)
        response = _redirect(next_page)
        response.headers["Set-Cookie"] = cookie
        log.info("web sign-in with key %s of entity %s", principal.key_id, principal.entity)
        return response

    def _api(self, principal: Principal, parts: list[str], query: Any) -> Response:
        api = self.api
        routes: dict[tuple[int, str | None], Callable[..., Document]] = {
            (3, None): api.runs,
            (4, None): api.run,
            (5, "history"): api.history,
            (5, "lineage"): api.lineage,
            (5, "events"): api.events,
            (5, "as-of"): api.as_of,
        }
        if len(parts) == 3 and parts[2] == "sparklines":
            return json_response(api.sparklines(principal, parts[0], parts[1], query))
        if parts == ["projects"]:
            return json_response(api.projects(principal, query))
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
            "no such endpoint: use /api/projects, /api/ENTITY/PROJECT/runs[/RUN_ID[/history|"
            "/lineage|/events|/as-of|/versions/N]] or /api/ENTITY/PROJECT/sparklines",
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

    def _page(self, principal: Principal, parts: list[str]) -> Response:
        page: dict[str, Any] | None = None
        if not parts:
            page = {"kind": "home"}
        elif len(parts) == 2:
            page = {"kind": "project", "entity": parts[0], "project": parts[1]}
        elif len(parts) >= 4 and parts[2] == "runs":
            run = {"entity": parts[0], "project": parts[1], "run_id": parts[3]}
            if len(parts) == 4 and is_version_id(parts[3]):
                page = {"kind": "version_id", **run}
            elif len(parts) == 4:
                page = {"kind": "overview", **run}
            elif len(parts) == 5 and parts[4] in PAGE_KINDS:
                page = {"kind": parts[4], **run}
            elif len(parts) == 6 and parts[4] == "versions" and parts[5].isdigit():
                page = {"kind": "version", "version": int(parts[5]), **run}
        with_keys = not self.access.open
        if page is None:
            return Response(404, "text/html; charset=utf-8", _shell({"kind": "missing"}, with_keys))
        if "run_id" in page:
            # A run's page for a run (or version) that does not exist is a 404, as its JSON
            # is; the shell then shows why.
            try:
                if page["kind"] == "version_id":
                    # An immutable ID (as `run.immutable_id` gives it) leads to the page of
                    # that version, wherever it is now.
                    return _redirect(
                        self.api.version_page(
                            principal, page["entity"], page["project"], page["run_id"]
                        )
                    )
                self.api.check_page(
                    principal, page["entity"], page["project"], page["run_id"], page.get("version")
                )
            except RunHistoryError as error:
                status = HTTP_STATUS.get(error.code, 500)
                missing = {"kind": "missing", "code": error.code, "message": error.message}
                return Response(status, "text/html; charset=utf-8", _shell(missing, with_keys))
        return Response(
            200, "text/html; charset=utf-8", _shell(page, with_keys), {"Cache-Control": "no-store"}
        )


def _not_allowed(message: str, allow: str = "GET, HEAD") -> Response:
    response = error_response("METHOD_NOT_ALLOWED", message, 405)
    response.headers["Allow"] = allow
    return response


def _redirect(target: str) -> Response:
    return Response(303, "text/plain; charset=utf-8", b"", {"Location": target})


def _to_login(path: str, reason: str = "") -> Response:
    query = f"next={quote(path)}" + (f"&reason={quote(reason)}" if reason else "")
    return _redirect(f"/login?{query}")


def _local_target(target: str) -> str:
    """Where to go after signing in: only a path on this server (no open redirects)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _same_origin(headers: Mapping[str, str]) -> None:
    """Refuse a form posted from another site's page (SameSite cookies aside, sign-in
    itself must not be triggerable cross-site)."""
    origin, host = header(headers, "origin"), header(headers, "host")
    if origin is not None and origin != "null" and urlsplit(origin).netloc != host:
        raise InvalidArgument(f"a form from {origin} may not post to this server")


def _login_page(next_page: str, message: str, status: int) -> Response:
    template = STATIC.joinpath("login.html").read_text(encoding="utf-8")
    note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    body = template.replace("{{NEXT}}", html.escape(next_page, quote=True)).replace(
        "{{MESSAGE}}", note
    )
    return Response(
        status, "text/html; charset=utf-8", body.encode(), {"Cache-Control": "no-store"}
    )


SIGN_OUT = (
    '<form method="post" action="/logout" class="signout"><button type="submit">Sign out'
    "</button></form>"
)


def _shell(page: Mapping[str, Any], with_keys: bool) -> bytes:
    """The page's HTML; "Sign out" only where there is a sign-in (a server with keys)."""
    template = STATIC.joinpath("page.html").read_text(encoding="utf-8")
    return (
        template.replace("{{PAGE}}", html.escape(json.dumps(page), quote=True))
        .replace("{{SIGN_OUT}}", SIGN_OUT if with_keys else "")
        .encode()
    )


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

    # Answered 405 by `WebApp.handle` (not the standard library's 501).
    do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_POST

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        limit = self.server.app.body_limit(self.command, self.path)
        if length > limit:
            self.close_connection = True
            response = error_response(
                "RESOURCE_EXHAUSTED", f"a request body is at most {limit} bytes", 413
            )
        else:
            body = self.rfile.read(length) if length > 0 else b""
            response = self.server.app.handle(
                self.command, self.path, dict(self.headers.items()), body
            )
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
    scheme = "http"

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
        return f"{self.server.scheme}://{host}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_web(
    service: RunService,
    address: str = DEFAULT_HTTP,
    access: Access | None = None,
    tls: ssl.SSLContext | None = None,
) -> RunningWeb:
    """Serve the web UI over `service` on `address` in a background thread, with `access`
    and `tls` as `bootstrap` builds them from the settings. `access=None` serves it without
    keys, which only a loopback address allows. Raises OSError when the address cannot be
    bound."""
    host, port = parse_http_address(address)
    access = access or Access()
    if access.open:
        refuse_without_keys(address)
    server = _Server((host, port), WebApp(service, access))
    if tls is not None:
        # The handshake happens in the request's own thread, not in the accepting one.
        server.socket = tls.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        server.scheme = "https"
    thread = threading.Thread(target=server.serve_forever, name="web", daemon=True)
    thread.start()
    return RunningWeb(server, thread, host, server.server_address[1])


def refuse_without_keys(address: str) -> None:
    """The web UI without API keys is for this machine only."""
    if not is_loopback(address):
        raise InvalidArgument(
            f"refusing to serve the web UI without API keys on {address}: other machines "
            "could reach it"
        )
