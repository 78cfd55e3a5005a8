"""Runs that survive bad rows, server outages, killed processes and no server at all: the
SDK's spool, its sender and `runhistory sync`, against real servers (`runhistory serve` in
another process where the test stops and starts it) on SQLite and PostgreSQL.

Imports nothing of the server, so it runs on a client-only install too.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sdk_server import (  # noqa: F401 (the fixtures backend, database, server)
    CLI,
    ENTITY,
    ServerProcess,
    backend_fixture,
    database_fixture,
    server_fixture,
    start_test_server,
    use,
)

import runhistory
from runhistory.client import note_position
from runhistory.domain.values import Limits
from runhistory.spool import is_spool
from runhistory.sync import sync_folder

PROCESS_SECONDS = 240.0


def rows_of(path: str, keys: list[str] | None = None) -> list[dict[str, Any]]:
    """Every row of the run once the read models hold every event stored for it: a sync in
    another process wrote some, so this process knows no position of its own to wait for."""
    with runhistory.Api() as api:
        stored = max((event["position"] for event in api.run(path).events()), default=0)
        note_position(api.address, stored)
        return list(api.run(path).scan_history(keys=keys))


def state_of(path: str) -> tuple[str, int]:
    with runhistory.Api() as api:
        info = api.run(path)
        return info.state, len(list(info.events()))


def start_script(source: str, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    """A training script in its own process, with this process's environment (the
    server's address and key, RUNHISTORY_DIR)."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def wait_for_line(process: subprocess.Popen[str], expected: str) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + PROCESS_SECONDS
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith(expected):
            return line.strip()
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"the script never printed {expected!r}: {process.stderr.read()}")


