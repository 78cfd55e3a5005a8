"""Crash detection end to end, on a SQLite file and on PostgreSQL: `runhistory serve
--crash-after 3` in its own process, and training scripts in theirs, killed with SIGKILL or
stopped with SIGSTOP (to the server, a process cut off by a network partition). The same for
the real `wandb` SDK against the W&B endpoint.

Every wait is bounded: a run that never reaches the state the test waits for fails it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED
from sdk_server import ServerProcess, use
from test_cli import cli, cli_env
from test_wandb_http import Site, history, serving, start
from test_wandb_sdk import finish, sdk_env, start_script

import runhistory

pytestmark = pytest.mark.backends(*SHARED)

# Short, and yet a few heartbeats long (the SDK beats every quarter of it): a busy machine
# may delay one or two without the live runs being taken for crashed.
CRASH_AFTER = 3.0
WAIT_SECONDS = 60.0  # for a state the server reaches within a few seconds, on a busy machine

TRAINING = """
import sys, time
import runhistory

run = runhistory.init(project="crash", id=sys.argv[1])
for i in range(int(sys.argv[2])):
    run.log({"loss": 1.0 / (i + 1)})
run.flush()
print("READY", flush=True)
# Idle: no log() call for a long time. The heartbeat keeps the run alive until the process
# is killed, or stopped and continued (then the test sends a line and it finishes).
sys.stdin.readline()
run.log({"loss": 0.0})
run.finish()
print("DONE", flush=True)
"""


@pytest.fixture
def server(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ServerProcess]:
    running = ServerProcess(database, tmp_path, serve_args=("--crash-after", f"{CRASH_AFTER:g}"))
    use(running, monkeypatch)
    yield running
    running.stop()


def start_training(folder: Path, run_id: str, rows: int) -> subprocess.Popen[str]:
    """The training script in its own process, once its rows are acknowledged."""
    script = folder / "train.py"
    script.write_text(TRAINING)
    process = subprocess.Popen(
        [sys.executable, str(script), run_id, str(rows)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "READY":
        process.kill()
        pytest.fail(f"the training script did not start: {line}{process.communicate()[1]}")
    return process


def wait_for_state(api: runhistory.Api, path: str, state: str) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        run = api.run(path)
        if run.state == state:
            return run
        assert time.monotonic() < deadline, f"{path} is {run.state}, never {state}"
        time.sleep(0.2)


def event_types(run: Any) -> list[str]:
    return [event["type"] for event in run.events()]


def test_a_killed_writer_is_crashed_then_resume_and_rewind_work(
    server: ServerProcess, tmp_path: Path
) -> None:
    assert "runs crashed after 3 s of silence" in (server.logs / "stdout").read_text()
    resumed = start_training(tmp_path, "resumed", 10)
    rewound = start_training(tmp_path, "rewound", 10)
    api = runhistory.Api()
    try:
        # Idle for two timeouts: the heartbeats keep both runs running.
        time.sleep(2 * CRASH_AFTER)
        for run_id in ("resumed", "rewound"):
            assert api.run(f"{server.entity}/crash/{run_id}").state == "running"
        for process in (resumed, rewound):
            process.send_signal(signal.SIGKILL)
            process.wait()
    finally:
        for process in (resumed, rewound):
            process.kill()
            process.communicate()

    for run_id in ("resumed", "rewound"):
        path = f"{server.entity}/crash/{run_id}"
        run = wait_for_state(api, path, "crashed")
        assert run.exit_code is None  # crashed by silence, not by an exit code
        crash = [e for e in run.events() if e["type"] == "CrashDetected"]
        assert len(crash) == 1
        assert crash[0]["payload"]["crash_after"] == CRASH_AFTER
        assert event_types(run)[-1] == "CrashDetected"

    # resume="must" continues the crashed run after its last step.
    again = runhistory.init(project="crash", id="resumed", resume="must")
    assert again.step == 10
    again.log({"loss": 0.01})
    again.finish()
    run = api.run(f"{server.entity}/crash/resumed")
    assert run.state == "finished"
    assert [row["_step"] for row in list(run.scan_history())] == list(range(11))

    # A rewind archives the crashed version and continues from the step.
    branch = runhistory.init(project="crash", resume_from="rewound?_step=4")
    assert branch.step == 5
    branch.log({"loss": 0.02})
    branch.finish()
    run = api.run(f"{server.entity}/crash/rewound")
    assert (run.state, run.version) == ("finished", 2)
    assert [v["state"] for v in run.versions()] == ["crashed", "finished"]
    assert [row["_step"] for row in list(run.scan_history())] == list(range(6))


def test_a_writer_cut_off_and_back_revives_its_run(server: ServerProcess, tmp_path: Path) -> None:
    process = start_training(tmp_path, "partitioned", 5)
    api = runhistory.Api()
    path = f"{server.entity}/crash/partitioned"
    try:
        process.send_signal(signal.SIGSTOP)  # silent, but alive: the server cannot tell
        wait_for_state(api, path, "crashed")
        process.send_signal(signal.SIGCONT)
        wait_for_state(api, path, "running")  # its next heartbeat
        assert process.stdin is not None
        process.stdin.write("go on\n")
        process.stdin.flush()
        out, err = process.communicate(timeout=WAIT_SECONDS)
        assert process.returncode == 0, err
        assert "DONE" in out
    finally:
        process.kill()
        process.communicate()
    run = api.run(path)
    assert run.state == "finished"
    types = event_types(run)
    assert types.index("CrashDetected") < types.index("Revived") < types.index("Finished")
    assert types.count("Resumed") == 0  # the same session all along
    assert [row["loss"] for row in list(run.scan_history())][-1] == 0.0


def test_heartbeats_are_sent_while_the_run_is_open(server: ServerProcess) -> None:
    """In this process: the heartbeat thread beats at the rate the server's timeout asks
    for, and stops at finish."""
    run = runhistory.init(project="crash", id="beating")
    heartbeat = run._heartbeat
    deadline = time.monotonic() + WAIT_SECONDS
    while heartbeat.beats < 3:
        assert time.monotonic() < deadline, "no heartbeats"
        time.sleep(0.1)
    run.finish()
    assert not heartbeat.thread.is_alive()
    assert runhistory.Api().run(f"{server.entity}/crash/beating").state == "finished"


def test_serve_refuses_a_bad_crash_timeout(tmp_path: Path) -> None:
    db = str(tmp_path / "runhistory.db")
    for value in ("-1", "soon", "nan", "inf"):
        done = cli("serve", "--db", db, "--crash-after", value)
        assert done.returncode == 2, done
        assert f"invalid duration '{value}': a number of seconds >= 0 (0: never)" in done.stderr
    done = cli("serve", "--db", db, env=cli_env(RUNHISTORY_CRASH_AFTER="soon"))
    assert done.returncode == 1, done
    assert done.stderr.strip() == (
        "runhistory: INVALID_ARGUMENT: the crash timeout (--crash-after, "
        "RUNHISTORY_CRASH_AFTER) is a number of seconds >= 0, 0 to never mark runs crashed; "
        "got 'soon'"
    )


# ---- the wandb SDK --------------------------------------------------------------------------

# The wandb SDK sends its rows every second here (`settings()` in test_wandb_sdk's prelude)
# and an empty heartbeat only after 30 s without data: the script logs all the time, and
# the timeout leaves room for a late post on a busy machine.
WANDB_CRASH_AFTER = 5.0
WANDB_TRAINING = """
run = wandb.init(project="crash", id="wb1", settings=quiet())
print("READY", flush=True)
step = 0
while True:  # until killed
    run.log({"loss": 1.0 / (step + 1)})
    step += 1
    time.sleep(0.05)
