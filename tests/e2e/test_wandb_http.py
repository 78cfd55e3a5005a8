"""The W&B API over HTTP, request by request, against a live server with keys (SQLite file
and PostgreSQL): GraphQL operations, file_stream posts, retries, fencing, refusals."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import SHARED
from test_web_auth import Reply, request

import runhistory
from runhistory.service import bootstrap
from runhistory.service.auth import KeyStore, Role
from runhistory.service.settings import Settings
from runhistory.service.web.server import RunningWeb

# The operations as the SDK declares them (only declared variables reach an operation).
UPSERT = (
    "mutation UpsertBucket ($id: String, $name: String, $project: String, $entity: String,"
    " $config: JSONString, $host: String, $program: String, $tags: [String!],"
    " $displayName: String, $summaryMetrics: JSONString) { upsertBucket { bucket { id } } }"
)
RESUME_STATUS = (
    "query RunResumeStatus ($project: String, $entity: String, $name: String!)"
    " { model { bucket(name: $name) { id } } }"
)
REWIND = (
    "mutation RewindRun ($runName: String!, $entity: String, $project: String,"
    " $metricName: String!, $metricValue: Float!) { rewindRun { rewoundRun { id } } }"
)
CREATE_RUN_FILES = (
    "mutation CreateRunFiles ($entity: String!, $project: String!, $run: String!,"
    " $files: [String!]!) { createRunFiles { files { name } } }"
)
T0 = 1.7e9


# Servers in other processes, or restarted, share the store.
pytestmark = pytest.mark.backends(*SHARED)


@dataclass
class Server:
    """A live server with the W&B API, and keys: three of entity `team`, one of `other`."""

    grpc: bootstrap.Running
    web: RunningWeb
    keys: KeyStore
    writer: str
    writer2: str  # a second writer key of the same entity
    reader: str
    other: str  # a writer key of another entity


@contextmanager
def serving(database: str) -> Iterator[Server]:
    running = bootstrap.start(Settings(db=database), "127.0.0.1:0", "127.0.0.1:0")
    assert running.web is not None and running.keys is not None
    keys = running.keys
    try:
        yield Server(
            running,
            running.web,
            keys,
            writer=keys.create("team", Role.WRITER)[1],
            writer2=keys.create("team", Role.WRITER)[1],
            reader=keys.create("team", Role.READER)[1],
            other=keys.create("other", Role.WRITER)[1],
        )
    finally:
        running.stop()


@dataclass
class Site(Server):
    """The server, with requests as the SDK makes them."""

    def post(self, path: str, document: Any, key: str | None = None, raw: bytes | None = None):
        headers = {"Content-Type": "application/json", "User-Agent": "wandb-core"}
        if key is not False:
            basic = base64.b64encode(f"api:{key or self.writer}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        body = raw if raw is not None else json.dumps(document).encode()
        return request(self.web.url, path, "POST", headers, body)

    def gql(self, query: str, key: str | None = None, **variables: Any) -> dict[str, Any]:
        reply = self.post("/graphql", {"query": query, "variables": variables}, key)
        assert reply.status == 200, reply.text
        return json.loads(reply.body)

    def data(self, query: str, key: str | None = None, **variables: Any) -> dict[str, Any]:
        answer = self.gql(query, key, **variables)
        assert "errors" not in answer, answer
        return answer["data"]

    def error(self, query: str, key: str | None = None, **variables: Any) -> str:
        answer = self.gql(query, key, **variables)
        assert answer["data"] is None
        return answer["errors"][0]["message"]

    def stream(self, run: str, document: Any, key: str | None = None) -> Reply:
        return self.post(f"/files/team/p/{run}/file_stream", document, key)

    def api(self) -> runhistory.Api:
        return runhistory.Api(address=self.grpc.address, api_key=self.writer2)

    def events(self, run: str) -> list[str]:
        with self.api() as api:
            return [event["type"] for event in api.run(f"team/p/{run}").events()]

    def steps(self, run: str) -> list[int]:
        with self.api() as api:
            return [row["_step"] for row in api.run(f"team/p/{run}").scan_history()]


@pytest.fixture
def site(database: str) -> Iterator[Site]:
    with serving(database) as server:
        yield Site(**vars(server))


def line(step: int, **values: Any) -> str:
    return json.dumps({"_step": step, "_timestamp": T0 + step, "_runtime": 0.1, **values})


def history(offset: int, *steps: int) -> dict[str, Any]:
    content = [line(step, loss=float(step)) for step in steps]
    return {"files": {"wandb-history.jsonl": {"offset": offset, "content": content}}}


def start(site: Site, run: str, key: str | None = None, **variables: Any) -> dict[str, Any]:
    """The SDK's first UpsertBucket: entity null, host and program set."""
    upsert = {"name": run, "project": "p", "entity": None, "host": "vm", "program": "t.py"}
    return site.data(UPSERT, key, **{**upsert, **variables})["upsertBucket"]


