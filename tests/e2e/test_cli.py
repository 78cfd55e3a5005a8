"""The `runhistory` command line, run as subprocesses against a real server.

The server runs in the test process on an ephemeral loopback port; the data is written
with the SDK; every command is checked in its human and its --json form.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import runhistory
from runhistory.domain.identity import RunPath, version_id
from runhistory.service.bootstrap import Running, start
from runhistory.service.runs import RunService
from runhistory.service.settings import Settings

ENTITY, PROJECT = "team", "cli"
BASE = f"{ENTITY}/{PROJECT}/base"
EARLY = f"{ENTITY}/{PROJECT}/early"
CHILD = f"{ENTITY}/{PROJECT}/child"
GRANDCHILD = f"{ENTITY}/{PROJECT}/grandchild"
TIMEOUT = 60


def version_of(path: str, version: int) -> str:
    """The immutable ID of a version of the run at `path`."""
    return version_id(RunPath.parse(path).aggregate_id, version)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNHISTORY_")}
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runhistory.service.cli", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env or cli_env(),
    )


def ok(*args: str, env: dict[str, str] | None = None) -> str:
    done = cli(*args, env=env)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout


def ok_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json"))


# ---- the server and its data ---------------------------------------------------------------


def write_scenario(address: str) -> None:
    """base: 10 rows (a NaN and an Infinity among them), forked at step 3 as `early`,
    rewound to step 5 with 3 new rows, forked at step 7 as `child`, which is forked at step 8
    as `grandchild`."""
    common = {"entity": ENTITY, "project": PROJECT, "address": address}
    base = runhistory.init(
        id="base", config={"lr": 0.01, "optimizer": {"name": "adam", "beta": 0.9}}, **common
    )
    for i in range(10):
        row: dict[str, Any] = {"loss": 1.0 / (i + 1), "acc": i / 10}
        if i == 4:
            row["odd"] = math.nan
        if i == 5:
            row["odd"] = math.inf
        base.log(row)
    base.finish()

    early = runhistory.init(id="early", fork_from="base?_step=3", **common)
    early.log({"loss": 0.7})
    early.finish()

    rewound = runhistory.init(resume_from="base?_step=5", config={"lr": 0.001}, **common)
    for i in range(6, 9):
        rewound.log({"loss": 0.01 * i, "acc": 0.9})
    rewound.finish()

    child = runhistory.init(id="child", fork_from="base?_step=7", **common)
    for i in range(8, 10):
        child.log({"loss": 0.001 * i})
    child.finish()

    grandchild = runhistory.init(id="grandchild", fork_from=f"{CHILD}?_step=8", **common)
    grandchild.log({"loss": 0.0001})
    grandchild.finish()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    db = tmp_path_factory.mktemp("cli") / "rh.db"
    running = start(Settings(db=str(db), require_keys=False), "127.0.0.1:0")
    try:
        write_scenario(running.address)
        yield running
    finally:
        running.stop()


@pytest.fixture
def address(server: Running) -> str:
    return server.address


def all_events(address: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ok("events", "--address", address, "--json").splitlines()]


def table(text: str) -> tuple[list[str], list[list[str]]]:
    """A printed table's header cells and rows (cells split on 2+ spaces)."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert set(lines[1].replace(" ", "")) == {"─"}, text
    split = [re.split(r"\s{2,}", line.strip()) for line in lines]
    return split[0], [cells for cells in split[2:] if not cells[0].startswith("(")]


# ---- runs ----------------------------------------------------------------------------------


def test_runs_lists_the_project(address: str) -> None:
    headers, rows = table(ok("runs", f"{ENTITY}/{PROJECT}", "--address", address))
    assert headers[:5] == ["run", "name", "state", "version", "last step"]
    by_id = {row[0]: row for row in rows}
    assert set(by_id) == {"base", "early", "child", "grandchild"}
    assert by_id["base"][2:5] == ["finished", "2", "8"]
    assert by_id["child"][2:5] == ["finished", "1", "9"]

    found = ok_json("runs", f"{ENTITY}/{PROJECT}", "--address", address)
    records = {run["path"]: run for run in found}
    assert set(records) == {BASE, EARLY, CHILD, GRANDCHILD}
    assert records[BASE]["version"] == 2
    assert records[BASE]["last_step"] == 8
    assert records[BASE]["state"] == "finished"
    assert records[BASE]["id"] == "base"


