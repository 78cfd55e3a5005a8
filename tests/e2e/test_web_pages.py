"""The web UI's pages and their edges, over real HTTP on SQLite and PostgreSQL: unknown runs
and versions are 404 pages, writes are 405 METHOD_NOT_ALLOWED, an archived version reports
its own last step and state, "Sign out" only where there are keys, and `/` lists the
projects the caller can read."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED, postgres_schema_url
from test_web_auth import Reply, bearer, request

import runhistory
from runhistory.service.auth import Role
from runhistory.service.bootstrap import Running, start
from runhistory.service.settings import Settings

pytestmark = pytest.mark.backends(*SHARED)


@pytest.fixture(autouse=True)
def spool_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Runs' spools go to a folder of the test's, not the working folder (the superseded
    session's spool is kept for `runhistory sync`)."""
    monkeypatch.setenv("RUNHISTORY_DIR", str(tmp_path / "spool"))


@dataclass
class Site:
    running: Running
    keys: dict[str, str]  # alice's reader, bob's admin; empty without keys

    @property
    def url(self) -> str:
        assert self.running.web is not None
        return self.running.web.url

    def get(self, path: str, key: str | None = None, method: str = "GET") -> Reply:
        return request(self.url, path, method, bearer(key) if key else None)


def write_runs(address: str, keys: dict[str, str]) -> None:
    """alice/p/r: steps 0..9, rewound to 4 while running (v1 archived while running), then
    steps 5..7; alice/q/s and bob/p/t one row each."""

    def init(entity: str, **options: Any) -> Any:
        key = keys.get(f"{entity}-writer")
        return runhistory.init(entity=entity, address=address, api_key=key, **options)

    run = init("alice", project="p", id="r")
    for i in range(10):
        run.log({"loss": 1.0 / (i + 1)})
    run.flush()  # v1 stays running: the rewind archives it as it is
    # a second session beside the live first one (W&B's default would return `run`)
    again = init("alice", project="p", resume_from="r?_step=4", reinit="create_new")
    for i in range(5, 8):
        again.log({"loss": 0.1 * i})
    again.finish()
    with pytest.raises(runhistory.Superseded):
        run.finish()  # the rewind superseded its session
    for entity, project, run_id in (("alice", "q", "s"), ("bob", "p", "t")):
        with init(entity, project=project, id=run_id) as other:
            other.log({"x": 1})


def serve(database: str, with_keys: bool) -> Iterator[Site]:
    running = start(Settings(db=database, require_keys=with_keys), "127.0.0.1:0", "127.0.0.1:0")
    try:
        keys: dict[str, str] = {}
        if running.keys is not None:
            for entity in ("alice", "bob"):
                keys[f"{entity}-writer"] = running.keys.create(entity, Role.WRITER)[1]
            keys["alice"] = running.keys.create("alice", Role.READER)[1]
            keys["bob"] = running.keys.create("bob", Role.ADMIN)[1]
        write_runs(running.address, keys)
        yield Site(running, keys)
    finally:
        running.stop()


@pytest.fixture
def open_site(database: str) -> Iterator[Site]:
    yield from serve(database, with_keys=False)