# ---- a run from start to finish ------------------------------------------------------------


def test_a_run_logged_as_the_sdk_does_it(site: Site):
    bucket = start(site, "r1", config=json.dumps({"lr": {"value": 0.1}, "_wandb": {"value": {}}}))
    assert bucket["inserted"] is True
    assert bucket["bucket"]["project"] == {
        "id": bucket["bucket"]["project"]["id"],
        "name": "p",
        "entity": {"id": "team", "name": "team"},  # the key's entity stands for null
    }
    assert bucket["bucket"]["historyLineCount"] == 0
    assert json.loads(bucket["bucket"]["config"]) == {"lr": {"value": 0.1}}
    assert site.stream("r1", {}).status == 200  # a heartbeat
    assert site.stream("r1", history(0, 0, 1, 2)).status == 200
    # the same offset posted again (a retry) is acknowledged and gives no second row
    assert site.stream("r1", history(0, 0, 1, 2)).status == 200
    assert site.stream("r1", history(2, 2, 3)).status == 200  # overlapping: only line 3 is new
    assert site.steps("r1") == [0, 1, 2, 3]
    assert site.events("r1") == ["Created", "RowsLogged", "RowsLogged"]
    # a config update from the same session: only new values are an event
    config = json.dumps({"lr": {"value": 0.1}, "bs": {"value": 32}, "_wandb": {"value": {"e": 1}}})
    site.data(UPSERT, name="r1", project="p", entity="team", config=config)
    site.data(UPSERT, name="r1", project="p", entity="team", config=config)
    summary = json.dumps({"loss": 3.0, "best": 0.5, "_step": 3, "_wandb": {"runtime": 1}})
    final = {
        "files": {"wandb-summary.json": {"offset": 0, "content": [summary]}},
        "complete": True,
        "exitcode": 0,
    }
    assert site.stream("r1", final).status == 200
    assert site.stream("r1", final).status == 200  # the final post, retried
    with site.api() as api:
        run = api.run("team/p/r1")
        assert run.state == "finished"
        assert run.config == {"lr": 0.1, "bs": 32}
        assert run.summary == {"loss": 3.0, "best": 0.5}
    types = site.events("r1")
    assert types[3:] == ["ConfigUpdated", "SummarySet", "Finished"]


def test_a_summary_sent_before_its_rows_makes_no_explicit_values(site: Site):
    start(site, "r1")
    summary = json.dumps({"loss": 3.0, "_timestamp": T0 + 3})  # interim: no _step
    ahead = {"files": {"wandb-summary.json": {"offset": 0, "content": [summary]}}}
    assert site.stream("r1", ahead).status == 200
    both = history(0, 0, 1, 2, 3)
    both["files"].update(ahead["files"])
    assert site.stream("r1", both).status == 200
    assert "SummarySet" not in site.events("r1")
    with site.api() as api:
        assert api.run("team/p/r1").summary == {"loss": 3.0}


def test_a_nonzero_exit_code_crashes_the_run(site: Site):
    start(site, "r1")
    assert site.stream("r1", {"complete": True, "exitcode": 1}).status == 200
    with site.api() as api:
        assert api.run("team/p/r1").state == "crashed"


# ---- sessions: resume, fencing, what UpsertBucket refuses ---------------------------------


def rewind_elsewhere(site: Site, run: str, step: int) -> None:
    """Someone else rewinds the run, with runhistory's own SDK."""
    other = runhistory.init(
        entity="team",
        project="p",
        resume_from=f"{run}?_step={step}",
        address=site.grpc.address,
        api_key=site.writer2,
    )
    other.finish()


def test_a_post_after_someone_else_rewound_the_run_is_refused_and_changes_nothing(site: Site):
    start(site, "r1")
    site.stream("r1", history(0, *range(6)))
    rewind_elsewhere(site, "r1", 2)
    before = site.events("r1")
    reply = site.stream("r1", history(6, 6, 7))
    assert reply.status == 409  # the SDK stops sending: its later rows cannot land
    assert "held by another session" in reply.text
    assert site.events("r1") == before
    assert site.steps("r1") == [0, 1, 2]
    # so are its config updates
    assert "no longer writes" in site.error(UPSERT, name="r1", project="p", entity="team")


