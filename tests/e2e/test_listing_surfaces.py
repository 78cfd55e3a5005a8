"""Listing runs a page at a time on each surface over a real server: gRPC `ListRuns`, the
SDK's `Api().runs()`, the `runhistory runs` command and the JSON API `/api/E/P/runs`. Each
pages through every run while runs are created between pages (each run once, in order),
filters and orders, and refuses a bad cursor, page size or filter with INVALID_ARGUMENT
and a message saying what is allowed. The service layer's side is
tests/integration/test_listing.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from conftest import SHARED

import runhistory
from runhistory.domain.identity import RunPath
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos import runhistory_pb2_grpc as pb_grpc
from runhistory.service.bootstrap import Running, start
from runhistory.service.settings import Settings

pytestmark = pytest.mark.backends(*SHARED)

E, P = "team", "many"
SEEDED = 13
TIMEOUT = 60

# Page of (run IDs, next cursor or None); refusal message, or None when not refused.
Page = tuple[list[str], str | None]


@pytest.fixture
def server(database: str) -> Iterator[Running]:
    running = start(Settings(db=database, require_keys=False), "127.0.0.1:0", "127.0.0.1:0")
    service = running.service
    for i in range(SEEDED):
        path = RunPath(E, P, f"r{i:02d}")
        service.create(path, name=f"name-{i % 3}", tags=["odd"] if i % 2 else ["even"])
        if i % 4 == 0:
            service.finish(path)
    yield running
    running.stop()


# ---- the surfaces: a page of runs, and a refused request's message ---------------------------


def grpc_page(server: Running, cursor: str | None, **options: Any) -> Page:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.RunHistoryStub(channel)
        filters = options.pop("filters", {})
        response = stub.ListRuns(
            pb.ListRunsRequest(
                entity=E,
                project=P,
                page_size=options.get("per_page", 0),
                cursor=cursor or "",
                order=options.get("order", ""),
                filter=pb.RunFilter(
                    states=_listed(filters.get("state")), tags=_listed(filters.get("tags"))
                ),
            ),
            timeout=TIMEOUT,
        )
    return [r.run_id for r in response.runs], response.next_cursor or None


def grpc_refusal(server: Running, request: dict[str, Any]) -> str:
    filters = request.pop("filters", {})
    if "per_page" in request:
        request["page_size"] = request.pop("per_page")
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.RunHistoryStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListRuns(
                pb.ListRunsRequest(
                    entity=E,
                    project=P,
                    filter=pb.RunFilter(
                        states=_listed(filters.get("state")),
                        name_regex=(filters.get("display_name") or {}).get("$regex"),
                    ),
                    **request,
                ),
                timeout=TIMEOUT,
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return str(refused.value.details())


def sdk_page(server: Running, cursor: str | None, **options: Any) -> Page:
    with runhistory.Api(address=server.address) as api:
        listing = api.runs(f"{E}/{P}", cursor=cursor, **options)
        page = listing.next_page()
        return [r.id for r in page], listing.cursor


def sdk_refusal(server: Running, request: dict[str, Any]) -> str:
    with (
        runhistory.Api(address=server.address) as api,
        pytest.raises(runhistory.InvalidArgument) as refused,
    ):
        list(api.runs(f"{E}/{P}", **request))
    return refused.value.message


def cli_page(server: Running, cursor: str | None, **options: Any) -> Page:
    args = ["--per-page", str(options.get("per_page", 50))]
    if cursor:
        args += ["--cursor", cursor]
    if "order" in options:
        args += [f"--order={options['order']}"]
    filters = options.get("filters", {})
    for state in _listed(filters.get("state")):
        args += ["--state", state]
    for tag in _listed(filters.get("tags")):
        args += ["--tag", tag]
    done = cli("runs", f"{E}/{P}", "--address", server.address, "--json", *args)
    assert done.returncode == 0, done.stderr
    more = done.stderr.split("--cursor ")[1].split()[0] if "--cursor" in done.stderr else None
    return [run["id"] for run in json.loads(done.stdout)], more


def cli_refusal(server: Running, request: dict[str, Any]) -> str:
    args = []
    if "per_page" in request:
        args += ["--per-page", str(request["per_page"])]
    if "cursor" in request:
        args += ["--cursor", request["cursor"]]
    if "order" in request:
        args += [f"--order={request['order']}"]
    if "filters" in request:
        regex = request["filters"].get("display_name", {}).get("$regex")
        args += ["--name-regex", regex] if regex else ["--state", request["filters"]["state"]]
    done = cli("runs", f"{E}/{P}", "--address", server.address, *args)
    assert done.returncode in (1, 2), done  # 1: refused by the server, 2: by the arguments
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    return done.stderr


def json_page(server: Running, cursor: str | None, **options: Any) -> Page:
    status, document = http_get(server, _json_params(cursor=cursor, **options))
    assert status == 200, document
    return [run["run_id"] for run in document["runs"]], document["next_cursor"]


def json_refusal(server: Running, request: dict[str, Any]) -> str:
    status, document = http_get(server, _json_params(**request))
    assert status == 400, document
    assert document["error"]["code"] == "INVALID_ARGUMENT"
    return str(document["error"]["message"])


def _json_params(cursor: str | None = None, **options: Any) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if cursor:
        params["cursor"] = cursor
    if "per_page" in options:
        params["per_page"] = options["per_page"]
    if "order" in options:
        params["order"] = options["order"]
    filters = options.get("filters", {})
    if "state" in filters:
        params["state"] = ",".join(_listed(filters["state"]))
    if "tags" in filters:
        params["tags"] = ",".join(_listed(filters["tags"]))
    if "display_name" in filters:
        params["name_regex"] = filters["display_name"]["$regex"]
    return params


SURFACES: dict[str, tuple[Callable[..., Page], Callable[[Running, dict[str, Any]], str]]] = {
    "grpc": (grpc_page, grpc_refusal),
    "sdk": (sdk_page, sdk_refusal),
    "cli": (cli_page, cli_refusal),
    "json": (json_page, json_refusal),
}


def _listed(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value["$in"])


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runhistory.service.cli", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def http_get(server: Running, params: dict[str, Any]) -> tuple[int, Any]:
    assert server.web is not None
    url = f"{server.web.url}/api/{E}/{P}/runs?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# ---- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
def test_paging_gives_each_run_once_in_order_while_runs_are_created(
    server: Running, surface: str
) -> None:
    page_of = SURFACES[surface][0]
    seeded = [f"r{i:02d}" for i in range(SEEDED)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        ids, cursor = page_of(server, cursor, per_page=4)
        seen += ids
        pages += 1
        if cursor is None:
            break
        assert len(ids) == 4
        server.service.create(RunPath(E, P, f"new{pages}"))  # between pages
    assert seen[:SEEDED] == seeded
    assert seen[SEEDED:] == [f"new{n}" for n in range(1, pages)]

    # Newest first: runs created meanwhile are before the cursor, and not listed.
    seen, cursor = [], None
    while True:
        ids, cursor = page_of(server, cursor, per_page=5, order="-created_at")
        seen += ids
        if cursor is None:
            break
        server.service.create(RunPath(E, P, f"later{len(seen)}"))
    assert seen[-SEEDED:] == seeded[::-1]
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("surface", SURFACES)
def test_filters_and_orders(server: Running, surface: str) -> None:
    page_of = SURFACES[surface][0]
    finished = {"state": "finished"}
    assert page_of(server, None, filters=finished) == (["r00", "r04", "r08", "r12"], None)
    ids, cursor = page_of(
        server, None, filters={"state": {"$in": ["running"]}, "tags": "odd"}, per_page=2,
        order="-created_at",
    )  # fmt: skip
    assert ids == ["r11", "r09"] and cursor is not None
    rest = page_of(
        server, cursor, filters={"state": {"$in": ["running"]}, "tags": "odd"}, per_page=2,
        order="-created_at",
    )  # fmt: skip
    assert rest == (["r07", "r05"], cursor and rest[1])
    # A run that changes moves to the front of the most recently updated.
    server.service.finish(RunPath(E, P, "r03"))
    assert page_of(server, None, order="-updated_at", per_page=1)[0] == ["r03"]


@pytest.mark.parametrize("surface", SURFACES)
def test_bad_cursor_page_size_and_filter_are_invalid_argument(
    server: Running, surface: str
) -> None:
    refusal = SURFACES[surface][1]
    ascending_cursor = grpc_page(server, None, per_page=2)[1]
    assert ascending_cursor is not None
    # What each message says (the CLI's argument checks quote the choices they list).
    cases: list[tuple[dict[str, Any], tuple[str, ...]]] = [
        ({"cursor": "not-a-cursor"}, ("invalid cursor", "next_cursor of the previous page")),
        ({"cursor": ascending_cursor, "order": "-created_at"}, ("another listing",)),
        ({"per_page": 1001}, ("1 to 1000",)),
        ({"per_page": -1}, ("1 to 1000",)),
        ({"order": "by_name"}, ("by_name", "+created_at", "-updated_at")),
        ({"filters": {"state": "paused"}}, ("paused", "running", "finished", "crashed")),
        ({"filters": {"display_name": {"$regex": "(unclosed"}}}, ("(unclosed", "$regex")),
    ]
    for request, said in cases:
        told = refusal(server, dict(request))
        assert all(part in told for part in said), (request, told)
    if surface == "sdk":
        with runhistory.Api(address=server.address) as api:
            with pytest.raises(runhistory.InvalidArgument, match="cannot filter runs by '\\$or'"):
                api.runs(f"{E}/{P}", filters={"$or": [{"state": "running"}]})
            with pytest.raises(runhistory.InvalidArgument, match="1 to 1000"):
                api.runs(f"{E}/{P}", per_page=0)


def test_the_sdk_reads_lazily_a_page_at_a_time(server: Running) -> None:
    with runhistory.Api(address=server.address) as api:
        listing = api.runs(f"{E}/{P}", per_page=5)
        assert len(listing) == SEEDED  # a count, before any page is read
        assert listing[0].id == "r00" and listing.cursor is not None
        assert [r.id for r in listing[:7]] == [f"r{i:02d}" for i in range(7)]
        assert listing[-1].id == f"r{SEEDED - 1:02d}" and listing.cursor is None
        assert [r.id for r in listing] == [f"r{i:02d}" for i in range(SEEDED)]
        assert not api.runs("team/empty")
        assert len(api.runs(f"{E}/{P}", filters={"tags": "odd"})) == 6


def test_the_json_api_draws_sparklines_of_the_runs_asked_for(server: Running) -> None:
    from runhistory.domain.values import LogCall

    for run_id in ("r01", "r02"):
        path = RunPath(E, P, run_id)
        server.service.resume(path)
        server.service.log(path, [LogCall({"loss": float(i)}, 1.0 + i) for i in range(10)])
    assert server.web is not None
    base = f"{server.web.url}/api/{E}/{P}"
    with urllib.request.urlopen(f"{base}/sparklines?key=loss&runs=r01,r02,r03") as response:
        found = json.loads(response.read())["sparklines"]
    assert set(found) == {"r01", "r02", "r03"}
    assert found["r01"]["values"][0] == 0.0 and found["r01"]["values"][-1] == 9.0
    assert found["r03"]["values"] == []
    for query, message in (
        ("runs=r01", "key=KEY"),
        ("key=loss", "1 to 100 run IDs"),
        ("key=loss&runs=" + ",".join(f"r{i}" for i in range(101)), "1 to 100 run IDs"),
    ):
        try:
            urllib.request.urlopen(f"{base}/sparklines?{query}")
            raise AssertionError(f"{query} was not refused")
        except urllib.error.HTTPError as error:
            assert error.code == 400
            assert message in json.loads(error.read())["error"]["message"]
    try:
        urllib.request.urlopen(f"{base}/sparklines?key=loss&runs=r01,nope")
        raise AssertionError("an unknown run was not refused")
    except urllib.error.HTTPError as error:
        assert error.code == 404
        assert "does not exist" in json.loads(error.read())["error"]["message"]
    status, page = http_get(server, {"per_page": 2, "sparkline": "loss"})
    assert status == 200 and [r["run_id"] for r in page["runs"]] == ["r00", "r01"]
    assert page["runs"][1]["sparkline"]["values"][-1] == 9.0 and page["metrics"] == ["loss"]
    status, refused = http_get(server, {"per_page": 101, "sparkline": "loss"})
    assert status == 400 and "at most 100 runs" in refused["error"]["message"]
