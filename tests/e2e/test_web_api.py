"""The web UI's JSON endpoints and pages over real HTTP on loopback, on each backend.

The data is written through the run service (the same one the gRPC server uses); every
request goes through the web server's socket, as a browser's or a script's would.
"""

from __future__ import annotations

import json
import math
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from runhistory.domain.identity import RunPath, version_id
from runhistory.domain.values import LogCall
from runhistory.service.runs import RunService, Session
from runhistory.service.web.api import EVENT_TYPES
from runhistory.service.web.downsample import MinMaxReducer, downsample
from runhistory.service.web.server import RunningWeb, start_web

T0 = 1_700_000_000.0
E, P = "team", "web"


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def fetch(url: str, method: str = "GET", headers: Mapping[str, str] | None = None) -> Reply:
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, dict(error.headers), error.read())


def log(service: RunService, session: Session, rows: list[dict], step: int | None = None) -> None:
    calls = [LogCall(row, T0 + i, step) for i, row in enumerate(rows)]
    batch = service.limits.max_calls_per_batch
    for start in range(0, len(calls), batch):
        service.log(session.path, calls[start : start + batch], writer=session.writer)


@dataclass
class Scenario:
    base: RunPath  # 300 rows, rewound to 200, 100 more: versions 1 (archived) and 2
    fork: RunPath  # forked from base v2 at step 250, 20 rows of its own
    grandchild: RunPath  # forked from fork at step 260


def make_scenario(service: RunService) -> Scenario:
    base = service.init(E, P, "base", config={"lr": 0.1}, started_at=T0)
    log(service, base, [{"loss": 1.0 / (i + 1), "acc": i / 300} for i in range(300)])
    service.record_artifact(base.path, "produced", "model", "model", "sha256:aa", 10, "s3://m")
    service.finish(base.path, writer=base.writer)
    again = service.init(E, P, resume_from="base?_step=200", config={"lr": 0.05}, started_at=T0)
    log(service, again, [{"loss": 2.0, "acc": 0.5} for _ in range(100)])
    service.record_artifact(base.path, "used", "data", "dataset", "sha256:bb", 20, "s3://d")
    service.finish(again.path, writer=again.writer)
    fork = service.init(E, P, "fork", fork_from="base?_step=250", started_at=T0)
    log(service, fork, [{"loss": -1.0, "note": "text"} for _ in range(20)])
    service.finish(fork.path, writer=fork.writer)
    grandchild = service.init(E, P, "grandchild", fork_from="fork?_step=260", started_at=T0)
    log(service, grandchild, [{"loss": float("nan")}, {"loss": 7.0}])
    service.finish(grandchild.path, writer=grandchild.writer)
    return Scenario(base.path, fork.path, grandchild.path)


@pytest.fixture
def web(service: RunService) -> Iterator[RunningWeb]:
    running = start_web(service, "127.0.0.1:0")
    yield running
    running.stop()


@pytest.fixture
def scenario(service: RunService) -> Scenario:
    return make_scenario(service)


def api(web: RunningWeb, tail: str) -> Reply:
    return fetch(f"{web.url}/api/{E}/{P}/runs{tail}")


# ---- the endpoints, on every backend ---------------------------------------------------------


# Where the fork stands: the base run's version 2 (by its immutable ID) at step 250.
BASE_V2 = {
    "run": f"{E}/{P}/base",
    "step": 250,
    "version": 2,
    "immutable_id": version_id(RunPath(E, P, "base").aggregate_id, 2),
}


def test_runs_of_a_project_with_sparklines(web: RunningWeb, scenario: Scenario) -> None:
    reply = api(web, "?sparkline=loss&points=20")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    document = reply.json()
    assert document["metrics"] == ["acc", "loss"]
    runs = {run["run_id"]: run for run in document["runs"]}
    assert list(runs) == ["base", "fork", "grandchild"]
    assert runs["base"]["state"] == "finished"
    assert runs["base"]["last_step"] == 300
    assert runs["base"]["forked_from"] is None
    assert runs["fork"]["forked_from"] == BASE_V2
    spark = runs["base"]["sparkline"]
    assert spark["key"] == "loss" and 2 <= len(spark["values"]) <= 20
    assert max(spark["values"]) == 2.0 and min(spark["values"]) == pytest.approx(1 / 201)


