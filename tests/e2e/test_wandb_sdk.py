"""The real `wandb` SDK (the version the test extra pins), unchanged, against a live server
with keys, on a SQLite file and on PostgreSQL: every script runs in a subprocess with a time
limit, so a hang fails the test. What it wrote is read back through `wandb.Api()` and
through runhistory's own API."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED
from test_wandb_http import Server, serving

import runhistory
from runhistory.domain.errors import NotFound

ENTITY = "team"
SCRIPT_SECONDS = 180  # a script that hangs fails its test after this long

PRELUDE = """
import json, math, os, sys, time
import wandb

def settings(**more):
    # Rows reach the server within a second, and no retry loop outlives the test's limit.
    options = dict(x_file_stream_transmit_interval=1, x_file_stream_retry_max=2,
                   x_graphql_retry_max=2, init_timeout=60)
    options.update(more)
    return wandb.Settings(**options)

def quiet(**more):
    # Only what a run logs: no system metrics, console capture or metadata.
    return settings(x_disable_stats=True, x_disable_meta=True, console="off",
                    x_save_requirements=False, **more)

def result(value):
    print("RESULT " + json.dumps(value), flush=True)
"""


pytestmark = pytest.mark.backends(*SHARED)


@dataclass
class Site:
    """The server, and a folder for the scripts and the SDK's files."""

    server: Server
    folder: Path

    def env(self, key: str | None = None) -> dict[str, str]:
        return sdk_env(self.server.web.url, key or self.server.writer, self.folder)

    def start(self, body: str, key: str | None = None) -> subprocess.Popen[str]:
        return start_script(body, self.env(key), self.folder)

    def run(self, body: str, key: str | None = None) -> Any:
        """Run a script to its end; what it passed to `result()`."""
        return finish(self.start(body, key))

    def api(self, key: str | None = None) -> runhistory.Api:
        return runhistory.Api(address=self.server.grpc.address, api_key=key or self.server.writer)


def sdk_env(base_url: str, key: str, folder: Path) -> dict[str, str]:
    """The environment of a training script: the two variables, and the SDK kept quiet,
    offline from anything but the server, and writing into `folder`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_BASE_URL=base_url,
        WANDB_API_KEY=key,
        WANDB_ERROR_REPORTING="false",
        WANDB_SILENT="true",
        WANDB_MODE="online",
        WANDB_DIR=str(folder / "wandb"),
        WANDB_CACHE_DIR=str(folder / "cache"),
        WANDB_CONFIG_DIR=str(folder / "config"),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    for name in ("wandb", "cache", "config"):
        (folder / name).mkdir(exist_ok=True)
    return env


def start_script(body: str, env: dict[str, str], folder: Path) -> subprocess.Popen[str]:
    script = folder / f"script_{time.monotonic_ns()}.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    return subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], seconds: float = SCRIPT_SECONDS) -> Any:
    try:
        out, err = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the wandb script hung for {seconds} s\n{out}\n{err[-3000:]}")
    if process.returncode != 0:
        pytest.fail(f"the wandb script failed ({process.returncode})\n{out}\n{err[-3000:]}")
    found = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert found, f"the script printed no result\n{out}\n{err[-3000:]}"
    return json.loads(found[-1].removeprefix("RESULT "))


@pytest.fixture
def site(database: str, tmp_path: Path) -> Iterator[Site]:
    with serving(database) as server:
        yield Site(server, tmp_path)


def steps(rows: list[dict[str, Any]]) -> list[int]:
    return [row["_step"] for row in rows]


# ---- the W&B "rewind a run" page's scripts --------------------------------------------------

SEED_SCRIPTS = """
run1 = wandb.init(project="rewind", settings=settings())
for i in range(300):
    run1.log({"metric": i})
run1.finish()

run2 = wandb.init(project="rewind", resume_from=f"{run1.id}?_step=200", settings=settings())
for i in range(200, 300):
    if i < 250:
        run2.log({"metric": i, "step": i})
    else:
        subtle_spike = i + (2 * math.sin(i / 3.0))
        run2.log({"metric": subtle_spike, "step": i})
    run2.log({"additional_metric": i * 1.1, "step": i})
run2.finish()

forked = wandb.init(project="rewind", fork_from=f"{run2.id}?_step=300", settings=settings())
for i in range(301, 311):
    forked.log({"metric": i * 3})
forked.finish()

try:
    wandb.init(project="rewind", fork_from=f"{run1.id}?_step=500", settings=settings())
    refusal = None