@pytest.fixture
def other_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A second fresh database, beside `database`, on the same backend."""
    if backend == "postgres":
        yield from postgres_schema_url()
    else:
        yield str(tmp_path / "other.db")


@pytest.fixture
def keyed_site(other_database: str) -> Iterator[Site]:
    yield from serve(other_database, with_keys=True)


def page_of(reply: Reply) -> dict[str, Any]:
    """The page description the HTML shell carries for app.js."""
    found = re.search(r'data-page="([^"]*)"', reply.text)
    assert found, reply.text
    return json.loads(html.unescape(found[1]))


def test_unknown_runs_and_versions_are_404_pages(keyed_site: Site) -> None:
    alice = keyed_site.keys["alice"]
    for path in ("/alice/p/runs/r", "/alice/p/runs/r/charts", "/alice/p/runs/r/versions/1"):
        reply = keyed_site.get(path, alice)
        assert reply.status == 200, path
        assert page_of(reply)["kind"] != "missing"
    for path, says in (
        ("/alice/p/runs/nope", "run alice/p/nope does not exist"),
        ("/alice/p/runs/nope/charts", "run alice/p/nope does not exist"),
        ("/alice/p/runs/nope/audit", "run alice/p/nope does not exist"),
        ("/alice/p/runs/r/versions/3", "run alice/p/r has no version 3: it has versions 1..2"),
        ("/alice/p/runs/r/versions/0", "has no version 0"),
    ):
        reply = keyed_site.get(path, alice)
        assert reply.status == 404, (path, reply.status)
        assert reply.headers["content-type"].startswith("text/html")
        shown = page_of(reply)
        assert shown["kind"] == "missing" and shown["code"] == "NOT_FOUND"
        assert says in shown["message"]
    # Another entity's pages: refused as its JSON is, whether the run exists or not.
    for path in ("/bob/p/runs/t", "/bob/p/runs/nope"):
        reply = keyed_site.get(path, alice)
        assert reply.status == 403 and page_of(reply)["code"] == "PERMISSION_DENIED"


def test_an_immutable_id_leads_to_its_versions_page(keyed_site: Site) -> None:
    alice = keyed_site.keys["alice"]
    overview = json.loads(keyed_site.get("/api/alice/p/runs/r", alice).body)
    archived, live = (v["immutable_id"] for v in overview["versions"])
    for version_id, page in (
        (live, "/alice/p/runs/r"),
        (archived, "/alice/p/runs/r/versions/1"),
    ):
        reply = keyed_site.get(f"/alice/p/runs/{version_id}", alice)
        assert reply.status == 303 and reply.headers["location"] == page, reply.status
        assert page_of(keyed_site.get(page, alice))["kind"] in ("overview", "version")
    # Under another project, or an ID no version has: a 404 page that says so.
    for path in (f"/alice/q/runs/{live}", "/alice/p/runs/v" + "0" * 25):
        reply = keyed_site.get(path, alice)
        assert reply.status == 404, (path, reply.status)
        assert "no run version has the immutable ID" in page_of(reply)["message"]
    # Another entity's: refused before any lookup.
    reply = keyed_site.get(f"/bob/p/runs/{live}", alice)
    assert reply.status == 403 and page_of(reply)["code"] == "PERMISSION_DENIED"


def test_writes_are_405_method_not_allowed(open_site: Site) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/alice/p", "/alice/p/runs/r", "/api/alice/p/runs/r/history"):
            reply = open_site.get(path, method=method)
            assert reply.status == 405, (method, path, reply.status)
            error = json.loads(reply.body)["error"]
            assert error == {
                "code": "METHOD_NOT_ALLOWED",
                "status": 405,
                "message": f"method {method} is not allowed: the web UI is read-only",
            }
            assert reply.headers["allow"] == "GET, HEAD"
    reply = open_site.get("/logout", method="PUT")
    assert reply.status == 405 and reply.headers["allow"] == "GET, HEAD, POST"
    assert json.loads(reply.body)["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_an_archived_version_reports_its_own_last_step_and_state(open_site: Site) -> None:
    def api(tail: str) -> Any:
        reply = open_site.get(f"/api/alice/p/runs/r{tail}")
        assert reply.status == 200, reply.text
        return json.loads(reply.body)

    archived = api("/history?keys=loss&version=1")
    assert archived["version"] == 1 and archived["live"] is False
    assert archived["last_step"] == 9 and archived["state"] == "running"
    assert archived["series"]["loss"]["own"]["steps"] == list(range(10))
    version = api("/versions/1")
    assert version["last_step"] == 9 and version["archived"] is True
    live = api("/history?keys=loss")
    assert live["last_step"] == 7 and live["state"] == "finished" and live["live"] is True
    assert api("/history?keys=loss&version=2")["last_step"] == 7


def test_sign_out_only_on_a_server_with_keys(open_site: Site, keyed_site: Site) -> None:
    for path in ("/", "/alice/p", "/alice/p/runs/r/charts", "/alice/p/runs/nope"):
        reply = open_site.get(path)
        assert "/logout" not in reply.text and "Sign out" not in reply.text
        reply = keyed_site.get(path, keyed_site.keys["alice"])
        assert 'action="/logout"' in reply.text and "Sign out" in reply.text


def test_home_lists_the_projects_the_caller_can_read(keyed_site: Site, open_site: Site) -> None:
    def projects(site: Site, key: str | None) -> list[tuple[str, str, int]]:
        reply = site.get("/api/projects", key)
        assert reply.status == 200, reply.text
        return [(p["entity"], p["project"], p["runs"]) for p in json.loads(reply.body)["projects"]]

    assert projects(keyed_site, keyed_site.keys["alice"]) == [("alice", "p", 1), ("alice", "q", 1)]
    assert projects(keyed_site, keyed_site.keys["bob"]) == [("bob", "p", 1)]
    assert keyed_site.get("/api/projects").status == 401
    assert projects(open_site, None) == [("alice", "p", 1), ("alice", "q", 1), ("bob", "p", 1)]
    home = keyed_site.get("/", keyed_site.keys["alice"])
    assert home.status == 200 and page_of(home) == {"kind": "home"}
    assert keyed_site.get("/api/projects?entity=bob", keyed_site.keys["alice"]).status == 400