"""


def test_a_killed_wandb_script_is_crashed(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its file_stream stops (the SDK's wandb-core process exits with its parent): the same
    crash detection marks it crashed, and `resume="must"` through wandb continues it."""
    # The server reads its crash timeout from the environment, as `serve` does.
    monkeypatch.setenv("RUNHISTORY_CRASH_AFTER", f"{WANDB_CRASH_AFTER:g}")
    with serving(database) as server:
        assert server.grpc.settings.crash_after == WANDB_CRASH_AFTER
        env = sdk_env(server.web.url, server.writer, tmp_path)
        process = start_script(WANDB_TRAINING, env, tmp_path)
        api = runhistory.Api(address=server.grpc.address, api_key=server.writer)
        path = "team/crash/wb1"
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.strip() == "READY", process.communicate()[1][-3000:]
            # Logging for more than the timeout: its posts keep the run running.
            deadline = time.monotonic() + WAIT_SECONDS
            while not api.run(path).last_step or api.run(path).last_step < 20:
                assert time.monotonic() < deadline, "the rows never arrived"
                time.sleep(0.2)
            time.sleep(2 * WANDB_CRASH_AFTER)
            assert api.run(path).state == "running"
            process.send_signal(signal.SIGKILL)
            process.wait()
        finally:
            process.kill()
            process.communicate()
        run = wait_for_state(api, path, "crashed")
        assert run.exit_code is None
        crash = [e for e in run.events() if e["type"] == "CrashDetected"]
        assert len(crash) == 1 and crash[0]["payload"]["crash_after"] == WANDB_CRASH_AFTER
        last_step = run.last_step

        resumed = finish(
            start_script(
                """
                run = wandb.init(project="crash", id="wb1", resume="must", settings=quiet())
                run.log({"loss": 0.0})
                run.finish()
                result("resumed")
                """,
                env,
                tmp_path,
            )
        )
        assert resumed == "resumed"
        run = api.run(path)
        assert run.state == "finished"
        last = list(run.scan_history())[-1]
        assert (last["_step"], last["loss"]) == (last_step + 1, 0.0)


def test_a_wandb_post_after_a_detected_crash_revives_the_run(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """file_stream posts, the empty heartbeat `{}` included, are the writer heard from: a
    post of the session after a detected crash (a partition) revives the run first."""
    with serving(database) as server:
        site = Site(**vars(server))
        start(site, "r1")
        assert site.stream("r1", history(0, 0, 1)).status == 200
        service = server.grpc.service
        api = site.api()
        # The server's clock an hour on: the session has been silent for the timeout.
        later = [time.time() + 3600]
        monkeypatch.setattr(service, "clock", lambda: later[0])
        service.sweep()  # or the server's own sweeper, at the same moment: one event
        wait_for_state(api, "team/p/r1", "crashed")
        assert site.stream("r1", {}).status == 200  # the SDK's heartbeat
        assert api.run("team/p/r1").state == "running"
        later[0] += 3600
        service.sweep()
        wait_for_state(api, "team/p/r1", "crashed")
        assert site.stream("r1", history(2, 2)).status == 200  # rows
        assert api.run("team/p/r1").state == "running"
        assert site.steps("r1") == [0, 1, 2]
        assert site.events("r1")[2:] == [
            "CrashDetected",
            "Revived",
            "CrashDetected",
            "Revived",
            "RowsLogged",
        ]
        api.close()