except Exception as error:
    refusal = str(error)
result({"run": run1.id, "rewound_id": run2.id, "fork": forked.id, "refusal": refusal})
"""

READ_BACK = """
api = wandb.Api()
found = {}
for run_id in sys.argv[1:] or RUNS:
    run = api.run(f"team/rewind/{run_id}")
    found[run_id] = {
        "state": run.state,
        "config": run.config,
        "summary": {k: v for k, v in run.summary.items() if not k.startswith("_")},
        "history": run.history(samples=1000, pandas=False),
        "sampled": run.history(samples=50, pandas=False),
        "metric": run.history(keys=["metric"], samples=1000, pandas=False),
        "scan": list(run.scan_history()),
        "scan_metric": list(run.scan_history(keys=["metric"], page_size=100)),
    }
result(found)
"""


def test_the_seed_pages_scripts_rewind_and_fork(site: Site):
    made = site.run(SEED_SCRIPTS)
    run, fork = made["run"], made["fork"]
    assert made["rewound_id"] == run  # a rewind keeps the run's ID
    # the seed's own fork at step 500 is refused, naming the last step of the rewound run
    assert made["refusal"] is not None
    assert "500" in made["refusal"] and "last committed step is 400" in made["refusal"]

    with site.api() as api:
        rewound = api.run(f"{ENTITY}/rewind/{run}")
        rows = list(rewound.scan_history())
        # 0..200 kept, then two log calls per step for 200..299: steps 201..400
        assert steps(rows) == list(range(401))
        assert rows[200] == {**rows[200], "metric": 200}
        assert rows[201]["metric"] == 200 and "additional_metric" not in rows[201]
        assert rows[202]["additional_metric"] == 220.00000000000003
        assert steps(list(rewound.scan_history(version=1))) == list(range(300))
        versions = rewound.versions()
        assert [(v["version"], v["archived"], v["rows"]) for v in versions] == [
            (1, True, 300),
            (2, False, 401),
        ]
        assert versions[0]["rewound_to_step"] == 200
        forked = api.run(f"{ENTITY}/rewind/{fork}")
        assert forked.forked_from == {
            "run": f"{ENTITY}/rewind/{run}",
            "step": 300,
            "version": 2,
            "immutable_id": rewound.immutable_id,
        }
        fork_rows = list(forked.scan_history())
        assert steps(fork_rows) == [*range(301), *range(301, 311)]
        assert fork_rows[300] == rows[300]
        assert [r["metric"] for r in fork_rows[301:]] == [i * 3 for i in range(301, 311)]
        lineage = forked.lineage()
        assert lineage["ancestors"] == [
            {
                "run": f"{ENTITY}/rewind/{run}",
                "version": 2,
                "step": 300,
                "immutable_id": rewound.immutable_id,
            }
        ]
        types = [event["type"] for event in rewound.events()]
        first = types[: types.index("Rewound")]  # the SDK's posts: one batch of rows each
        assert first[0] == "Created" and set(first[1:-1]) == {"RowsLogged"}
        assert first[-1] == "Finished" and types[-1] == "Finished"

    read = site.run(READ_BACK.replace("RUNS", json.dumps([run, fork])))
    mine = read[run]
    assert mine["state"] == "finished" and mine["config"] == {}
    assert mine["summary"] == {
        "metric": 299 + 2 * math.sin(299 / 3.0),
        "additional_metric": 299 * 1.1,
        "step": 299,  # the seed logs "step" as a value
    }
    assert steps(mine["history"]) == list(range(401))
    assert len(mine["sampled"]) == 50 and mine["sampled"][-1]["_step"] == 400
    assert steps(mine["metric"]) == list(range(201)) + list(range(201, 401, 2))
    assert mine["scan"] == mine["history"]
    assert [r["metric"] for r in mine["scan_metric"]] == [r["metric"] for r in mine["metric"]]
    theirs = read[fork]
    assert steps(theirs["history"]) == list(range(311))  # the inherited prefix included
    assert theirs["scan"] == theirs["history"]
    assert theirs["history"][:301] == mine["history"][:301]


def test_fork_from_an_archived_versions_immutable_id(site: Site):
    """The ID runhistory shows for each version (web UI, CLI, API) works as wandb's
    `fork_from`: the fork starts from that version as it stood before its rewind."""
    made = site.run(
        """
        run = wandb.init(project="ids", id="src", settings=quiet())
        for i in range(6):
            run.log({"m": i})
        run.finish()
        run = wandb.init(project="ids", resume_from="src?_step=2", settings=quiet())
        run.log({"m": 100})
        run.finish()
        result({})
        """
    )
    assert made == {}
    with site.api() as api:
        archived = api.run(f"{ENTITY}/ids/src").versions()[0]
    assert archived["archived"] and archived["version"] == 1
    made = site.run(
        f"""
        fork = wandb.init(project="ids", id="child",
                          fork_from="{archived["immutable_id"]}?_step=4", settings=quiet())
        fork.log({{"m": -1}})
        fork.finish()
        result({{"id": fork.id}})
        """
    )
    assert made == {"id": "child"}
    with site.api() as api:
        child = api.run(f"{ENTITY}/ids/child")
        assert child.forked_from == {
            "run": f"{ENTITY}/ids/src",
            "step": 4,
            "version": 1,
            "immutable_id": archived["immutable_id"],
        }
        # steps 0..4 of version 1 (the live version holds 0..2 and 100 at 3)
        assert [row["m"] for row in child.scan_history()] == [0, 1, 2, 3, 4, -1]


# ---- resume, config, summary ----------------------------------------------------------------


def test_resume_must_and_allow_config_updates_and_the_summary(site: Site):
    made = site.run(
        """
        run = wandb.init(project="p", id="res1", name="first try", tags=["a", "b"],
                         config={"lr": 0.1}, settings=quiet())
        for i in range(5):
            run.log({"loss": 1.0 / (i + 1)})
        run.summary["best"] = 0.5
        run.finish()

        run = wandb.init(project="p", id="res1", resume="must", config={"bs": 32},
                         settings=quiet())
        resumed_config = dict(run.config)
        for i in range(3):
            run.log({"loss": 0.1 / (i + 1)})
        run.config.update({"late": True})
        run.finish()

        run = wandb.init(project="p", id="res1", resume="allow", settings=quiet())
        run.log({"loss": 0.01})
        run.finish()

        fresh = wandb.init(project="p", id="res2", resume="allow", settings=quiet())
        fresh.log({"loss": 1.0})
        fresh.finish()

        try:
            wandb.init(project="p", id="nosuch", resume="must", settings=quiet())
            missing = None
        except Exception as error:
            missing = type(error).__name__ + ": " + str(error)

        try:
            wandb.init(project="p", id="res1", settings=quiet())
            again = None
        except Exception as error:
            again = str(error)

        api = wandb.Api()
        read = api.run("team/p/res1")
        result({"resumed_config": resumed_config, "missing": missing, "again": again,
                "state": read.state, "config": read.config,
                "summary": {k: v for k, v in read.summary.items() if not k.startswith("_")},
                "losses": [row["loss"] for row in read.scan_history()]})
        """
    )
    assert made["resumed_config"] == {"lr": 0.1, "bs": 32}
    assert made["missing"] is not None and "nosuch" in made["missing"]
    assert made["again"] is not None and "already exists" in made["again"]
    assert made["state"] == "finished"
    assert made["config"] == {"lr": 0.1, "bs": 32, "late": True}
    assert made["summary"] == {"loss": 0.01, "best": 0.5}
    losses = [1.0, 0.5, 1 / 3, 0.25, 0.2, 0.1, 0.05, 0.1 / 3, 0.01]
    assert made["losses"] == pytest.approx(losses)
    with site.api() as api:
        run = api.run(f"{ENTITY}/p/res1")
        assert (run.name, run.tags) == ("first try", ["a", "b"])
        assert steps(list(run.scan_history())) == list(range(9))
        assert run.config == {"lr": 0.1, "bs": 32, "late": True}
        assert run.summary == {"loss": 0.01, "best": 0.5}  # "best" kept as set
        types = [event["type"] for event in run.events()]
        assert types.count("Resumed") == 2 and "SummarySet" in types
        assert [r.id for r in api.runs(f"{ENTITY}/p")] == ["res1", "res2"]


def test_the_public_api_updates_config_and_summary_outside_any_session(site: Site):
    made = site.run(
        """
        run = wandb.init(project="p", id="upd", config={"lr": 0.1}, settings=quiet())
        run.log({"loss": 1.0})
        run.finish()
        api = wandb.Api()
        read = api.run("team/p/upd")
        read.summary["manual"] = 3
        read.config["added"] = "yes"
        read.update()
        again = api.run("team/p/upd")
        result({"state": again.state, "config": again.config,
                "summary": {k: v for k, v in again.summary.items() if not k.startswith("_")}})
        """
    )
    assert made == {
        "state": "finished",
        "config": {"lr": 0.1, "added": "yes"},
        "summary": {"loss": 1, "manual": 3},
    }
    with site.api() as api:
        types = [event["type"] for event in api.run(f"{ENTITY}/p/upd").events()]
    assert types[-2:] == ["ConfigUpdated", "SummarySet"] and "Resumed" not in types


def test_names_notes_groups_job_types_and_nulls_as_the_sdk_sends_them(site: Site):
    made = site.run(
        """
        run = wandb.init(project="p", id="det", name="first", notes="why", group="fold-1",
                         job_type="train", tags=["a", "b"], settings=quiet())
        run.log({"loss": 1.0, "val": None})
        run.notes = "changed while running"
        run.finish()

        # A resume naming some details replaces those only (the SDK sends tags=[]).
        run = wandb.init(project="p", id="det", resume="must", job_type="eval",
                         settings=quiet())
        run.log({"loss": 0.5, "val": 0.25})
        run.finish()

        api = wandb.Api()
        read = api.run("team/p/det")
        seen = [read.name, read.notes, read.group, read.job_type, list(read.tags)]
        read.name = "renamed"
        read.tags = []
        read.update()
        again = api.run("team/p/det")
        result({"seen": seen, "after": [again.name, list(again.tags), again.notes],
                "vals": [row["val"] for row in again.scan_history()]})
        """
    )
    assert made["seen"] == ["first", "changed while running", "fold-1", "eval", ["a", "b"]]
    assert made["after"] == ["renamed", [], "changed while running"]
    assert made["vals"] == [None, 0.25]  # a logged None is stored as null, as W&B does
    with site.api() as api:
        run = api.run(f"{ENTITY}/p/det")
        assert (run.name, run.tags, run.group, run.job_type) == ("renamed", [], "fold-1", "eval")
        assert run.notes == "changed while running"
        assert [row["val"] for row in run.scan_history()] == [None, 0.25]


def test_a_row_the_server_refuses_is_dropped_alone_and_logging_goes_on(
    site: Site, caplog: pytest.LogCaptureFixture
):
    """A refused post would end the SDK's file_stream (it gives up on a 4xx) and lose every
    row after it: the server drops the refused data alone, and says so in its log."""
    long_key = "k" * 300  # over the 256 characters a key may have
    with caplog.at_level(logging.WARNING, logger="runhistory.service.wandb"):
        made = site.run(
            f"""
            run = wandb.init(project="p", id="badrow", settings=quiet())
            for i in range(10):
                run.log({{"good": i}})
            run.log({{"{long_key}": 1, "good": 10}})
            for i in range(11, 20):
                run.log({{"good": i}})
            run.finish()
            read = wandb.Api().run("team/p/badrow")
            result({{"state": read.state, "good": [r.get("good") for r in read.scan_history()]}})
            """
        )
    assert made["state"] == "finished"
    # the refused row keeps its step, without its data; every other row is there
    assert made["good"] == [*range(10), None, *range(11, 20)]
    dropped = [r.getMessage() for r in caplog.records if "was dropped" in r.getMessage()]
    assert dropped and all("300 characters; at most 256" in m for m in dropped)
    assert any("team/p/badrow" in m and "at step 10" in m for m in dropped)


def test_nan_infinities_and_large_integers_survive(site: Site):
    made = site.run(
        """
        run = wandb.init(project="p", id="odd", settings=quiet())
        run.log({"x": float("nan"), "up": float("inf"), "down": float("-inf"), "big": 2**70})
        run.log({"x": 1.5, "up": 1.0, "down": -1.0, "big": 3})
        run.log({"last": float("-inf")})
        run.finish()
        read = wandb.Api().run("team/p/odd")
        rows = read.history(pandas=False)
        keyed = read.history(keys=["x"], pandas=False)
        shown = [[repr(r["x"]), repr(r["up"]), repr(r["down"]), r["big"]] for r in rows[:2]]
        result({"rows": shown,
                "keyed": [r["x"] for r in keyed],
                "last": repr(read.summary["last"])})
        """
    )
    # the SDK writes a whole float as an integer (1.0 as 1), and an int past 2**53 as a float
    assert made["rows"] == [["nan", "inf", "-inf", 2.0**70], ["1.5", "1", "-1", 3]]
    # inside GraphQL objects the wire is strict JSON: non-finite values come back as strings
    assert made["keyed"] == ["NaN", 1.5]
    assert made["last"] == "-inf"  # the summary, a JSON string, keeps them
    with site.api() as api:
        row = next(iter(api.run(f"{ENTITY}/p/odd").scan_history()))
        assert math.isnan(row["x"]) and row["up"] == math.inf and row["down"] == -math.inf
        assert row["big"] == 2.0**70


def test_two_runs_logging_at_once(site: Site):
    body = """
        run = wandb.init(project="p", id=sys.argv[0].rsplit("_", 1)[-1][:-3], settings=quiet())
        for i in range(200):
            run.log({"v": i, "who": run.id})
        run.finish()
        result(run.id)
    """
    both = [site.start(body), site.start(body)]
    ids = [finish(process) for process in both]
    assert len(set(ids)) == 2
    with site.api() as api:
        for run_id in ids:
            rows = list(api.run(f"{ENTITY}/p/{run_id}").scan_history())
            assert [(r["_step"], r["v"], r["who"]) for r in rows] == [
                (i, i, run_id) for i in range(200)
            ]


# ---- keys -------------------------------------------------------------------------------------

WRITE_ONE = """
started = time.monotonic()
try:
    run = wandb.init(project="p", id="denied", entity=sys.argv[1] if len(sys.argv) > 1 else None,
                     settings=quiet())
    run.log({"a": 1})
    run.finish()
    refusal = None