def test_run_overview(web: RunningWeb, scenario: Scenario) -> None:
    base = api(web, "/base").json()
    assert base["run_id"] == "base" and base["path"] == f"{E}/{P}/base"
    assert base["version"] == 2 and base["state"] == "finished"
    assert base["config"] == {"lr": 0.05}
    assert base["summary"]["loss"] == 2.0
    assert base["forked_from"] is None
    assert base["rewound_from"] == {"version": 1, "step": 200}
    assert [(v["version"], v["archived"], v["rows"]) for v in base["versions"]] == [
        (1, True, 300),
        (2, False, 301),
    ]
    assert base["versions"][0]["rewound_to_step"] == 200
    assert base["forks"] == [{"run": f"{E}/{P}/fork", "source_version": 2, "step": 250}]
    assert [a["name"] for a in base["artifacts"]["produced"]] == ["model"]
    assert base["artifacts"]["produced"][0]["version"] == 1  # it belongs to the archived one
    assert [a["name"] for a in base["artifacts"]["used"]] == ["data"]

    fork = api(web, "/fork").json()
    assert fork["forked_from"] == BASE_V2
    assert fork["rewound_from"] is None
    assert fork["forks"] == [{"run": f"{E}/{P}/grandchild", "source_version": 1, "step": 260}]


def test_archived_version_as_it_was(web: RunningWeb, scenario: Scenario) -> None:
    v1 = api(web, "/base/versions/1").json()
    assert v1["archived"] and v1["rows"] == 300 and v1["rewound_to_step"] == 200
    assert v1["config"] == {"lr": 0.1}
    assert v1["summary"]["loss"] == pytest.approx(1 / 300)
    assert v1["replaced_by"] == 2
    assert [a["name"] for a in v1["artifacts"]["produced"]] == ["model"]
    history = api(web, "/base/history?version=1&keys=loss&max_points=1000").json()
    assert history["version"] == 1 and not history["live"]
    assert history["series"]["loss"]["own"]["steps"] == list(range(300))
    assert api(web, "/base/versions/3").status == 404


def test_fork_history_inherited_and_own(web: RunningWeb, scenario: Scenario) -> None:
    document = api(web, "/fork/history?keys=loss&max_points=1000").json()
    assert document["inherited_until"] == 250
    assert document["rewinds"] == []
    loss = document["series"]["loss"]
    assert loss["inherited"]["steps"] == list(range(251))
    assert loss["inherited"]["values"][:201] == pytest.approx([1 / (i + 1) for i in range(201)])
    assert loss["inherited"]["values"][201:] == [2.0] * 50
    assert loss["own"]["steps"] == list(range(251, 271))
    assert loss["own"]["values"] == [-1.0] * 20
    assert not loss["inherited"]["downsampled"] and not loss["own"]["downsampled"]

    # Forks of forks: everything up to the fork step is inherited, from both ancestors.
    deep = api(web, "/grandchild/history?keys=loss").json()["series"]["loss"]
    assert deep["inherited"]["rows"] == 261
    assert deep["own"]["steps"] == [262] and deep["skipped"] == 1  # the NaN is not drawn

    # Without keys: every numeric metric of the summary; text values are not charted.
    everything = api(web, "/fork/history").json()
    assert everything["keys"] == ["acc", "loss"]
    assert everything["series"]["acc"]["own"]["rows"] == 0


def test_immutable_ids_and_a_fork_rewound_into_its_inherited_range(
    web: RunningWeb, service: RunService, scenario: Scenario
) -> None:
    base = api(web, "/base").json()
    ids = [version_id(scenario.base.aggregate_id, v) for v in (1, 2)]
    assert base["immutable_id"] == ids[1]
    assert [v["immutable_id"] for v in base["versions"]] == ids
    archived = api(web, "/base/versions/1").json()
    assert archived["immutable_id"] == ids[0] and archived["run"]["immutable_id"] == ids[1]
    assert [v["immutable_id"] for v in api(web, "/base/lineage").json()["versions"]] == ids

    # The fork (at 250) rewound to 240, below its fork step: it stands on base at 240 now,
    # while its archived version 1 still stood on 250.
    service.init(E, P, resume_from="fork?_step=240")
    fork = api(web, "/fork").json()
    assert fork["forked_from"] == {**BASE_V2, "step": 240}
    assert api(web, "/fork/lineage").json()["ancestors"][0]["step"] == 240
    live = api(web, "/fork/history?keys=loss").json()
    assert live["inherited_until"] == 240
    assert live["series"]["loss"]["own"]["rows"] == 0
    first = api(web, "/fork/history?keys=loss&version=1").json()
    assert first["inherited_until"] == 250
    assert first["series"]["loss"]["own"]["steps"] == list(range(251, 271))