def test_a_resume_by_another_key_fences_the_session_before_it(site: Site):
    first = start(site, "r1")["bucket"]["id"]
    site.stream("r1", history(0, 0, 1))
    status = site.data(RESUME_STATUS, site.writer2, name="r1", project="p", entity=None)
    storage_id = status["model"]["bucket"]["id"]
    resumed = start(site, "r1", site.writer2, id=storage_id)
    assert resumed["inserted"] is False
    assert resumed["bucket"]["historyLineCount"] == 2
    assert resumed["bucket"]["id"] not in (first, storage_id)
    assert site.stream("r1", history(2, 2), site.writer).status == 409
    assert site.stream("r1", history(2, 2), site.writer2).status == 200
    assert "no longer writes" in site.error(UPSERT, name="r1", project="p", entity="team", id=first)
    assert site.steps("r1") == [0, 1, 2]


def test_the_same_id_without_resume_is_refused(site: Site):
    start(site, "r1")
    message = site.error(UPSERT, name="r1", project="p", entity=None, host="vm", program="t.py")
    assert "already exists" in message and "resume='allow'" in message


def test_a_resume_of_a_finished_run_continues_its_lines_and_steps(site: Site):
    start(site, "r1")
    site.stream("r1", {**history(0, 0, 1, 2), "complete": True, "exitcode": 0})
    status = site.data(RESUME_STATUS, name="r1", project="p", entity=None)["model"]
    bucket = status["bucket"]
    resumed = start(site, "r1", id=bucket["id"], tags=[])
    assert resumed["bucket"]["historyLineCount"] == 3
    assert site.stream("r1", history(3, 3, 4)).status == 200
    assert site.steps("r1") == [0, 1, 2, 3, 4]
    assert site.events("r1")[-3:] == ["Resumed", "RowsLogged", "RowsLogged"]  # lines, rows


# ---- RunResumeStatus -------------------------------------------------------------------------


def test_the_resume_status_of_a_run_is_well_formed_in_every_field(site: Site):
    start(site, "r1", config=json.dumps({"lr": {"value": 0.1}}), tags=["a"])
    summary = json.dumps({"best": 0.5})
    site.stream(
        "r1",
        {
            "files": {
                "wandb-history.jsonl": {"offset": 0, "content": [line(0, x=1), line(1, x=2)]},
                "wandb-summary.json": {"offset": 0, "content": [summary]},
            }
        },
    )
    model = site.data(RESUME_STATUS, name="r1", project="p", entity=None)["model"]
    assert model["name"] == "p" and model["entity"]["name"] == "team"
    bucket = model["bucket"]
    for count in ("logLineCount", "historyLineCount", "eventsLineCount"):
        assert isinstance(bucket[count], int)
    assert bucket["historyLineCount"] == 2
    metrics = json.loads(bucket["summaryMetrics"])
    assert metrics["best"] == 0.5 and metrics["x"] == 2 and metrics["_step"] == 1
    assert isinstance(metrics["_runtime"], float)
    tail = [json.loads(row) for row in json.loads(bucket["historyTail"])]
    assert tail[-1]["_step"] == 1 and tail[-1]["x"] == 2
    assert json.loads(bucket["eventsTail"]) == []
    assert all(isinstance(v, dict) and "value" in v for v in json.loads(bucket["config"]).values())
    assert "t" in json.loads(bucket["wandbConfig"])
    assert bucket["tags"] == ["a"]
    absent = site.data(RESUME_STATUS, name="nope", project="p", entity=None)["model"]
    assert absent["bucket"] is None
    assert "reader key" in site.error(RESUME_STATUS, site.reader, name="r1", project="p")


# ---- RewindRun and forks ---------------------------------------------------------------------