except Exception as error:
    refusal = str(error)
result({"refusal": refusal, "seconds": time.monotonic() - started})
"""


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("reader", "a reader key may not log, resume, rewind or fork"),
        ("other", "this key belongs to entity 'other'"),
    ],
)
def test_a_key_that_may_not_write_fails_init_promptly_and_creates_nothing(
    site: Site, key: str, message: str
):
    body = WRITE_ONE.replace("sys.argv[1] if len(sys.argv) > 1 else None", repr(ENTITY))
    made = site.run(body, key=getattr(site.server, key))
    assert made["refusal"] is not None and message in made["refusal"]
    assert made["seconds"] < 30
    with site.api() as api:
        assert list(api.runs(f"{ENTITY}/p")) == []


def test_a_revoked_key_stops_the_run_at_once_and_keeps_what_came_before(site: Site):
    gate = site.folder / "revoked"
    process = site.start(
        f"""
        run = wandb.init(project="p", id="cut", settings=quiet())
        for i in range(5):
            run.log({{"a": i}})
        while not os.path.exists({str(gate)!r}):
            time.sleep(0.1)
        for i in range(5, 10):
            run.log({{"a": i}})
        started = time.monotonic()
        run.finish()
        result(time.monotonic() - started)
        """
    )
    with site.api(site.server.reader) as api:
        deadline = time.monotonic() + 60
        while row_count(api, f"{ENTITY}/p/cut") < 5:
            assert time.monotonic() < deadline, "the first rows never arrived"
            time.sleep(0.2)
        site.server.keys.revoke(site.server.writer.split("_")[1])
        gate.touch()
        finish_seconds = finish(process)
        assert finish_seconds < 30
        run = api.run(f"{ENTITY}/p/cut")
        assert steps(list(run.scan_history())) == [0, 1, 2, 3, 4]
        assert run.state == "running"  # until crash detection (issue 14) marks it


def row_count(api: runhistory.Api, path: str) -> int:
    try:
        return len(list(api.run(path).scan_history()))
    except NotFound:
        return 0


# ---- the demo's two lines ---------------------------------------------------------------------


def test_the_demo_prints_the_two_variables_the_sdk_needs(tmp_path: Path):
    demo = subprocess.Popen(
        [sys.executable, "-m", "runhistory.service.cli", "demo", "--keep", "--http", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        lines: list[str] = []
        while not any("serving until Ctrl-C" in line for line in lines):
            line = demo.stdout.readline()
            assert line, lines
            lines.append(line)
        exported = dict(
            line.split("export ", 1)[1].strip().split("=", 1)
            for line in lines
            if line.strip().startswith("export WANDB_")
        )
        assert set(exported) == {"WANDB_BASE_URL", "WANDB_API_KEY"}
        env = sdk_env(exported["WANDB_BASE_URL"], exported["WANDB_API_KEY"], tmp_path)
        body = """
            run = wandb.init(project="rewind", settings=quiet())
            run.log({"metric": 1.5})
            run.finish()
            result(wandb.Api().run(f"demo/rewind/{run.id}").history(pandas=False))
        """
        process = start_script(body, env, tmp_path)
        rows = finish(process)
        assert [(row["_step"], row["metric"]) for row in rows] == [(0, 1.5)]
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