def test_rewind_points_of_a_rewound_run(web: RunningWeb, scenario: Scenario) -> None:
    document = api(web, "/base/history?keys=loss&min_step=190&max_step=210").json()
    assert document["rewinds"] == [{"version": 1, "step": 200}]
    assert document["inherited_until"] is None
    assert document["series"]["loss"]["own"]["steps"] == list(range(190, 211))


def test_history_downsampling_keeps_spikes(web: RunningWeb, service: RunService) -> None:
    session = service.init(E, P, "long", started_at=T0)
    rows = [{"y": math.sin(i / 50)} for i in range(20_000)]
    rows[7_777]["y"] = 1_000.0
    rows[12_345]["y"] = -500.0
    log(service, session, rows)
    document = api(web, "/long/history?keys=y&max_points=200").json()
    own = document["series"]["y"]["own"]
    assert own["rows"] == 20_000 and own["downsampled"]
    assert len(own["steps"]) <= 200
    assert 1_000.0 in own["values"] and -500.0 in own["values"]
    assert own["steps"][own["values"].index(1_000.0)] == 7_777
    assert own["steps"][own["values"].index(-500.0)] == 12_345
    assert own["steps"] == sorted(own["steps"])
    assert document["state"] == "running"


def test_lineage(web: RunningWeb, scenario: Scenario) -> None:
    tree = api(web, "/grandchild/lineage").json()
    assert [a["run"] for a in tree["ancestors"]] == [f"{E}/{P}/fork", f"{E}/{P}/base"]
    assert tree["forked_from"]["run"] == f"{E}/{P}/fork"
    base = api(web, "/base/lineage").json()
    assert [(v["version"], v["archived"]) for v in base["versions"]] == [(1, True), (2, False)]
    (child,) = base["descendants"]
    assert child["run"] == f"{E}/{P}/fork"
    assert child["descendants"][0]["run"] == f"{E}/{P}/grandchild"


def test_events_filter_and_paging(web: RunningWeb, scenario: Scenario) -> None:
    everything = api(web, "/base/events").json()
    types = [e["type"] for e in everything["events"]]
    assert types == [
        "Created",
        "RowsLogged",
        "ArtifactRecorded",
        "Finished",
        "Rewound",
        "RowsLogged",
        "ArtifactRecorded",
        "Finished",
    ]
    positions = [e["position"] for e in everything["events"]]
    assert positions == sorted(positions)
    logged = everything["events"][1]["payload"]
    assert logged["row_count"] == 300 and logged["steps"] == [0, 299]
    assert len(logged["rows"]) == 3  # cut: the history endpoint serves rows

    rewinds = api(web, "/base/events?type=Rewound").json()["events"]
    assert [e["payload"]["step"] for e in rewinds] == [200]
    first = api(web, "/base/events?limit=3").json()
    assert len(first["events"]) == 3 and first["next_after"] == positions[2]
    rest = api(web, f"/base/events?after={first['next_after']}").json()
    assert [e["position"] for e in rest["events"]] == positions[3:]
    assert rest["next_after"] is None


def test_as_of_an_event(web: RunningWeb, scenario: Scenario) -> None:
    events = api(web, "/base/events").json()["events"]
    before_rewind = events[3]["position"]  # Finished, version 1
    snapshot = api(web, f"/base/as-of?position={before_rewind}").json()
    assert snapshot["rows"] == 300 and snapshot["last_step"] == 299
    assert snapshot["config"] == {"lr": 0.1}
    assert snapshot["summary"]["loss"] == pytest.approx(1 / 300)
    assert snapshot["series"]["loss"]["rows"] == 300
    at_create = api(web, f"/base/as-of?position={events[0]['position']}").json()
    assert at_create["rows"] == 0 and at_create["summary"] == {}