def test_runs_of_an_empty_project_and_the_address_from_the_environment(address: str) -> None:
    env = cli_env(RUNHISTORY_ADDRESS=address)
    assert ok("runs", "team/nothing", env=env).strip() == "no runs in team/nothing"
    assert json.loads(ok("runs", "team/nothing", "--json", env=env)) == []
    assert "base" in ok("runs", f"{ENTITY}/{PROJECT}", env=env)


# ---- history -------------------------------------------------------------------------------


def test_history_table_and_json(address: str) -> None:
    text = ok("history", BASE, "--address", address)
    headers, rows = table(text)
    assert headers == ["_step", "acc", "loss", "odd"]
    assert [row[0] for row in rows] == [str(step) for step in range(9)]
    assert rows[4] == ["4", "0.4", "0.2", "NaN"]
    assert rows[5] == ["5", "0.5", "0.1666666667", "Infinity"]
    assert rows[8] == ["8", "0.9", "0.08"]
    assert text.rstrip().endswith("(9 rows, steps 0..8)")

    raw = ok("history", BASE, "--address", address, "--json")
    assert "NaN" in raw and "Infinity" in raw
    rows_json = json.loads(raw)
    assert [row["_step"] for row in rows_json] == list(range(9))
    assert math.isnan(rows_json[4]["odd"])
    assert rows_json[5]["odd"] == math.inf
    assert rows_json[8]["loss"] == pytest.approx(0.08)
    assert {"_timestamp", "_runtime"} <= rows_json[0].keys()


def test_history_filters(address: str) -> None:
    args = ("history", BASE, "--address", address, "--keys", "loss", "--min-step", "2")
    headers, rows = table(ok(*args, "--max-step", "4"))
    assert headers == ["_step", "loss"]
    assert [row[0] for row in rows] == ["2", "3", "4"]

    archived = ok_json("history", BASE, "--address", address, "--version", "1")
    assert [row["_step"] for row in archived] == list(range(10))
    assert archived[9]["loss"] == pytest.approx(0.1)

    inherited = ok_json("history", CHILD, "--address", address)
    own = ok_json("history", CHILD, "--address", address, "--own-only")
    assert [row["_step"] for row in inherited] == list(range(10))
    assert [row["_step"] for row in own] == [8, 9]

    assert ok("history", BASE, "--address", address, "--min-step", "50").strip() == "no rows"
    assert ok_json("history", BASE, "--address", address, "--min-step", "50") == []


# ---- summary and config --------------------------------------------------------------------


def test_summary(address: str) -> None:
    lines = ok("summary", BASE, "--address", address).splitlines()
    assert [line.split() for line in lines] == [
        ["acc", "0.9"],
        ["loss", "0.08"],
        ["odd", "Infinity"],
    ]
    assert ok_json("summary", BASE, "--address", address) == {
        "acc": 0.9,
        "loss": pytest.approx(0.08),
        "odd": math.inf,
    }
    archived = ok_json("summary", BASE, "--address", address, "--version", "1")
    assert archived["acc"] == 0.9
    assert archived["loss"] == pytest.approx(0.1)
    fork = ok_json("summary", CHILD, "--address", address)
    assert fork["loss"] == pytest.approx(0.009)


def test_config(address: str) -> None:
    lines = ok("config", BASE, "--address", address).splitlines()
    assert [line.split() for line in lines] == [
        ["lr", "0.001"],
        ["optimizer.beta", "0.9"],
        ["optimizer.name", "adam"],
    ]
    live = {"lr": 0.001, "optimizer": {"name": "adam", "beta": 0.9}}
    assert ok_json("config", BASE, "--address", address) == live
    assert ok_json("config", BASE, "--address", address, "--version", "1")["lr"] == 0.01
    assert ok_json("config", EARLY, "--address", address)["lr"] == 0.01


