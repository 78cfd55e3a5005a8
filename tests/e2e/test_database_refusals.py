"""A full disk and a read-only database, on a real SQLite file behind a real server: the
request is refused as RESOURCE_EXHAUSTED or UNAVAILABLE with a message that says so (never
INTERNAL), the SDK keeps retrying what was not acknowledged, and once the database can
write again every row is there exactly once (issue 15).

The disk is "full" through SQLite's own cap on a file, `PRAGMA max_page_count`, set on
every connection the server opens: SQLite then fails a write that needs another page with
SQLITE_FULL, "database or disk is full", as it does on a full disk. The read-only database
is a file with mode 0444, served by a process without the capability that lets root write
to it anyway.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sdk_server import InProcessServer, ServerProcess, use

import runhistory
from runhistory.domain.identity import RunPath
from runhistory.protos import codec
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos import runhistory_pb2_grpc as pb_grpc
from runhistory.protos.status import refusal_reason
from runhistory.service.runs import RunService
from runhistory.service.settings import Settings

ROWS = 1_000  # a batch of these needs many pages


def rows(first: int, count: int) -> list[dict[str, float]]:
    return [{f"k{k}": float(step * 10 + k) for k in range(10)} for step in range(first, count)]


def log_batch(server: ServerProcess | InProcessServer, path: str) -> grpc.RpcError:
    """A raw Log of ROWS rows to `path`, expected to be refused: the refusal."""
    calls = [pb.LogCall(data=codec.to_values(row)) for row in rows(0, ROWS)]
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.RunHistoryStub(channel)
        metadata = [("authorization", f"Bearer {server.api_key}")]
        with pytest.raises(grpc.RpcError) as refused:
            stub.Log(pb.LogBatch(path=path, calls=calls), metadata=metadata, timeout=60)
    return refused.value


def assert_rows_once(database: str, path: str, count: int) -> None:
    with RunService(Settings(db=database)) as service:
        run = RunPath.parse(path)
        assert [r["_step"] for r in service.history(run)] == list(range(count))
        committed = [
            row[0]
            for event in service.events(path=run, limit=100_000, types=("RowsLogged", "Finished"))
            for row in event.payload["rows"]
        ]
        assert committed == list(range(count)), "a row was stored twice, or not at all"


# ---- a full disk ---------------------------------------------------------------------


@pytest.fixture
def page_cap(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int | None]]:
    """While `cap["pages"]` is set, every SQLite connection this process opens is capped at
    that many pages (eventsourcing calls `sqlite3.connect`, SQLAlchemy `sqlite3.dbapi2`'s)."""
    cap: dict[str, int | None] = {"pages": None}
    connect = sqlite3.dbapi2.connect

    def capped(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)  # type: ignore[arg-type]
        if cap["pages"] is not None:
            conn.execute(f"PRAGMA max_page_count = {cap['pages']}")
        return conn

    monkeypatch.setattr(sqlite3, "connect", capped)
    monkeypatch.setattr(sqlite3.dbapi2, "connect", capped)
    yield cap


def page_count(database: str) -> int:
    with sqlite3.connect(database) as conn:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])


