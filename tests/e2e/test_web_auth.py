"""The web UI with API keys: every endpoint refuses missing, revoked and foreign keys the
right way; browsers sign in for an HttpOnly, SameSite session cookie that dies with its key;
TLS works with a certificate the test makes."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

import runhistory
from runhistory.service.auth import KeyStore, Role
from runhistory.service.bootstrap import Running, start
from runhistory.service.settings import Settings
from runhistory.service.web.server import RunningWeb, start_web

ENDPOINTS = [
    "/api/alice/p/runs",
    "/api/alice/p/runs/r1",
    "/api/alice/p/runs/r1/history?keys=loss",
    "/api/alice/p/runs/r1/lineage",
    "/api/alice/p/runs/r1/events",
    "/api/alice/p/runs/r1/as-of?position=1",
    "/api/alice/p/runs/r1/versions/1",
]
PAGES = ["/", "/alice/p", "/alice/p/runs/r1", "/alice/p/runs/r1/charts", "/alice/p/runs/r1/audit"]


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def request(
    url: str,
    path: str,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    context: ssl.SSLContext | None = None,
) -> Reply:
    """One HTTP request, redirects not followed."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, context=context, timeout=30
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=dict(headers or {}))
        response = conn.getresponse()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


@dataclass
class Site:
    grpc: Running
    web: RunningWeb
    store: KeyStore
    reader: str
    bob: str

    @property
    def url(self) -> str:
        return self.web.url


def serve_site(settings: Settings) -> tuple[Running, RunningWeb]:
    running = start(settings, "127.0.0.1:0", "127.0.0.1:0")
    assert running.web is not None
    return running, running.web


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    running, web = serve_site(Settings(db=str(tmp_path / "web.db")))
    assert running.keys is not None
    store = running.keys
    _, writer = store.create("alice", Role.WRITER)
    run = runhistory.init(
        entity="alice", project="p", id="r1", address=running.address, api_key=writer
    )
    for i in range(5):
        run.log({"loss": 1.0 / (i + 1)})
    run.finish()
    try:
        yield Site(
            running,
            web,
            store,
            reader=store.create("alice", Role.READER)[1],
            bob=store.create("bob", Role.ADMIN)[1],
        )
    finally:
        running.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sign_in(site: Site, key: str, next_page: str = "/alice/p") -> Reply:
    form = urlencode({"key": key, "next": next_page}).encode()
    return request(
        site.url,
        "/login",
        "POST",
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": site.url},
        form,
    )


def cookie_of(reply: Reply) -> dict[str, str]:
    return {"Cookie": reply.headers["set-cookie"].split(";")[0]}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_every_endpoint_checks_the_key(site: Site, endpoint: str) -> None:
    assert request(site.url, endpoint, headers=bearer(site.reader)).status == 200
    for headers, status, said in (
        ({}, 401, "sign in at /login"),
        (bearer("rh_0123456789ab_" + "A" * 43), 401, "no such key"),
        ({"Authorization": "Basic YTpi"}, 401, "Bearer KEY"),
        ({"Cookie": "rh_session=forged"}, 401, "session has ended"),
        (bearer(site.bob), 403, "entity 'bob'"),
    ):
        reply = request(site.url, endpoint, headers=headers)
        assert reply.status == status, (endpoint, headers, reply.text)
        assert said in reply.text
    # Another entity learns nothing: a run that does not exist is refused the same way.
    hidden = endpoint.replace("/r1", "/nope")
    if hidden != endpoint:
        assert request(site.url, hidden, headers=bearer(site.bob)).body == (
            request(site.url, endpoint, headers=bearer(site.bob)).body
        )
    site.store.revoke(site.reader.split("_")[1])
    reply = request(site.url, endpoint, headers=bearer(site.reader))
    assert reply.status == 401 and "was revoked" in reply.text


def test_pages_send_browsers_to_sign_in_and_static_files_are_public(site: Site) -> None:
    for page in PAGES:
        reply = request(site.url, page)
        assert reply.status == 303, page
        assert reply.headers["location"].startswith(f"/login?next={page}")
    assert request(site.url, "/static/app.js").status == 200
    login = request(site.url, "/login?next=/alice/p")
    assert login.status == 200 and 'name="key"' in login.text and 'value="/alice/p"' in login.text