def test_a_version_that_does_not_exist(address: str) -> None:
    done = cli("summary", BASE, "--address", address, "--version", "7")
    assert done.returncode == 1
    assert done.stderr.startswith("runhistory: NOT_FOUND: ")
    assert "version 7" in done.stderr


# ---- versions and lineage ------------------------------------------------------------------


def test_versions(address: str) -> None:
    headers, rows = table(ok("versions", BASE, "--address", address))
    assert headers[:7] == [
        "version", "immutable ID", "status", "rewound to", "state", "last step", "rows"
    ]  # fmt: skip
    assert rows[0][:7] == ["v1", version_of(BASE, 1), "archived", "5", "finished", "9", "10"]
    assert rows[1][:3] == ["v2", version_of(BASE, 2), "live"]
    assert "acc=0.9" in rows[1][-1]

    found = ok_json("versions", BASE, "--address", address)
    assert [(v["version"], v["archived"], v["rewound_to_step"]) for v in found] == [
        (1, True, 5),
        (2, False, None),
    ]
    assert [v["rows"] for v in found] == [10, 9]
    assert found[0]["config"]["lr"] == 0.01
    assert found[1]["config"]["lr"] == 0.001
    assert found[0]["summary"]["loss"] == pytest.approx(0.1)


def test_immutable_ids_read_their_versions_and_fork_them(address: str) -> None:
    """The IDs in --json, a version read by its ID (bare or under the project), and forks
    of an archived and of a live version by ID."""
    archived_id, live_id = (
        v["immutable_id"] for v in ok_json("versions", BASE, "--address", address)
    )
    assert (archived_id, live_id) == (version_of(BASE, 1), version_of(BASE, 2))
    records = {r["path"]: r for r in ok_json("runs", f"{ENTITY}/{PROJECT}", "--address", address)}
    assert records[BASE]["immutable_id"] == live_id
    lineage = ok_json("lineage", BASE, "--address", address)
    assert lineage["immutable_id"] == live_id
    assert [v["immutable_id"] for v in lineage["versions"]] == [archived_id, live_id]

    # Version 1, as it was: 10 rows, its own config and summary.
    rows = ok_json("history", archived_id, "--address", address)
    assert [row["_step"] for row in rows] == list(range(10))
    under = ok_json("history", f"{ENTITY}/{PROJECT}/{archived_id}", "--address", address)
    assert under == rows
    assert ok_json("config", archived_id, "--address", address)["lr"] == 0.01
    assert ok_json("summary", archived_id, "--address", address)["loss"] == pytest.approx(0.1)
    assert ok_json("config", live_id, "--address", address)["lr"] == 0.001
    events = ok("events", archived_id, "--address", address, "--json").splitlines()
    assert json.loads(events[0])["type"] == "Created"

    # Forks by ID, made through the SDK from a run of their own project (the module's runs
    # keep their lineage): its version 1 has x = 0..9, its version 2 (rewound to 5) 6 and 7.
    common = {"entity": ENTITY, "project": "versions", "address": address}
    with runhistory.init(id="src", **common) as source:
        for i in range(10):
            source.log({"x": i})
    with runhistory.init(resume_from="src?_step=5", **common) as again:
        again.log({"x": -6})
        again.log({"x": -7})
    src = f"{ENTITY}/versions/src"
    first, second = (v["immutable_id"] for v in ok_json("versions", src, "--address", address))
    for fork_id, point in (("from-v1", f"{first}?_step=9"), ("from-v2", f"{second}?_step=7")):
        runhistory.init(id=fork_id, fork_from=point, **common).finish()
    from_v1 = ok_json("history", f"{ENTITY}/versions/from-v1", "--address", address)
    assert [row["x"] for row in from_v1] == list(range(10))
    from_v2 = ok_json("history", f"{ENTITY}/versions/from-v2", "--address", address)
    assert [row["x"] for row in from_v2] == [*range(6), -6, -7]
    (ancestor,) = ok_json("lineage", f"{ENTITY}/versions/from-v1", "--address", address)[
        "ancestors"
    ]
    assert ancestor == {"run": src, "version": 1, "step": 9, "immutable_id": first}

    done = cli("history", "v" + "0" * 25, "--address", address)
    assert done.returncode == 1 and "NOT_FOUND" in done.stderr and "Traceback" not in done.stderr