@pytest.mark.parametrize(
    ("tail", "status", "says"),
    [
        ("/nope", 404, "run team/web/nope does not exist"),
        ("/nope/history", 404, "does not exist"),
        ("/base/history?max_points=1", 400, "invalid max_points 1: an integer >= 4"),
        ("/base/history?max_points=abc", 400, "invalid max_points 'abc'"),
        ("/base/history?version=0", 400, "invalid version 0: an integer >= 1"),
        ("/base/history?version=9", 404, "has no version 9"),
        ("/base/history?keys=_step", 400, "system keys"),
        ("/base/history?min_step=5&max_step=2", 400, "min_step 5 is above max_step 2"),
        ("/base/history?colour=red", 400, "unknown parameter 'colour': allowed keys,"),
        ("/base/history?keys=a&keys=b", 400, "given 2 times"),
        ("/base/events?type=Deleted", 400, "unknown event type 'Deleted': allowed Created,"),
        ("/base/events?after=-1", 400, "invalid after -1"),
        ("/base/as-of", 400, "give exactly one of position"),
        ("/base/as-of?position=1&at=5", 400, "give exactly one of position"),
        ("/base/as-of?at=inf", 400, "a finite number"),
        ("/base/versions/x", 400, "invalid version 'x'"),
        ("/base/whatever", 404, "no such endpoint"),
        ("?sparkline=loss&points=0", 400, "invalid points 0"),
    ],
)
@pytest.mark.backends("sqlite-file")  # the mapping does not depend on it
def test_refusals(web: RunningWeb, scenario: Scenario, tail: str, status: int, says: str) -> None:
    reply = api(web, tail)
    assert reply.status == status, reply.body
    error = reply.json()["error"]
    assert says in error["message"]
    assert error["status"] == status
    assert error["code"] == {400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}[status]
    assert b"Traceback" not in reply.body


# ---- once: pages, static files, methods, JSON edge cases, the auth seam ---------------------


@pytest.mark.backends("sqlite-file")
def test_pages_and_static_files(web: RunningWeb, scenario: Scenario) -> None:
    for path, kind in [
        ("/", "home"),
        (f"/{E}/{P}", "project"),
        (f"/{E}/{P}/runs/base", "overview"),
        (f"/{E}/{P}/runs/base/charts", "charts"),
        (f"/{E}/{P}/runs/base/lineage", "lineage"),
        (f"/{E}/{P}/runs/base/audit", "audit"),
        (f"/{E}/{P}/runs/base/versions/1", "version"),
    ]:
        reply = fetch(web.url + path)
        assert reply.status == 200, path
        assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
        assert f"&quot;kind&quot;: &quot;{kind}&quot;".encode() in reply.body
    assert fetch(f"{web.url}/{E}/{P}/runs/base/nonsense").status == 404

    plotly = fetch(f"{web.url}/static/vendor/plotly.min.js")
    assert plotly.status == 200 and b"plotly.js" in plotly.body[:200]
    assert "javascript" in plotly.headers["Content-Type"]
    assert fetch(f"{web.url}/static/app.js").status == 200
    assert fetch(f"{web.url}/static/style.css").headers["Content-Type"].startswith("text/css")
    for bad in ("/static/../api.py", "/static/%2e%2e/api.py", "/static/nope.js", "/static/"):
        assert fetch(web.url + bad).status == 404, bad

    # Only reads: the web UI changes nothing.
    reply = fetch(f"{web.url}/api/{E}/{P}/runs/base", method="POST")
    assert reply.status == 405 and reply.headers["Allow"] == "GET, HEAD"
    head = fetch(f"{web.url}/api/{E}/{P}/runs/base", method="HEAD")
    assert head.status == 200 and head.body == b""