def test_a_full_disk_is_resource_exhausted_and_the_sdk_retries_until_it_has_room(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    page_cap: dict[str, int | None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = str(tmp_path / "runhistory.db")
    server = InProcessServer(database)
    use(server, monkeypatch)
    run = runhistory.init(project="p", id="full")
    for row in rows(0, 100):
        run.log(row)
    run.flush()  # acknowledged while there was room
    server.stop()

    page_cap["pages"] = page_count(database)  # no room to grow: the disk is full
    server.restart()
    refusal = log_batch(server, run.path)
    assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refusal.details().startswith("the server's disk is full ("), refusal.details()
    assert "nothing of this request was written" in refusal.details()
    assert refusal_reason(refusal) == "DISK_FULL"

    # The SDK retries a full disk instead of dropping its rows; room is made while it does.
    caplog.set_level(logging.WARNING, logger="runhistory.service.rpc.refusals")
    for row in rows(100, 100 + ROWS):
        run.log(row)
    deadline = time.monotonic() + 20
    while "disk is full" not in caplog.text:
        assert time.monotonic() < deadline, "the SDK's rows were never refused"
        time.sleep(0.05)
    # The disk stays full a while: the SDK keeps retrying the batch, neither splitting it
    # into ever smaller refused requests nor dropping it.
    time.sleep(3)
    server.stop()
    page_cap["pages"] = None  # space freed
    server.restart()
    run.finish()
    server.stop()
    assert_rows_once(database, run.path, 100 + ROWS)


# ---- a read-only database -------------------------------------------------------------


def without_root_override() -> list[str]:
    """What runs a process so that file permissions bind it: nothing for an ordinary user;
    for root, `setpriv` dropping the capabilities that bypass them."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root ignores a file's read-only mode, and setpriv is not installed")
    drop = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}"]


def test_a_read_only_database_is_unavailable_and_the_sdk_retries_until_it_is_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "runhistory.db"
    server = ServerProcess(str(database), tmp_path)
    use(server, monkeypatch)
    run = runhistory.init(project="p", id="read-only")
    for row in rows(0, 100):
        run.log(row)
    run.flush()
    # A read waits for the read models to hold those rows: a read-only database could not
    # take what they still had to apply.
    with runhistory.Api() as api:
        assert len(list(api.run(run.path).scan_history(keys=["k0"]))) == 100
    server.stop()

    database.chmod(0o444)
    server.prefix = without_root_override()
    server.restart()
    refusal = log_batch(server, run.path)
    assert refusal.code() == grpc.StatusCode.UNAVAILABLE
    assert refusal.details().startswith("the database is read-only ("), refusal.details()
    assert refusal_reason(refusal) == "DATABASE_READ_ONLY"
    # Reads still work.
    with runhistory.Api() as api:
        assert len(list(api.run(run.path).scan_history(keys=["k0"]))) == 100

    # The SDK retries; the database is made writable (and the server restarted) meanwhile.
    for row in rows(100, 100 + ROWS):
        run.log(row)
    deadline = time.monotonic() + 20
    while "the database is read-only" not in server.stderr:
        assert time.monotonic() < deadline, "the SDK's rows were never refused"
        time.sleep(0.05)
    server.stop()
    database.chmod(0o644)
    server.prefix = []
    server.restart()
    run.finish()
    server.stop()
    assert_rows_once(str(database), run.path, 100 + ROWS)


def test_the_wandb_api_answers_a_full_disk_with_a_503_which_the_wandb_sdk_retries(
    tmp_path: Path, page_cap: dict[str, int | None]
) -> None:
    from test_wandb_http import Site, history, serving, start

    from runhistory.service import bootstrap

    database = str(tmp_path / "runhistory.db")
    with serving(database) as server:
        key = server.writer
        site = Site(**vars(server))
        start(site, "r1")
        assert site.stream("r1", history(0, 0, 1, 2)).status == 200

    def restarted() -> Site:
        running = bootstrap.start(Settings(db=database), "127.0.0.1:0", "127.0.0.1:0")
        assert running.web is not None and running.keys is not None
        return Site(running, running.web, running.keys, key, key, key, key)

    page_cap["pages"] = page_count(database)  # the disk is full
    site = restarted()
    big = history(3, *range(3, 3 + ROWS))
    try:
        reply = site.stream("r1", big)
    finally:
        site.grpc.stop()
    assert reply.status == 503, reply.text  # the wandb SDK retries a 5xx, for days
    assert "the server's disk is full (" in reply.text

    page_cap["pages"] = None  # space freed: the retried post goes through
    site = restarted()
    try:
        assert site.stream("r1", big).status == 200
        assert site.steps("r1") == list(range(3 + ROWS))
    finally:
        site.grpc.stop()