def test_lineage_tree(address: str) -> None:
    assert ok("lineage", BASE, "--address", address).splitlines() == [
        f"{BASE}  (this run)",
        "├─ v1  archived, rewound to step 5",
        f"│  └─ fork {EARLY} at step 3",
        "└─ v2  live",
        f"   └─ fork {CHILD} at step 7",
        f"      └─ fork {GRANDCHILD} at step 8 of v1",
    ]
    assert ok("lineage", GRANDCHILD, "--address", address).splitlines() == [
        BASE,
        f"└─ fork at step 7 of v2: {CHILD}",
        f"   └─ fork at step 8 of v1: {GRANDCHILD}  (this run)",
        "      └─ v1  live",
    ]

    tree = ok_json("lineage", GRANDCHILD, "--address", address)
    assert tree["run"] == GRANDCHILD
    assert tree["ancestors"] == [
        {"run": CHILD, "version": 1, "step": 8, "immutable_id": version_of(CHILD, 1)},
        {"run": BASE, "version": 2, "step": 7, "immutable_id": version_of(BASE, 2)},
    ]
    base = ok_json("lineage", BASE, "--address", address)
    assert [(d["run"], d["source_version"], d["step"]) for d in base["descendants"]] == [
        (EARLY, 1, 3),
        (CHILD, 2, 7),
    ]


# ---- events --------------------------------------------------------------------------------