def sync(*paths: str | Path) -> subprocess.CompletedProcess[str]:
    """`runhistory sync` as a user runs it, from this (the client's) Python."""
    return subprocess.run(
        [sys.executable, "-c", CLI, "sync", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=PROCESS_SECONDS,
    )


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the runs' spool folders go: `runhistory/` in $RUNHISTORY_DIR."""
    monkeypatch.setenv("RUNHISTORY_DIR", str(tmp_path / "work"))
    return tmp_path / "work" / "runhistory"


@pytest.fixture
def stoppable(
    database: str, tmp_path: Path, spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ServerProcess]:
    """`runhistory serve` in another process, which the test stops and starts, used by this
    process's SDK, whose runs spool into `spool_dir`."""
    server = ServerProcess(database, tmp_path)
    use(server, monkeypatch)
    monkeypatch.setenv("RUNHISTORY_DIR", str(spool_dir.parent))
    yield server
    server.stop()


def spools(folder: Path) -> list[Path]:
    return sorted(child for child in folder.iterdir() if is_spool(child))


# ---- bad rows ---------------------------------------------------------------------------


def test_a_merged_row_over_the_key_limit_is_dropped_among_good_rows(
    server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    run = runhistory.init(project="bad-rows")
    for i in range(10):
        run.log({"good": i})
    # Two calls of 6,000 keys each merge into one row of 12,000: over the server's
    # limit of 10,000 keys per row, which the SDK learnt at init.
    run.log({f"a{k}": k for k in range(6000)}, commit=False)
    with caplog.at_level(logging.WARNING, logger="runhistory"):
        run.log({f"b{k}": k for k in range(6000)})
        for i in range(10, 20):
            run.log({"good": i})
        run.finish()  # returns normally
    assert len(run.warnings) == 1
    assert "12000 keys" in run.warnings[0] and "at most 10000 keys" in run.warnings[0]
    assert sum("12000 keys" in r.getMessage() for r in caplog.records) == 1
    good = rows_of(run.path, ["good"])
    assert [(row["_step"], row["good"]) for row in good] == [
        *((i, i) for i in range(10)),
        *((i + 1, i) for i in range(10, 20)),  # step 10 holds the first call's keys
    ]
    assert [row["_step"] for row in rows_of(run.path, ["a0"])] == [10]
    assert rows_of(run.path, ["b0"]) == []
    assert state_of(run.path)[0] == "finished"


def test_a_row_the_server_refuses_is_dropped_alone_from_its_batch(
    server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's side of dropping: this SDK is made to believe in larger limits than
    the server's (as a spool synced to another server would), so the bad row reaches the
    server inside a batch of good ones. The server drops that row's data alone."""
    run = runhistory.init(project="bad-rows")
    run._limits = run._sender.limits = Limits(max_keys_per_row=10**6)
    for i in range(5):
        run.log({"good": i})
    run.flush()
    with caplog.at_level(logging.WARNING, logger="runhistory"):
        run.log({"good": 5}, commit=False)
        run.log({f"k{k}": k for k in range(10_001)})  # into the row at step 5
        for i in range(6, 10):
            run.log({"good": i})
        run.flush()
    run.finish()
    assert len(run.warnings) == 1
    assert run.warnings[0].startswith("the data of a log call at step 5 was dropped: ")
    assert "at most 10000 keys" in run.warnings[0]
    printed = [r.getMessage() for r in caplog.records if r.name == "runhistory"]
    assert printed == [f"runhistory: {run.warnings[0]}"]
    good = rows_of(run.path, ["good"])
    # The rest of its batch landed, at the steps run.step gave them.
    assert [(row["_step"], row["good"]) for row in good] == [(i, i) for i in range(10)]
    assert rows_of(run.path, ["k0"]) == []
    assert state_of(run.path)[0] == "finished"


def test_a_revoked_key_stops_sending_once_and_sync_with_a_valid_key_uploads_the_rest(
    stoppable: ServerProcess, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = stoppable

    def keys(*args: str) -> str:
        done = subprocess.run(
            [server.python, "-c", CLI, "keys", "--db", database, *args],
            capture_output=True,
            text=True,
            timeout=PROCESS_SECONDS,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    made = keys("create", "--entity", ENTITY, "--role", "writer").splitlines()
    key_id, key = made[0].split()[3], made[-1].strip()
    run = runhistory.init(project="revoked", api_key=key)
    for i in range(10):
        run.log({"i": i})
    run.flush()
    keys("revoke", key_id)
    with caplog.at_level(logging.WARNING, logger="runhistory"):
        run.log({"i": 10})
        with pytest.raises(runhistory.Unauthenticated):
            run.flush()
        for i in range(11, 20):
            run.log({"i": i})  # the training goes on; the rows go to the spool
        with pytest.raises(runhistory.Unauthenticated):
            run.finish()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert f"runhistory sync {run.dir}" in errors[0].getMessage()
    assert [row["i"] for row in rows_of(run.path)] == list(range(10))

    uploaded = sync(run.dir)  # with the admin key of the environment
    assert uploaded.returncode == 0, uploaded.stderr
    assert [row["i"] for row in rows_of(run.path)] == list(range(20))
    assert state_of(run.path)[0] == "finished"  # the script's own finish()


# ---- outages ------------------------------------------------------------------------------

OUTAGE_SCRIPT = """
    import json, sys, time
    from pathlib import Path
    import runhistory

    stop = Path(sys.argv[1])
    run = runhistory.init(project="outage")
    print("started", run.path, flush=True)
    worst, i = 0.0, 0
    while not stop.exists():
        before = time.perf_counter()
        run.log({"i": i})
        worst = max(worst, time.perf_counter() - before)
        i += 1
        time.sleep(0.02)
    run.finish()
    print("done", json.dumps({"rows": i, "worst": worst, "path": run.path}), flush=True)
"""


@pytest.mark.slow
def test_a_server_down_for_60_seconds_mid_run(
    stoppable: ServerProcess, tmp_path: Path, spool_dir: Path
) -> None:
    server = stoppable
    stop = tmp_path / "stop"
    script = start_script(OUTAGE_SCRIPT, tmp_path, str(stop))
    path = wait_for_line(script, "started").split()[1]
    time.sleep(3)
    server.stop()
    time.sleep(60)
    server.restart()  # same address, same database
    time.sleep(5)
    stop.touch()
    report = json.loads(wait_for_line(script, "done").split(" ", 1)[1])
    print(f"outage of 60 s: {report['rows']} rows, slowest log() {report['worst']:.4f} s")
    assert script.wait(PROCESS_SECONDS) == 0
    stderr = script.stderr.read() if script.stderr else ""
    assert "cannot reach the server" in stderr and "the server is back" in stderr
    assert "Traceback" not in stderr
    # log() never waited for the server: its slowest call took less than a batch
    # interval (50 ms) plus the scheduling noise of a loaded machine.
    assert report["worst"] < 0.25, report
    rows = rows_of(path)
    assert [row["i"] for row in rows] == list(range(report["rows"]))  # each once
    assert report["rows"] > 60 / 0.03  # it logged all through the outage
    assert state_of(path)[0] == "finished"
    assert not spool_dir.exists() or spools(spool_dir) == []  # drained and removed


def test_finish_waits_up_to_its_timeout_then_leaves_the_spool_to_this_process(
    stoppable: ServerProcess, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RUNHISTORY_FINISH_TIMEOUT", "2")
    run = runhistory.init(project="late")
    for i in range(10):
        run.log({"i": i})
    run.flush()
    stoppable.stop()
    for i in range(10, 20):
        run.log({"i": i})
    with caplog.at_level(logging.WARNING, logger="runhistory"):
        started = time.monotonic()
        run.finish()  # returns: the server is down
        waited = time.monotonic() - started
    assert 2 <= waited < 30
    hints = [r.getMessage() for r in caplog.records if "runhistory sync" in r.getMessage()]
    assert len(hints) == 1 and hints[0].endswith(f"runhistory sync {run.dir}")
    # This process still sends it: a sync elsewhere leaves it alone meanwhile.
    left = sync(run.dir)
    assert left.returncode == 0 and f"still written by process {os.getpid()}" in left.stdout
    stoppable.restart()
    deadline = time.monotonic() + PROCESS_SECONDS
    while Path(run.dir).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(run.dir).exists()  # drained in the background, then removed
    assert [row["i"] for row in rows_of(run.path)] == list(range(20))
    assert state_of(run.path)[0] == "finished"


KILLED_SCRIPT = """
    import sys, time
    from pathlib import Path
    import runhistory

    go = Path(sys.argv[1])
    run = runhistory.init(project="killed")
    for i in range(50):
        run.log({"i": i})
    run.flush()  # acknowledged
    print("flushed", run.path, run.dir, flush=True)
    while not go.exists():
        time.sleep(0.01)
    for i in range(50, 150):  # the server is down now
        run.log({"i": i})
        time.sleep(0.002)
    run.flush()  # on disk in the spool
    print("spooled", flush=True)
    i = 150
    while True:  # until SIGKILL
        run.log({"i": i})
        i += 1
        time.sleep(0.01)
"""


def test_sigkill_during_an_outage_then_sync_twice(
    stoppable: ServerProcess, tmp_path: Path, spool_dir: Path
) -> None:
    server = stoppable
    go = tmp_path / "go"
    script = start_script(KILLED_SCRIPT, tmp_path, str(go))
    _, path, folder = wait_for_line(script, "flushed").split()
    server.stop()
    go.touch()
    wait_for_line(script, "spooled")
    time.sleep(0.2)
    script.send_signal(signal.SIGKILL)
    script.wait(PROCESS_SECONDS)
    server.restart()

    first = sync(spool_dir.parent)  # the dir holding runhistory/ and the run's spool
    assert first.returncode == 0, first.stderr
    assert f"{path}: uploaded" in first.stdout
    assert "100%" in first.stderr  # the progress bar
    logged = [row["i"] for row in rows_of(path)]
    assert logged[:150] == list(range(150))  # every row logged before the flush
    assert logged == list(range(len(logged)))  # each once, in order
    state, events = state_of(path)
    assert state == "crashed"  # its process died before finish()

    second = sync(folder)  # the run's own folder this time
    assert second.returncode == 0, second.stderr
    assert "already uploaded" in second.stdout
    assert [row["i"] for row in rows_of(path)] == logged
    assert state_of(path) == (state, events)  # nothing applied


# ---- offline ------------------------------------------------------------------------------


def test_an_offline_run_with_no_server_then_sync(
    database: str, tmp_path: Path, spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNHISTORY_ADDRESS", "127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("RUNHISTORY_ENTITY", ENTITY)
    run = runhistory.init(project="offline", mode="offline", config={"lr": 0.1})
    assert len(run.id) == 8
    for i in range(300):
        run.log({"loss": 1 / (i + 1)})
    run.config.update({"epochs": 3})
    run.summary["best"] = 0.5
    run.finish()
    [folder] = spools(spool_dir)
    assert Path(run.dir) == folder

    server = start_test_server(database, tmp_path)
    use(server, monkeypatch)
    try:
        uploaded = sync(folder)
        assert uploaded.returncode == 0, uploaded.stderr
        assert f"{run.path}: uploaded" in uploaded.stdout
        assert [row["loss"] for row in rows_of(run.path)] == [1 / (i + 1) for i in range(300)]
        with runhistory.Api() as api:
            info = api.run(run.path)
            assert info.state == "finished"
            assert info.config == {"lr": 0.1, "epochs": 3}
            assert info.summary["best"] == 0.5
        events = state_of(run.path)[1]
        again = sync(spool_dir)
        assert again.returncode == 0 and "already uploaded" in again.stdout
        assert state_of(run.path)[1] == events
    finally:
        server.stop()


def test_an_upload_cut_short_goes_on_and_applies_nothing_twice(
    database: str, tmp_path: Path, spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNHISTORY_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("RUNHISTORY_ENTITY", ENTITY)
    run = runhistory.init(project="offline", mode="offline")
    for i in range(50):
        run.log({"i": i})
        run.flush()  # a batch per row: many writes to upload
    run.finish()
    folder = Path(run.dir)

    class CutShort(Exception):
        pass

    def cut(done: int, total: int) -> None:
        if done == 20:
            raise CutShort

    server = start_test_server(database, tmp_path)
    use(server, monkeypatch)
    try:
        with pytest.raises(CutShort):
            sync_folder(folder, progress=cut)
        # Even with the note of what was acknowledged lost, every write is sent again
        # with its own seq and the server applies none of them twice.
        (folder / "acked").unlink()
        uploaded = sync(folder)
        assert uploaded.returncode == 0, uploaded.stderr
        assert [row["i"] for row in rows_of(run.path)] == list(range(50))
        assert state_of(run.path)[0] == "finished"
    finally:
        server.stop()


def test_disabled_mode_accepts_everything_and_does_nothing(
    tmp_path: Path, spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNHISTORY_ADDRESS", "127.0.0.1:1")
    with runhistory.init(project="p", mode="disabled", config={"lr": 1}) as run:
        run.log({"loss": 1.0})
        run.log({"loss": object()}, step=5)
        run.config.update({"a": 1}, allow_val_change=True)
        run.summary["best"] = 1
        run.define_metric("loss", summary="min")
        run.log_artifact("model", "model")
        run.flush()
        assert run.config["lr"] == 1 and run.step == 5
    run.finish()
    assert not spool_dir.exists()


def test_a_spool_left_by_a_live_process_is_not_synced(
    tmp_path: Path, spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNHISTORY_ADDRESS", "127.0.0.1:1")
    script = start_script(
        """
        import time, runhistory
        run = runhistory.init(project="p", mode="offline")
        run.log({"i": 1})
        run.flush()
        print("flushed", run.dir, flush=True)
        time.sleep(600)
        """,
        tmp_path,
    )
    try:
        folder = wait_for_line(script, "flushed").split()[1]
        found = sync(folder)
        assert found.returncode == 0
        assert f"still written by process {script.pid}" in found.stdout
    finally:
        script.kill()
        script.wait()


def test_sync_errors_are_one_line(tmp_path: Path) -> None:
    missing = sync(tmp_path / "nothing")
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "no such folder" in missing.stderr
    empty = sync(tmp_path)
    assert empty.returncode == 1 and "holds no runhistory spool" in empty.stderr
    assert "Traceback" not in missing.stderr + empty.stderr


@pytest.fixture(autouse=True)
def _no_spool_in_the_working_folder() -> Iterator[None]:
    yield
    assert not Path("runhistory").exists(), "a test wrote a spool into the working folder"