def test_a_rewind_keeps_the_rows_up_to_its_step_and_numbers_lines_after_them(site: Site):
    start(site, "r1")
    site.stream("r1", history(0, *range(10)))
    rewound = site.data(
        REWIND, runName="r1", entity=None, project="p", metricName="_step", metricValue=4.0
    )["rewindRun"]["rewoundRun"]
    assert rewound["historyLineCount"] == 5
    assert rewound["name"] == "r1"
    # the SDK's UpsertBucket after RewindRun: the rewind's session, with its branch point
    config = json.dumps({"_wandb": {"value": {"branch_point": {"run_id": "r1", "step": 4}}}})
    after = start(site, "r1", id=rewound["id"], config=config)["bucket"]
    assert after["id"] == rewound["id"] and after["historyLineCount"] == 5
    assert site.stream("r1", history(5, 5, 6)).status == 200
    assert site.steps("r1") == [0, 1, 2, 3, 4, 5, 6]
    with site.api() as api:
        assert [v["version"] for v in api.run("team/p/r1").versions()] == [1, 2]


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"runName": "r1", "metricName": "_step", "metricValue": 50}, "last committed step is 3"),
        ({"runName": "r1", "metricName": "loss", "metricValue": 1}, "by _step only"),
        ({"runName": "r1", "metricName": "_step", "metricValue": 1.5}, "integer >= 0"),
        ({"runName": "nope", "metricName": "_step", "metricValue": 1}, "does not exist"),
    ],
)
def test_a_bad_rewind_is_refused_naming_the_reason(site: Site, variables: dict, message: str):
    start(site, "r1")
    site.stream("r1", history(0, 0, 1, 2, 3))
    assert message in site.error(REWIND, project="p", **variables)
    assert site.events("r1") == ["Created", "RowsLogged"]


def branch(run: str, step: int) -> str:
    return json.dumps({"_wandb": {"value": {"branch_point": {"run_id": run, "step": step}}}})


def test_a_fork_sees_the_rows_up_to_its_step_and_logs_after_them(site: Site):
    start(site, "r1", config=json.dumps({"lr": {"value": 0.1}}))
    site.stream("r1", history(0, *range(10)))
    fork = start(site, "f1", config=branch("r1", 4))
    assert fork["inserted"] is True and fork["bucket"]["historyLineCount"] == 5
    assert json.loads(fork["bucket"]["config"]) == {"lr": {"value": 0.1}}  # the source's
    # the fork session's later UpsertBucket carries the branch point too: an update
    site.data(UPSERT, name="f1", project="p", entity="team", config=branch("r1", 4))
    assert site.stream("f1", history(5, 5, 6)).status == 200
    assert site.steps("f1") == [0, 1, 2, 3, 4, 5, 6]
    with site.api() as api:
        assert api.run("team/p/f1").forked_from["run"] == "team/p/r1"
    assert site.events("f1") == ["Created", "RowsLogged", "RowsLogged"]


@pytest.mark.parametrize(
    ("source", "step", "message"),
    [("r1", 50, "last committed step is 9"), ("nope", 1, "does not exist")],
)
def test_a_bad_fork_is_refused_naming_the_reason(site: Site, source: str, step: int, message):
    start(site, "r1")
    site.stream("r1", history(0, *range(10)))
    assert message in site.error(
        UPSERT, name="f1", project="p", entity=None, config=branch(source, step)
    )
    with site.api() as api:
        assert [r.id for r in api.runs("team/p")] == ["r1"]


# ---- malformed posts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1]", 400, "JSON object"),
        (json.dumps({"files": []}).encode(), 400, "files is an object"),
        (json.dumps({"files": {"wandb-history.jsonl": {"offset": 2}}}).encode(), 400, "content"),
        (
            json.dumps(
                {"files": {"wandb-history.jsonl": {"offset": -1, "content": [line(2)]}}}
            ).encode(),
            400,
            "integer >= 0",
        ),
        (
            json.dumps(
                {"files": {"wandb-history.jsonl": {"offset": 2, "content": [line(2), "{}"]}}}
            ).encode(),
            400,
            "history line 3 has no _step",
        ),
        (
            json.dumps(
                {"files": {"wandb-history.jsonl": {"offset": 2, "content": ["{bad"]}}}
            ).encode(),
            400,
            "history line 2 is not valid JSON",
        ),
        (
            json.dumps(
                {
                    "files": {
                        "wandb-history.jsonl": {"offset": 2, "content": [line(2)]},
                        "wandb-summary.json": {"offset": 0, "content": ["[1]"]},
                    }
                }
            ).encode(),
            400,
            "summary line is a JSON object",
        ),
        (json.dumps({"complete": True, "exitcode": "x"}).encode(), 400, "exitcode"),
        (json.dumps({"complete": "yes"}).encode(), 400, "complete"),
        (json.dumps(history(5, 5)).encode(), 409, "lines 2 to 4 are missing"),
        (json.dumps(history(2, 1)).encode(), 409, "at step 1"),
    ],
)
def test_a_malformed_post_is_refused_whole(site: Site, body: bytes, status: int, message: str):
    start(site, "r1")
    site.stream("r1", history(0, 0, 1))
    before = site.events("r1")
    reply = site.post("/files/team/p/r1/file_stream", None, raw=body)
    assert reply.status == status, reply.text
    assert message in json.loads(reply.body)["error"]["message"]
    assert site.events("r1") == before