@pytest.mark.backends("memory")
def test_non_finite_values_are_strict_json(web: RunningWeb, service: RunService) -> None:
    session = service.init(E, P, "odd", config={"bad": float("nan")}, started_at=T0)
    log(service, session, [{"x": float("inf")}, {"x": float("-inf")}, {"x": 1.0}])
    body = api(web, "/odd").body.decode()
    assert "NaN" not in body.replace('"NaN"', "")  # only as a string
    overview = json.loads(body, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert overview["config"] == {"bad": "NaN"}
    assert overview["summary"]["x"] == 1.0
    series = api(web, "/odd/history?keys=x").json()["series"]["x"]
    assert series["own"]["values"] == [1.0] and series["skipped"] == 2


def test_event_types_are_the_run_events() -> None:
    from runhistory.domain.run import Run

    names = {
        name
        for name, value in vars(Run).items()
        if isinstance(value, type) and issubclass(value, Run.Event) and name != "Snapshot"
    }
    assert set(EVENT_TYPES) <= names | {"Created"}


# ---- the downsampler on its own -------------------------------------------------------------


def test_small_series_pass_through_exactly() -> None:
    points = [(i, float(i % 7)) for i in range(100)]
    steps, values = downsample(points, max_points=200)
    assert list(zip(steps, values, strict=True)) == points


def test_each_bucket_keeps_its_min_and_max() -> None:
    generator = random.Random(7)
    for _ in range(30):
        n = generator.randrange(1, 5_000)
        step = generator.randrange(0, 50)
        points = []
        for _ in range(n):  # increasing steps with gaps, as a history has
            points.append((step, generator.gauss(0, 1)))
            step += generator.choice((1, 1, 3))
        budget = generator.choice((4, 10, 64, 500))
        reducer = MinMaxReducer(max_points=budget)
        for step, value in points:
            reducer.add(step, value)
        steps, values = reducer.points()
        assert len(steps) <= budget
        assert steps == sorted(steps) and len(set(steps)) == len(steps)
        # Streaming with merges equals bucketing at the final width in one go.
        buckets: dict[int, list[tuple[int, float]]] = {}
        for step, value in points:
            buckets.setdefault(step // reducer.width, []).append((step, value))
        expected = set()
        for members in buckets.values():
            expected.add(min(members, key=lambda p: p[1]))
            expected.add(max(members, key=lambda p: p[1]))
        assert set(zip(steps, values, strict=True)) == expected
        assert max(values) == max(v for _, v in points)
        assert min(values) == min(v for _, v in points)


def test_non_finite_values_are_left_out() -> None:
    steps, values = downsample([(0, 1.0), (1, math.nan), (2, math.inf), (3, 2.0)])
    assert (steps, values) == ([0, 3], [1.0, 2.0])


def test_history_endpoint_speed_on_a_long_run(tmp_path: Any) -> None:
    """Not a benchmark (bench/web_history.py is): a guard that 50k rows take well under
    the seconds a user would notice."""
    from runhistory.service.settings import Settings

    with RunService(Settings(db=str(tmp_path / "long.db"))) as service:
        session = service.init(E, P, "long", started_at=T0)
        for chunk in range(5):
            rows = [{"loss": 1.0 / (1 + chunk * 10_000 + i), "acc": 0.5} for i in range(10_000)]
            log(service, session, rows)
        running = start_web(service, "127.0.0.1:0")
        try:
            started = time.perf_counter()
            document = api(running, "/long/history?keys=loss&max_points=1000").json()
            elapsed = time.perf_counter() - started
        finally:
            running.stop()
    assert document["series"]["loss"]["own"]["rows"] == 50_000
    assert len(document["series"]["loss"]["own"]["steps"]) <= 1000
    assert elapsed < 10, elapsed


def test_history_of_a_running_run_follows_new_rows(web: RunningWeb, service: RunService) -> None:
    session = service.init(E, P, "live", started_at=T0)
    log(service, session, [{"loss": 1.0}] * 5)
    first = api(web, "/live/history?keys=loss").json()
    assert first["state"] == "running" and first["series"]["loss"]["own"]["rows"] == 5
    assert api(web, "/live/history?keys=loss").json() == first  # the cached answer
    log(service, session, [{"loss": 0.5}] * 3)
    second = api(web, "/live/history?keys=loss").json()
    assert second["series"]["loss"]["own"]["rows"] == 8
    service.finish(session.path, writer=session.writer)
    assert api(web, "/live/history?keys=loss").json()["state"] == "finished"