def test_events(address: str) -> None:
    events = all_events(address)
    positions = [event["position"] for event in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    types = [event["type"] for event in events]
    assert types[0] == "Created"
    assert "Rewound" in types and "Finished" in types
    assert events[0]["payload"]["run_id"] == "base"

    human = ok("events", "--address", address).splitlines()
    assert len(human) == len(events)
    assert re.match(rf"\s*{positions[0]}\s+\S+ \S+\s+{BASE}\s+Created\s+", human[0])
    assert any(re.search(rf"{BASE}\s+Rewound\s", line) for line in human)

    of_child = [
        json.loads(line)
        for line in ok("events", CHILD, "--address", address, "--json").splitlines()
    ]
    assert {event["run_uuid"] for event in of_child} == {of_child[0]["run_uuid"]}
    assert of_child[0]["type"] == "Created"
    assert of_child[0]["payload"]["run_id"] == "child"
    child_lines = ok("events", CHILD, "--address", address).splitlines()
    assert len(child_lines) == len(of_child)
    assert all(f" {CHILD} " in line for line in child_lines)

    later = ok("events", "--address", address, "--json", "--start", str(positions[-2]))
    assert [json.loads(line)["position"] for line in later.splitlines()] == [positions[-1]]
    text = ok("events", "--address", address, "--start", str(positions[-1]))
    assert text.strip() == f"no events after position {positions[-1]}"


def test_events_follow_prints_new_events_until_stopped(address: str) -> None:
    before = all_events(address)
    follow = subprocess.Popen(
        [sys.executable, "-m", "runhistory.service.cli", "events", "--follow", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(RUNHISTORY_ADDRESS=address),
    )
    try:
        assert follow.stdout is not None
        seen = [json.loads(follow.stdout.readline()) for _ in before]
        assert [e["position"] for e in seen] == [e["position"] for e in before]

        late = runhistory.init(entity=ENTITY, project="follow", id="late", address=address)
        new = json.loads(follow.stdout.readline())
        assert new["type"] == "Created"
        assert new["payload"]["run_id"] == "late"
        assert new["position"] > before[-1]["position"]
        late.finish()
        assert json.loads(follow.stdout.readline())["type"] == "Finished"

        assert follow.poll() is None  # still following
        follow.terminate()
        assert follow.wait(timeout=TIMEOUT) == 0
        assert follow.stderr is not None
        assert "Traceback" not in follow.stderr.read()
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()


# ---- as-of ---------------------------------------------------------------------------------


def test_as_of_position_and_time(address: str) -> None:
    events = all_events(address)
    rewind = next(event for event in events if event["type"] == "Rewound")
    before_rewind = rewind["position"] - 1

    snapshot = ok_json("as-of", BASE, "--address", address, "--position", str(before_rewind))
    assert [row["_step"] for row in snapshot["rows"]] == list(range(10))
    assert snapshot["config"]["lr"] == 0.01
    assert snapshot["summary"]["loss"] == pytest.approx(0.1)

    text = ok("as-of", BASE, "--address", address, "--position", str(before_rewind))
    assert text.startswith(f"{BASE} as of position {before_rewind}\n")
    assert "(10 rows, steps 0..9)" in text
    assert re.search(r"^lr\s+0.01$", text, re.MULTILINE)
    assert re.search(r"^optimizer.name\s+adam$", text, re.MULTILINE)

    now = ok_json("as-of", BASE, "--address", address, "--time", str(time.time() + 1))
    assert [row["_step"] for row in now["rows"]] == list(range(9))
    assert now["config"]["lr"] == 0.001

    # ISO-8601 (local time), between base's last event before the rewind and the rewind
    of_base = [e for e in events if e["run_uuid"] == rewind["run_uuid"]]
    previous = of_base[of_base.index(rewind) - 1]
    assert previous["type"] == "Finished"
    middle = (previous["timestamp"] + rewind["timestamp"]) / 2
    before = datetime.fromtimestamp(middle).isoformat()
    then = ok_json("as-of", BASE, "--address", address, "--time", before, "--keys", "loss")
    assert [row["_step"] for row in then["rows"]] == list(range(10))
    assert set(then["rows"][0]) == {"_step", "_timestamp", "_runtime", "loss"}


# ---- rebuild -------------------------------------------------------------------------------


def test_rebuild_through_the_server(address: str) -> None:
    done = cli("rebuild", "--address", address)
    assert done.returncode == 0, done.stderr
    assert "the rebuilt read models are equal to the live ones" in done.stdout
    assert re.search(r"^  history\s+[0-9a-f]{16}$", done.stdout, re.MULTILINE)
    assert "rebuilding [" in done.stderr and "(100%)" in done.stderr

    result = ok_json("rebuild", "--address", address)
    assert result["equal_to_live"] is True
    assert {"history", "summary", "runs", "lineage"} <= result["checksums"].keys()
    events = all_events(address)
    assert result["applied"] == len(events)
    assert result["position"] == result["target"] == events[-1]["position"]
    # the read models still answer after the rebuild
    assert [row["_step"] for row in ok_json("history", CHILD, "--address", address)] == list(
        range(10)
    )


def test_rebuild_offline_on_a_database_file(tmp_path: Path) -> None:
    db = tmp_path / "offline.db"
    running = start(Settings(db=str(db), require_keys=False), "127.0.0.1:0")
    try:
        run = runhistory.init(entity="e", project="p", id="r", address=running.address)
        run.log({"x": 1})
        run.finish()
    finally:
        running.stop()

    done = cli("rebuild", "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert "equal to the live ones" in done.stdout
    assert json.loads(ok("rebuild", "--db", str(db), "--json"))["equal_to_live"] is True

    # a live read model that no longer matches its events: the replay tells
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE rh_runs SET name = 'tampered'")
    done = cli("rebuild", "--db", str(db))
    assert done.returncode == 1
    assert "DIFFERENT from the live ones" in done.stdout
    # the rebuild repaired it
    assert cli("rebuild", "--db", str(db)).returncode == 0


# ---- errors --------------------------------------------------------------------------------


def test_an_unknown_run_is_not_found(address: str) -> None:
    for command in ("history", "summary", "config", "versions", "lineage", "events"):
        done = cli(command, f"{ENTITY}/{PROJECT}/nope", "--address", address)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert done.stderr.startswith("runhistory: NOT_FOUND: "), (command, done.stderr)
        assert "nope" in done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stdout == ""

    done = cli("history", f"{ENTITY}/{PROJECT}/nope", "--address", address, "--traceback")
    assert done.returncode != 0
    assert "Traceback" in done.stderr


def test_an_unreachable_server(tmp_path: Path) -> None:
    running = start(Settings(db=str(tmp_path / "gone.db"), require_keys=False), "127.0.0.1:0")
    gone = running.address
    running.stop()
    done = cli("runs", "a/b", "--address", gone, env=cli_env(RUNHISTORY_RETRY_SECONDS="0.5"))
    assert done.returncode == 1
    assert done.stderr.startswith("runhistory: UNAVAILABLE: ")
    assert len(done.stderr.splitlines()) == 1, done.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["history"],
        ["history", "team/cli"],
        ["history", "team/cli/bad id"],
        ["history", BASE, "--min-step", "x"],
        ["history", BASE, "--version", "0"],
        ["runs", "team"],
        ["as-of", BASE],
        ["as-of", BASE, "--position", "3", "--time", "4"],
        ["as-of", BASE, "--time", "yesterday"],
        ["rebuild", "--db", "x.db", "--address", "127.0.0.1:1"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    done = cli(*args)
    assert done.returncode == 2, done
    assert "usage: runhistory" in done.stderr
    assert "Traceback" not in done.stderr


# ---- a client-only install -------------------------------------------------------------------

# `pip install runhistory` without the `[server]` extra: the server's packages are missing.
CLIENT_ONLY = """
import sys
for name in ("pydantic", "sqlalchemy", "eventsourcing", "eventsourcing_sqlalchemy", "psycopg"):
    sys.modules[name] = None  # importing it raises ModuleNotFoundError
from runhistory.service.cli import main
sys.exit(main(sys.argv[1:]))
"""


def client_only(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLIENT_ONLY, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=cli_env(),
        cwd=cwd,
    )


def test_client_commands_need_no_server_installed(address: str) -> None:
    commands = [
        ["runs", f"{ENTITY}/{PROJECT}"],
        ["history", CHILD, "--keys", "loss"],
        ["summary", BASE],
        ["config", BASE, "--version", "1"],
        ["versions", BASE],
        ["lineage", CHILD],
        ["events", BASE],
        ["as-of", BASE, "--position", "3"],
        ["rebuild"],
    ]
    for command in commands:
        for extra in ([], ["--json"]):
            args = [*command, "--address", address, *extra]
            without = client_only(*args)
            assert without.returncode == 0, (args, without.stderr)
            done = cli(*args)
            if extra and command[0] in ("as-of", "rebuild"):
                # The keys of an as-of row and of the checksums come in no fixed order.
                assert json.loads(without.stdout) == json.loads(done.stdout), args
            else:
                assert without.stdout == done.stdout, args
    assert client_only("--help").returncode == 0


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--address", "127.0.0.1:0"],
        ["keys", "list"],
        ["project"],
        ["demo", "--no-http"],
        ["rebuild", "--db", "x.db"],
    ],
)
def test_server_commands_without_the_server_say_what_to_install(
    args: list[str], tmp_path: Path
) -> None:
    done = client_only(*args, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"runhistory: FAILED_PRECONDITION: `runhistory {args[0]}"), done
    assert "pip install 'runhistory[server]'" in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert not list(tmp_path.iterdir())  # no database made


# ---- demo and serve ------------------------------------------------------------------------


def test_demo() -> None:
    text = ok("demo")
    assert re.search(r"rewound demo/rewind/\w+ to step 200 \(now version 2", text)
    assert "archived version 1: 300 rows, steps 0..299" in text
    assert "history of the rewound run: 401 rows, steps 0..400" in text
    assert "history of the fork (inherited rows first): 311 rows, steps 0..310" in text
    assert re.search(r"v1: 300 rows, finished, archived, rewound to step 200", text)
    assert "├─ v1  archived, rewound to step 200" in text
    assert re.search(r"└─ fork demo/rewind/\w+ at step 300", text)
    assert re.search(r"forked from: demo/rewind/\w+ version 2 at step 300", text)


def health_status(address: str) -> int | None:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
        except grpc.RpcError:
            return None


def test_serve_until_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "served.db"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runhistory.service.cli",
            "serve",
            "--no-auth",
            "--address",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(RUNHISTORY_DB=str(db)),
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        found = re.search(r"serving on (127\.0\.0\.1:(\d+)), database (\S+)", banner)
        assert found, banner
        address = found[1]
        assert int(found[2]) > 0
        assert str(db) in found[3]

        deadline = time.monotonic() + TIMEOUT
        while health_status(address) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "the server never reported SERVING"
            time.sleep(0.1)

        run = runhistory.init(entity="e", project="served", id="r", address=address)
        run.log({"x": 1.5})
        run.finish()
        assert "r" in ok("runs", "e/served", "--address", address)

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=TIMEOUT) == 0
        assert server.stderr is not None
        assert "Traceback" not in server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    # every acknowledged write is in the database
    with RunService(Settings(db=str(db))) as service:
        types = [event.type for event in service.events(0)]
        service.runner.catch_up()
        rows = service.history(RunPath("e", "served", "r"))
    assert types == ["Created", "RowsLogged", "Finished"]
    assert [(row["_step"], row["x"]) for row in rows] == [(0, 1.5)]


def test_serve_refuses_an_address_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = cli("serve", "--address", address, "--db", str(tmp_path / "other.db"))
    assert done.returncode == 1
    assert f"runhistory: UNAVAILABLE: cannot serve on {address}: " in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--address", "127.0.0.1:0", "--db", "{missing}"], "UNAVAILABLE: cannot open"),
        (["rebuild", "--db", "{missing}"], "NOT_FOUND: there is no database file"),
        (["rebuild", "--db", "{absent}"], "NOT_FOUND: there is no database file"),
        (["serve", "--address", "127.0.0.1:0", "--db", " "], "INVALID_ARGUMENT: invalid database"),
    ],
)
def test_a_database_that_cannot_be_opened(args: list[str], message: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "no" / "such" / "dir" / "rh.db")
    absent = tmp_path / "absent.db"
    done = cli(*(arg.format(missing=missing, absent=absent) for arg in args))
    assert done.returncode == 1
    assert done.stderr.startswith(f"runhistory: {message}"), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert not absent.exists()


