"""The client install: `import runhistory` and every SDK call load nothing of the server, the
CLI's read commands work without the server, and what a client install lacks is said in one
line. Run on the full install and, in CI, on client-only installs of Python 3.10 and 3.13
against a server from the 3.11 venv (RUNHISTORY_TEST_SERVER_PYTHON).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from sdk_server import ServerProcess, server_process_fixture  # noqa: F401 (server_process)

import runhistory
from runhistory.extras import (
    SERVER_EXTRA,
    SERVER_MODULES,
    SERVER_PYTHON,
    ServerNotInstalled,
    require_server,
    server_problem,
)

HERE = Path(__file__).resolve().parent
server_installed = pytest.mark.skipif(
    server_problem() is not None, reason="the server is not installed in this environment"
)
client_only = pytest.mark.skipif(
    server_problem() is None, reason="the server is installed in this environment"
)


def test_the_sdk_loads_nothing_of_the_server(server_process: ServerProcess) -> None:
    """In a fresh interpreter, `import runhistory` and every SDK call, against `runhistory
    serve` in another process: no module of the server side is ever loaded."""
    done = subprocess.run(
        [sys.executable, str(HERE / "sdk_every_call.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),  # the server's address, key and entity: see `use`
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome.pop("after_import") == [] and outcome.pop("after_calls") == []
    # The calls did what they say (the script would have raised otherwise).
    assert outcome["finished"] == "RUN_NOT_RUNNING" and outcome["superseded"] == "SUPERSEDED"
    assert outcome["missing"] == "NOT_FOUND" and outcome["name"] == "all"
    assert outcome["rows"] == 7 and outcome["archived"] == 11 and outcome["own"] == 1
    assert outcome["keys"] == [4, 5, 100] and outcome["columns"][-1] == 100
    assert outcome["versions"] == [1, 2] and outcome["descendants"] == 1
    assert outcome["config"] == {"lr": 0.1, "batch": 32, "more": {"a": [1, 2]}}
    assert outcome["artifacts"] == ["model", "data"] and outcome["rebuilt"] is True
    assert outcome["synced"] == 2  # the offline run's batch and its finish


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The `runhistory` console script of this environment."""
    script = Path(sys.executable).parent / "runhistory"
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )


def test_the_cli_reads_a_server_in_another_process(server_process: ServerProcess) -> None:
    with runhistory.init(project="cli", id="r1") as run:
        for i in range(3):
            run.log({"loss": 1 / (i + 1)})
    assert _cli("--help").returncode == 0
    listed = _cli("runs", f"{server_process.entity}/cli", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == ["r1"]
    history = _cli("history", run.path, "--json", "--keys", "loss")
    assert history.returncode == 0, history.stderr
    assert [row["loss"] for row in json.loads(history.stdout)] == [1.0, 0.5, 1 / 3]
    missing = _cli("summary", f"{server_process.entity}/cli/nosuchrun")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("runhistory: NOT_FOUND: ")


@client_only
def test_without_the_server_require_server_says_what_to_install_in_one_line() -> None:
    with pytest.raises(ServerNotInstalled) as refused:
        require_server("serve")
    message = refused.value.message
    assert "\n" not in message and message.startswith("`runhistory serve` runs the server; ")
    assert refused.value.code == "FAILED_PRECONDITION"
    assert refused.value.reason == "SERVER_NOT_INSTALLED"
    if sys.version_info < SERVER_PYTHON:
        assert "needs Python 3.11 or later" in message and SERVER_EXTRA in message
    else:
        assert f"pip install '{SERVER_EXTRA}'" in message and "eventsourcing" in message


@client_only
@pytest.mark.parametrize(
    "args", [["serve"], ["keys", "list"], ["project"], ["demo"], ["rebuild", "--db", "x.db"]]
)
def test_on_a_client_install_server_commands_say_in_one_line_what_to_install(
    args: list[str], tmp_path: Path
) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "runhistory"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"runhistory: FAILED_PRECONDITION: `runhistory {args[0]}")
    assert len(done.stderr.splitlines()) == 1 and SERVER_EXTRA in done.stderr, done.stderr
    assert not list(tmp_path.iterdir())  # no database made


@server_installed
def test_with_the_server_require_server_passes() -> None:
    assert server_problem() is None
    require_server("serve")


@server_installed
def test_the_server_modules_are_those_of_the_server_extra() -> None:
    """`SERVER_MODULES` names the import names of exactly the `server` extra's packages."""
    requirements = metadata.requires("runhistory") or []
    server = {
        normalized(re.match(r"[A-Za-z0-9._-]+", requirement).group())  # type: ignore[union-attr]
        for requirement in requirements
        if 'extra == "server"' in requirement.replace("'", '"')
    }
    distributions = metadata.packages_distributions()
    assert {normalized(d) for m in SERVER_MODULES for d in distributions[m]} == server


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