def test_a_row_over_the_limits_is_dropped_alone_and_the_post_taken(
    site: Site, caplog: pytest.LogCaptureFixture
):
    """Refusing the post (the SDK gives up on a 4xx) would lose every later row; the row's
    data is dropped, its line and step kept, the rest applied, and the server says so."""
    start(site, "r1")
    content = [line(0, loss=0.0), line(1, s="x" * 11_000_000, loss=1.0), line(2, loss=2.0)]
    summary = json.dumps({"_step": 2, "loss": 2.0, "k" * 300: 1})  # a key over 256 chars
    post = {
        "files": {
            "wandb-history.jsonl": {"offset": 0, "content": content},
            "wandb-summary.json": {"offset": 0, "content": [summary]},
        }
    }
    with caplog.at_level(logging.WARNING, logger="runhistory.service.wandb"):
        reply = site.stream("r1", post)
    assert reply.status == 200, reply.text
    assert site.steps("r1") == [0, 1, 2]
    with site.api() as api:
        run = api.run("team/p/r1")
        assert [row.get("loss") for row in run.scan_history()] == [0.0, None, 2.0]
        assert run.summary == {"loss": 2.0}
    logged = [r.getMessage() for r in caplog.records]
    assert any("step 1 was dropped" in m and "at most 10485760 bytes" in m for m in logged)
    assert any("summary value was dropped" in m and "at most 256" in m for m in logged)
    # The next post goes on from line 3.
    assert site.stream("r1", history(3, 3)).status == 200
    assert site.steps("r1") == [0, 1, 2, 3]


# ---- keys and refusals -----------------------------------------------------------------------


def test_keys_are_checked_on_every_route(site: Site):
    start(site, "r1")
    assert site.post("/graphql", {"query": UPSERT}, key=False).status == 401
    assert site.post("/files/team/p/r1/file_stream", {}, key=False).status == 401
    bogus = "rh_0123456789ab_" + "A" * 43
    assert site.post("/graphql", {"query": UPSERT}, key=bogus).status == 401
    assert "reader key" in site.error(UPSERT, site.reader, name="r2", project="p")
    assert site.stream("r1", history(0, 0), site.reader).status == 403
    message = site.error(UPSERT, site.other, name="r2", project="p", entity="team")
    assert "belongs to entity 'other'" in message
    assert site.stream("r1", history(0, 0), site.other).status == 403
    assert site.events("r1") == ["Created"]


def test_a_revoked_key_is_refused_at_once(site: Site):
    start(site, "r1")
    site.stream("r1", history(0, 0))
    key_id = site.writer.split("_")[1]
    site.keys.revoke(key_id)
    reply = site.stream("r1", history(1, 1))
    assert reply.status == 401 and "revoked" in reply.text
    assert site.post("/graphql", {"query": UPSERT, "variables": {"name": "x"}}).status == 401
    assert site.events("r1") == ["Created", "RowsLogged"]


def test_unknown_operations_and_bad_requests_are_graphql_errors_not_5xx(site: Site):
    message = site.error("mutation CreateArtifact ($input: X) { createArtifact { id } }")
    assert "CreateArtifact" in message
    assert "(unnamed)" in site.error("{ viewer { id } }")
    reply = site.post("/graphql", None, raw=b"{nope")
    assert reply.status == 200 and "not valid JSON" in reply.text
    assert site.post("/graphql", {"variables": {}}).status == 200
    assert site.post("/sdk/otel/v1/metrics", None, key=False, raw=b"").status == 404


def test_the_trivial_operations(site: Site):
    viewer = site.data("query Viewer { viewer { id entity } }")["viewer"]
    assert viewer["entity"] == "team" and viewer["flags"] == "{}"
    assert (
        site.data("query GetDefaultEntity { viewer { id entity } }")["viewer"]["entity"] == "team"
    )
    features = site.data("query ServerFeaturesQuery { serverInfo { features { name } } }")
    assert features == {"serverInfo": {"features": []}}
    files = site.data(
        CREATE_RUN_FILES,
        entity="team",
        project="p",
        run="r1",
        files=["config.yaml", "wandb-summary.json"],
    )["createRunFiles"]
    assert [f["uploadUrl"] for f in files["files"]] == [None, None]
    assert len(files["files"]) == 2