# ---- the web UI from the command line ------------------------------------------------------


def http_get(url: str, key: str | None = None) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=10
        ) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_demo_prints_the_web_pages_and_stops() -> None:
    port = free_port()
    text = ok("demo", "--http", f"127.0.0.1:{port}")
    assert f"web UI: http://127.0.0.1:{port}/demo/rewind" in text
    assert re.search(rf"rewound  http://127\.0\.0\.1:{port}/demo/rewind/runs/\w+", text)
    assert re.search(rf"fork     http://127\.0\.0\.1:{port}/demo/rewind/runs/\w+", text)
    assert "web UI" not in ok("demo", "--no-http")


def test_demo_takes_a_free_port_when_its_own_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = ok("demo", "--http", f"127.0.0.1:{port}")
    found = re.search(r"web UI: http://127\.0\.0\.1:(\d+)/demo/rewind", text)
    assert found and int(found[1]) != port


def test_demo_keep_serves_the_pages_until_interrupted() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "runhistory.service.cli", "demo", "--keep", "--http", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert demo.stdout is not None
        lines = []
        while not any("serving until Ctrl-C" in line for line in lines):
            line = demo.stdout.readline()
            assert line, (lines, demo.stderr.read() if demo.stderr else "")
            lines.append(line)
        fork_url = next(line.split()[1] for line in lines if line.startswith("  fork "))
        key = re.search(r"sign in with the key (rh_\S+)\)", "".join(lines))
        assert key, lines
        status, page = http_get(fork_url, key[1])
        assert status == 200 and b"/static/app.js" in page
        api_url = fork_url.replace("/demo/rewind/", "/api/demo/rewind/")
        assert http_get(api_url)[0] == 401  # the demo's UI wants its key too
        status, body = http_get(api_url, key[1])
        assert status == 200
        assert json.loads(body)["forked_from"]["step"] == 300
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=TIMEOUT) == 0
        assert demo.stderr is not None
        assert "Traceback" not in demo.stderr.read()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


