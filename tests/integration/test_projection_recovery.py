"""Projection processing stopped between events, failed mid-page, or killed with SIGKILL
resumes where it stopped and ends equal to a rebuild from position 0."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import postgres_schema_url
from sqlalchemy import create_engine, delete, select

from runhistory.domain.run import Run
from runhistory.domain.values import LogCall
from runhistory.projections.database import Database
from runhistory.projections.runner import ALL_PROJECTIONS, ProjectionRunner
from runhistory.projections.schema import tracking
from runhistory.projections.summary import SummaryProjection
from runhistory.service.application import RunEvents, event_store_env
from runhistory.service.runs import RunService
from runhistory.service.settings import Settings


def write_events(db_file: Path, runs: int = 3, batches: int = 20) -> None:
    """Events only: nothing reads, so no projection work happens here."""
    with RunService(Settings(db=str(db_file))) as service:
        for r in range(runs):
            s = service.init("ent", "proj", f"run{r}", config={"r": r})
            for b in range(batches):
                calls = [LogCall({"loss": 1.0 / (1 + b * 10 + i), "b": b}, 0.0) for i in range(10)]
                service.log(s.path, calls, writer=s.writer)
            rewound = service.init("ent", "proj", resume_from=f"run{r}?_step={batches * 5}")
            service.log(rewound.path, [LogCall({"loss": -1.0}, 0.0)], writer=rewound.writer)
            fork = service.init("ent", "proj", f"fork{r}", fork_from=f"run{r}?_step={batches * 3}")
            service.update_config(fork.path, {"forked": True}, writer=fork.writer)
            service.finish(fork.path, writer=fork.writer)


def open_runner(db_file: Path, projections=ALL_PROJECTIONS, page_size: int = 50):
    url = f"sqlite:///{db_file}"
    store = RunEvents(env=event_store_env(url))
    return store, ProjectionRunner(store, Database(url), projections, page_size=page_size)


def rebuilt_checksums(db_file: Path) -> dict[str, str]:
    store, runner = open_runner(db_file)
    runner.rebuild()
    sums = runner.checksums()
    store.close()
    return sums


def resumed_checksums(db_file: Path) -> tuple[int, dict[str, str]]:
    store, runner = open_runner(db_file)
    start = runner.position()
    runner.catch_up()
    sums = runner.checksums()
    assert runner.position() == store.last_position()
    store.close()
    return start, sums


def test_stopped_between_events_resumes_equal_to_rebuild(tmp_path: Path) -> None:
    db_file = tmp_path / "rh.db"
    write_events(db_file)
    store, runner = open_runner(db_file, page_size=1)
    assert runner.catch_up(max_events=17) == 17
    store.close()
    start, resumed = resumed_checksums(db_file)
    assert start == 17
    assert resumed == rebuilt_checksums(db_file)


class FailingSummary(SummaryProjection):
    fail_at: int = 0

    def process(self, conn, event: Run.Event, position: int) -> None:
        if position == self.fail_at:
            raise RuntimeError(f"simulated crash at position {position}")
        super().process(conn, event, position)


def test_failure_mid_page_rolls_the_page_back(tmp_path: Path) -> None:
    db_file = tmp_path / "rh.db"
    write_events(db_file)
    FailingSummary.fail_at = 23
    projections = tuple(FailingSummary if p is SummaryProjection else p for p in ALL_PROJECTIONS)
    store, runner = open_runner(db_file, projections, page_size=10)
    with pytest.raises(RuntimeError, match="simulated crash"):
        runner.catch_up()
    # Pages 1-10 and 11-20 landed; the page holding 23 rolled back for every projection.
    assert runner.position() == 20
    store.close()
    start, resumed = resumed_checksums(db_file)
    assert start == 20
    assert resumed == rebuilt_checksums(db_file)


KILLED_WORKER = textwrap.dedent(
    """
    import sys
    from runhistory.projections.database import Database
    from runhistory.projections.runner import ProjectionRunner
    from runhistory.service.application import RunEvents, event_store_env
    url = "sqlite:///" + sys.argv[1]
    store = RunEvents(env=event_store_env(url))
    runner = ProjectionRunner(store, Database(url), page_size=1)
    print("ready", flush=True)
    while runner.catch_up(max_events=1):
        pass
    print("done", flush=True)
    """
)


def test_sigkill_mid_catch_up_resumes_equal_to_rebuild(tmp_path: Path) -> None:
    db_file = tmp_path / "rh.db"
    write_events(db_file, runs=4, batches=60)
    worker = subprocess.Popen(
        [sys.executable, "-c", KILLED_WORKER, str(db_file)], stdout=subprocess.PIPE, text=True
    )
    assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    time.sleep(0.4)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL
    start, resumed = resumed_checksums(db_file)
    store = RunEvents(env=event_store_env(f"sqlite:///{db_file}"))
    total = store.last_position()
    store.close()
    assert 0 < start < total, "the worker should have been killed part way through"
    assert resumed == rebuilt_checksums(db_file)


def test_a_new_revision_replays_its_projection_and_those_reading_it(tmp_path: Path) -> None:
    """A database whose history read model an earlier revision made (no blocks by key, a
    tracking row named `history`) is brought up to date on opening: that read model is made
    anew from the log, with the summary read model that reads it; the others keep their
    positions."""
    db_file = tmp_path / "rh.db"
    write_events(db_file)
    store, runner = open_runner(db_file)
    runner.catch_up()
    current = runner.checksums()
    last = store.last_position()
    store.close()
    with sqlite3.connect(db_file) as conn:  # what revision 1 left behind, roughly
        conn.execute("DROP TABLE rh_history_tail")
        conn.execute("CREATE TABLE rh_history (segment_id, step, data)")
        conn.execute("DELETE FROM rh_history_blocks WHERE first_step > 10")
        conn.execute("UPDATE rh_tracking SET projection = 'history' WHERE projection = 'history@2'")

    store, runner = open_runner(db_file)
    with runner.db.read() as conn:
        positions = dict(conn.execute(select(tracking.c.projection, tracking.c.position)).all())
    assert positions.pop("history@2") == 0 and "history" not in positions
    assert positions.pop("summary") == 0
    assert set(positions.values()) == {last}  # nothing else replays
    runner.catch_up()
    assert runner.checksums() == current
    store.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from postgres_schema_url()


def test_two_processes_starting_a_new_revision_at_once(postgres_url: str) -> None:
    """On PostgreSQL, a second runner that finds the same projection missing loses the race
    on its tracking row: its transaction rolls back and it finds the row there."""
    url = postgres_url
    with RunService(Settings(db=url)) as service:
        service.init("ent", "proj", "r")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(delete(tracking).where(tracking.c.projection == "history@2"))
    first = engine.connect()
    first_tx = first.begin()  # the first process: its tracking row in, not committed
    first.execute(tracking.insert().values(projection="history@2", position=0))
    failures: list[BaseException] = []

    def second() -> None:
        try:
            store = RunEvents(env=event_store_env(url))
            ProjectionRunner(store, Database(url)).db.dispose()
            store.close()
        except BaseException as error:
            failures.append(error)

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(1.0)  # the second now waits on the first's tracking row
    first_tx.commit()
    first.close()
    thread.join(30)
    assert not thread.is_alive() and failures == []
    with engine.connect() as conn:
        keys = set(conn.execute(select(tracking.c.projection)).scalars())
    assert "history@2" in keys and "history" not in keys
    engine.dispose()
