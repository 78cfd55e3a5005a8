"""Several SDK writer processes logging at once to one `runhistory serve`, each to its own
run: no call fails, and every row lands exactly once (issue 15).

Before the fix, 4 writers of 2,000 rows on the SQLite server failed with INTERNAL
(`ConnectionUnavailableError: Timed out waiting for return of writer`): the read models'
catch-up read the event log inside its write transaction and deadlocked with the event
store's writers until the store's 5 s wait ran out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from concurrent_writer import KEYS, row
from conftest import SHARED
from sdk_server import ENTITY, ServerProcess

import runhistory
from runhistory.domain.identity import RunPath
from runhistory.service.runs import RunService
from runhistory.service.settings import Settings

pytestmark = pytest.mark.backends(*SHARED)

HERE = Path(__file__).parent
WRITERS = 4
ROWS = 2_000
ROW_EVENTS = ("RowsLogged", "Finished")  # the events that commit rows


def test_concurrent_writer_processes_each_row_lands_once(database: str, tmp_path: Path) -> None:
    server = ServerProcess(database, tmp_path)
    go = tmp_path / "go"
    env = {
        **os.environ,
        "RUNHISTORY_ADDRESS": server.address,
        "RUNHISTORY_API_KEY": server.api_key,
        "RUNHISTORY_ENTITY": ENTITY,
    }
    run_ids = [f"writer{i}" for i in range(WRITERS)]
    writers = [
        subprocess.Popen(
            [sys.executable, str(HERE / "concurrent_writer.py"), run_id, str(ROWS), str(go)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for run_id in run_ids
    ]
    try:
        with runhistory.Api(address=server.address, api_key=server.api_key) as api:
            deadline = time.monotonic() + 120
            while len(api.runs(f"{ENTITY}/concurrent")) < WRITERS:
                assert time.monotonic() < deadline, "the writers did not all start their runs"
                assert all(w.poll() is None for w in writers), "a writer ended before logging"
                time.sleep(0.05)
        go.touch()  # every writer logs from now on, at once
        failures = []
        for run_id, writer in zip(run_ids, writers, strict=True):
            _, stderr = writer.communicate(timeout=600)
            if writer.returncode != 0:
                failures.append(f"{run_id}: {stderr.strip()[-2000:]}")
        assert not failures, failures
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        server.stop()
    assert "unexpected error" not in server.stderr, server.stderr[-4000:]

    with RunService(Settings(db=database)) as service:
        for run_id in run_ids:
            path = RunPath(ENTITY, "concurrent", run_id)
            assert service.run(path).state == "finished"
            # Exactly once in the event log: the rows of every event that commits rows.
            committed = [
                row[0]
                for event in service.events(path=path, limit=100_000, types=ROW_EVENTS)
                for row in event.payload["rows"]
            ]
            assert committed == list(range(ROWS))
            # And in the read models, values intact.
            rows = service.history(path)
            assert [r["_step"] for r in rows] == list(range(ROWS))
            for r in rows:
                expected = row(run_id, r["_step"])
                assert {key: r[key] for key in expected} == expected
            assert len(rows[0]) == KEYS + 1 + 3  # writer, the keys, _step/_timestamp/_runtime