@contextmanager
def stopping(server: subprocess.Popen[str]) -> Iterator[None]:
    """Stop `runhistory serve` with SIGTERM once the block is done (it exits 0); kill it
    if the block failed or it does not stop."""
    try:
        yield
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=TIMEOUT) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_serve_with_http(tmp_path: Path) -> None:
    created = ok("keys", "--db", str(tmp_path / "web.db"), "create", "--entity", "e")
    key = created.strip().splitlines()[-1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runhistory.service.cli",
            "serve",
            "--address",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--db",
            str(tmp_path / "web.db"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    with stopping(server):
        assert server.stdout is not None
        found = re.search(r"serving on (127\.0\.0\.1:\d+)", server.stdout.readline())
        assert found
        web = re.search(r"web UI on (http://127\.0\.0\.1:\d+)/", server.stdout.readline())
        assert web, "no web UI line"
        run = runhistory.init(entity="e", project="served", id="r", address=found[1], api_key=key)
        run.log({"x": 1.5})
        run.finish()
        assert http_get(f"{web[1]}/api/e/served/runs")[0] == 401
        status, body = http_get(f"{web[1]}/api/e/served/runs", key)
        assert status == 200
        assert [r["run_id"] for r in json.loads(body)["runs"]] == ["r"]


def test_serve_refuses_a_bad_http_address(tmp_path: Path) -> None:
    done = cli("serve", "--http", "nonsense")
    assert done.returncode == 2
    assert "invalid HTTP address 'nonsense': use HOST:PORT" in done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        db = str(tmp_path / "unused.db")
        done = cli("serve", "--address", "127.0.0.1:0", "--http", address, "--db", db)
    assert done.returncode == 1
    assert f"UNAVAILABLE: cannot serve the web UI on {address}" in done.stderr
    assert "Traceback" not in done.stderr


def test_keys_take_db_after_the_action_too(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    made = ok("keys", "create", "--db", db, "--entity", "after", "--role", "reader")
    key_id = made.strip().splitlines()[-1].split("_")[1]
    ok("keys", "--db", db, "create", "--entity", "before")
    listed = {k["key_id"]: k for k in json.loads(ok("keys", "list", "--db", db, "--json"))}
    assert {k["entity"] for k in listed.values()} == {"after", "before"}
    assert listed[key_id]["role"] == "reader"
    ok("keys", "revoke", "--db", db, key_id)
    listed = {k["key_id"]: k for k in json.loads(ok("keys", "list", "--json", "--db", db))}
    assert listed[key_id]["revoked_at"] is not None


def test_serve_takes_size_limits_from_flags_and_the_environment(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "runhistory.service.cli", "serve", "--no-auth"),
            *("--address", "127.0.0.1:0", "--db", str(tmp_path / "limits.db")),
            *("--max-keys-per-row", "3"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(RUNHISTORY_MAX_ROW_BYTES="200", RUNHISTORY_MAX_KEY_LENGTH="9999"),
    )
    with stopping(server):
        assert server.stdout is not None
        found = re.search(r"serving on (127\.0\.0\.1:\d+)", server.stdout.readline())
        assert found, server.stderr.read() if server.stderr else ""
        common = {"entity": "e", "project": "limits", "address": found[1]}
        run = runhistory.init(**common)
        # The SDK drops a row over the server's limits (it has them from init) with a warning.
        run.log({"a": 1, "b": 2, "c": 3, "d": 4})  # the flag: at most 3 keys
        run.finish()
        assert any("at most 3 keys" in warning for warning in run.warnings), run.warnings
        run = runhistory.init(**common)
        run.log({"text": "x" * 300})  # the variable: at most 200 bytes
        run.finish()
        assert any("200" in warning for warning in run.warnings), run.warnings
        run = runhistory.init(**common)
        run.log({"a": 1, "text": "fits"})
        run.finish()

    # A bad value, from a flag or the environment, is one line naming both.
    done = cli("serve", "--db", str(tmp_path / "x.db"), env=cli_env(RUNHISTORY_MAX_DEPTH="deep"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "invalid max_depth 'deep' (--max-depth or RUNHISTORY_MAX_DEPTH)" in done.stderr
    done = cli("serve", "--max-row-bytes", "-5")
    assert done.returncode == 2 and "invalid limit '-5': an integer >= 1" in done.stderr


def test_a_server_without_keys_puts_runs_without_an_entity_in_default(address: str) -> None:
    run = runhistory.init(project="no-entity", address=address)
    run.finish()
    assert run.path.startswith("default/no-entity/")