def test_signing_in_gives_an_httponly_samesite_session_that_dies_with_its_key(site: Site) -> None:
    reply = sign_in(site, site.reader)
    assert reply.status == 303 and reply.headers["location"] == "/alice/p"
    flags = [part.strip() for part in reply.headers["set-cookie"].split(";")]
    assert "HttpOnly" in flags and "SameSite=Strict" in flags and "Path=/" in flags
    assert "Secure" not in flags  # plain HTTP here; see the TLS test
    session = cookie_of(reply)
    assert site.reader not in reply.headers["set-cookie"]
    assert request(site.url, "/alice/p/runs/r1", headers=session).status == 200
    assert request(site.url, "/api/alice/p/runs/r1", headers=session).status == 200
    assert request(site.url, "/api/bob/p/runs", headers=session).status == 403

    site.store.revoke(site.reader.split("_")[1])
    reply = request(site.url, "/api/alice/p/runs/r1", headers=session)
    assert reply.status == 401 and "was revoked" in reply.text
    page = request(site.url, "/alice/p", headers=session)
    assert page.status == 303 and "reason=" in page.headers["location"]


def test_signing_out_ends_the_session(site: Site) -> None:
    session = cookie_of(sign_in(site, site.reader))
    out = request(site.url, "/logout", "POST", {**session, "Origin": site.url})
    assert out.status == 303 and "Max-Age=0" in out.headers["set-cookie"]
    assert request(site.url, "/api/alice/p/runs", headers=session).status == 401


def test_bad_sign_ins_are_refused_and_set_nothing(site: Site) -> None:
    for key in ("", "nonsense", "rh_0123456789ab_" + "A" * 43):
        reply = sign_in(site, key)
        assert reply.status == 401 and "set-cookie" not in reply.headers
        assert 'role="alert"' in reply.text
    foreign = request(
        site.url,
        "/login",
        "POST",
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example"},
        urlencode({"key": site.reader}).encode(),
    )
    assert foreign.status == 400 and "set-cookie" not in foreign.headers
    # Only local paths after signing in: no open redirect.
    for target in ("//evil.example/x", "http://evil.example/", "\\\\evil"):
        assert sign_in(site, site.reader, target).headers["location"] == "/"
    huge = request(site.url, "/login", "POST", {"Content-Type": "text/plain"}, b"k" * 100_000)
    assert huge.status == 413


def test_the_ui_without_keys_is_loopback_only(tmp_path: Path) -> None:
    running = start(Settings(db=str(tmp_path / "o.db")), "127.0.0.1:0")
    try:
        with pytest.raises(runhistory.InvalidArgument, match="without API keys"):
            start_web(running.service, "0.0.0.0:0")
    finally:
        running.stop()
    open_settings = Settings(db=str(tmp_path / "open.db"), require_keys=False)
    with pytest.raises(runhistory.InvalidArgument, match="web UI without API keys"):
        start(open_settings, "127.0.0.1:0", "0.0.0.0:0")
    assert not (tmp_path / "open.db").exists()  # refused before anything was opened
    running = start(open_settings, "127.0.0.1:0", "127.0.0.1:0")
    try:
        assert running.web is not None
        assert request(running.web.url, "/api/anyone/p/runs").status == 200
    finally:
        running.stop()


def test_the_ui_over_tls(tmp_path: Path, pki: dict[str, Path]) -> None:
    settings = Settings(
        db=str(tmp_path / "tls.db"), tls_cert=pki["server"], tls_key=pki["server_key"]
    )
    running, web = serve_site(settings)
    try:
        assert web.url.startswith("https://")
        _, key = KeyStore(running.service.db).create("alice", Role.READER)
        trusted = ssl.create_default_context(cafile=str(pki["ca"]))
        reply = request(web.url, "/api/alice/p/runs", headers=bearer(key), context=trusted)
        assert reply.status == 200
        form = urlencode({"key": key}).encode()
        signed = request(
            web.url,
            "/login",
            "POST",
            {"Content-Type": "application/x-www-form-urlencoded"},
            form,
            trusted,
        )
        assert "Secure" in [p.strip() for p in signed.headers["set-cookie"].split(";")]
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            request(
                web.url.replace("https://", "http://"), "/api/alice/p/runs", headers=bearer(key)
            )
    finally:
        running.stop()


def test_one_start_serves_both_over_one_service_and_cleans_up_a_failed_start(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "both.db")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        grpc_port = probe.getsockname()[1]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        web_address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(OSError, match=f"cannot serve the web UI on {web_address}"):
            start(Settings(db=db), f"127.0.0.1:{grpc_port}", web_address)
    # The gRPC server that did start was stopped again: its port is free.
    with socket.socket() as again:
        again.bind(("127.0.0.1", grpc_port))

    running = start(Settings(db=db), f"127.0.0.1:{grpc_port}", "127.0.0.1:0")
    try:
        assert running.keys is not None and running.web is not None
        _, writer = running.keys.create("alice", Role.WRITER)
        with runhistory.init(
            entity="alice", project="p", id="r", address=running.address, api_key=writer
        ) as run:
            run.log({"loss": 0.5})
        # Written over gRPC, read through the web UI with the same key store.
        reply = request(running.web.url, "/api/alice/p/runs/r", headers=bearer(writer))
        assert reply.status == 200 and json.loads(reply.body)["state"] == "finished"
    finally:
        running.stop()
