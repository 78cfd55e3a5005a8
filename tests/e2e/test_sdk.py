"""The SDK end to end: `init / log / finish`, rewind, fork and the read API, against a real
gRPC server on a loopback port with an API key (no mocks).

The server runs in this process where the server is installed, else (a client-only install,
e.g. Python 3.10) as `runhistory serve` from $RUNHISTORY_TEST_SERVER_PYTHON: see
sdk_server.py. This module imports nothing of the server, so it runs on a client install.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import grpc
import pytest
from sdk_server import (  # noqa: F401 (the fixtures backend, database, server)
    ENTITY,
    SdkServer,
    backend_fixture,
    database_fixture,
    server_fixture,
    start_test_server,
    use,
)

import runhistory
import runhistory as wandb
from runhistory import client as sdk_client
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos import runhistory_pb2_grpc as pb_grpc

PROJECT = "your_project_name"


@pytest.fixture
def api(server: SdkServer) -> Iterator[runhistory.Api]:
    with runhistory.Api() as reader:
        yield reader


def steps(rows: list[dict[str, Any]]) -> list[int]:
    return [row["_step"] for row in rows]


def wandb_rewind_example() -> Any:
    """The W&B "rewind a run" page's script, with `import runhistory as wandb`."""
    # 最初のrunを初期化していくつかのメトリクスをログする
    run1 = wandb.init(project="your_project_name", entity="your_entity_name")
    for i in range(300):
        run1.log({"metric": i})
    run1.finish()

    # 最初のrunの特定のステップから巻き戻してステップ200からメトリクスをログする
    run2 = wandb.init(
        project="your_project_name", entity="your_entity_name", resume_from=f"{run1.id}?_step=200"
    )

    # 新しいrunでログを続ける
    for i in range(200, 300):
        if i < 250:
            run2.log({"metric": i, "step": i})  # スパイクなしでrun1からログを続行
        else:
            # ステップ250から尖った振る舞いを導入
            subtle_spike = i + (2 * math.sin(i / 3.0))  # subtleなスパイクパターンを適用
            run2.log({"metric": subtle_spike, "step": i})
        # さらに新しいメトリクスをすべてのステップでログ
        run2.log({"additional_metric": i * 1.1, "step": i})
    run2.finish()
    return run1, run2


# ---- the W&B examples ---------------------------------------------------------------------


def test_wandb_rewind_and_fork_examples(api: runhistory.Api) -> None:
    run1, run2 = wandb_rewind_example()
    assert run2.id == run1.id and run2.path == run1.path
    assert run1.version == 1 and run2.version == 2

    run = api.run(f"{ENTITY}/{PROJECT}/{run1.id}")
    assert run.state == "finished" and run.version == 2 and run.last_step == 400
    rows = list(run.scan_history())
    assert steps(rows) == list(range(401))
    assert [row["metric"] for row in rows[:201]] == list(range(201))
    # After the rewind every log call commits its own row: two rows per i.
    assert rows[201] == {**rows[201], "metric": 200, "step": 200}
    assert "additional_metric" not in rows[201]
    assert rows[202]["additional_metric"] == 200 * 1.1 and rows[202]["step"] == 200
    spike = 250 + 2 * math.sin(250 / 3.0)
    assert rows[301]["metric"] == spike and rows[301]["step"] == 250
    assert all(row["_timestamp"] > 0 and row["_runtime"] >= 0 for row in rows)

    # The summary is recomputed from the visible history: last values after the rewind.
    last_spike = 299 + 2 * math.sin(299 / 3.0)
    assert run.summary == {"metric": last_spike, "additional_metric": 299 * 1.1, "step": 299}

    # The version before the rewind is archived whole and stays readable.
    versions = run.versions()
    assert [(v["version"], v["archived"]) for v in versions] == [(1, True), (2, False)]
    archived = versions[0]
    assert archived["rows"] == 300 and archived["rewound_to_step"] == 200
    assert archived["last_step"] == 299 and archived["state"] == "finished"
    assert archived["summary"] == {"metric": 299}
    assert versions[1]["rows"] == 401
    assert steps(list(run.scan_history(version=1))) == list(range(300))
    first_id, live_id = (v["immutable_id"] for v in versions)
    assert run.lineage()["versions"] == [
        {"version": 1, "archived": True, "rewound_to_step": 200, "immutable_id": first_id},
        {"version": 2, "archived": False, "rewound_to_step": None, "immutable_id": live_id},
    ]

    # The W&B fork example, at a step the rewound run has.
    rewind_run = run2
    forked_run = wandb.init(
        project="your_project_name",
        entity="your_entity_name",
        fork_from=f"{rewind_run.id}?_step=300",
    )
    assert forked_run.id != rewind_run.id and forked_run.step == 301
    assert forked_run.forked_from == {
        "run": rewind_run.path,
        "step": 300,
        "version": 2,
        "immutable_id": live_id,
    }
    for i in range(300, 400):
        forked_run.log({"metric": i * 3})
    forked_run.finish()

    fork = api.run(forked_run.path)
    assert fork.forked_from == {
        "run": rewind_run.path,
        "step": 300,
        "version": 2,
        "immutable_id": live_id,
    }
    fork_rows = list(fork.scan_history())
    assert steps(fork_rows) == list(range(401))
    assert fork_rows[:301] == rows[:301]  # the inherited prefix, as the source stood
    assert [row["metric"] for row in fork_rows[301:]] == [i * 3 for i in range(300, 400)]
    assert steps(list(fork.scan_history(own_only=True))) == list(range(301, 401))
    assert fork.summary["metric"] == 399 * 3
    assert fork.lineage()["ancestors"] == [
        {"run": rewind_run.path, "version": 2, "step": 300, "immutable_id": live_id}
    ]
    descendants = run.lineage()["descendants"]
    assert [(d["run"], d["source_version"], d["step"]) for d in descendants] == [
        (forked_run.path, 2, 300)
    ]

    # The page's own fork, at step 500, is beyond the rewound run's last step (400).
    with pytest.raises(wandb.OutOfRange, match="400") as refused:
        wandb.init(
            project="your_project_name",
            entity="your_entity_name",
            fork_from=f"{rewind_run.id}?_step=500",
        )
    assert refused.value.code == "OUT_OF_RANGE"


def test_fork_of_a_fork_and_rewind_after_fork(api: runhistory.Api) -> None:
    with runhistory.init(project="p", config={"lr": 0.1, "seed": 1}) as root:
        for i in range(10):
            root.log({"x": i})
    with runhistory.init(project="p", fork_from=f"{root.id}?_step=5", config={"lr": 0.2}) as child:
        assert child.config.as_dict() == {"lr": 0.2, "seed": 1}
        child.log({"x": 100})
    grandchild = runhistory.init(project="p", fork_from=f"{child.path}?_step=6")
    grandchild.log({"x": 1000})
    grandchild.finish()
    # A later rewind of the source does not change the forks.
    with runhistory.init(project="p", resume_from=f"{root.id}?_step=2") as rewound:
        rewound.log({"x": -1})

    rows = list(api.run(grandchild.path).scan_history())
    assert [(row["_step"], row["x"]) for row in rows] == [
        *[(i, i) for i in range(6)],
        (6, 100),
        (7, 1000),
    ]
    ancestors = api.run(grandchild.path).lineage()["ancestors"]
    assert [(a["run"], a["step"], a["version"]) for a in ancestors] == [
        (child.path, 6, 1),
        (root.path, 5, 1),
    ]
    assert api.run(child.path).config == {"lr": 0.2, "seed": 1}
    assert steps(list(api.run(root.path).scan_history())) == [0, 1, 2, 3]


def test_immutable_version_ids_fork_and_read_exact_versions(api: runhistory.Api) -> None:
    with runhistory.init(project="versions", config={"lr": 1}) as run:
        for i in range(20):
            run.log({"x": i})
    first_id = run.immutable_id
    assert first_id and api.run(run.path).immutable_id == first_id
    with runhistory.init(
        project="versions", resume_from=f"{run.id}?_step=5", config={"lr": 2}
    ) as again:
        again.log({"x": -6})  # step 6
    live_id = again.immutable_id
    assert live_id != first_id
    reader = api.run(run.path)
    assert [v["immutable_id"] for v in reader.versions()] == [first_id, live_id]
    assert reader.lineage()["immutable_id"] == live_id
    assert [v["immutable_id"] for v in reader.lineage()["versions"]] == [first_id, live_id]

    # Read by its ID, bare or under the project: that version, as it was.
    old = api.run(first_id)
    assert (old.path, old.version, old.archived, old.immutable_id) == (run.path, 1, True, first_id)
    assert old.last_step == 19
    assert [row["x"] for row in list(old.scan_history())] == list(range(20))
    assert old.config == {"lr": 1} and old.summary == {"x": 19}
    assert api.run(f"{ENTITY}/versions/{first_id}").version == 1
    live = api.run(live_id)
    assert (live.version, live.archived) == (2, False)

    # Forks of the archived and of the live version, by ID (into another project).
    with runhistory.init(project="forks", fork_from=f"{first_id}?_step=15") as from_archive:
        assert from_archive.config.as_dict() == {"lr": 1}
        from_archive.log({"x": 100})
    link = {"run": run.path, "step": 15, "version": 1, "immutable_id": first_id}
    assert from_archive.forked_from == link
    forked = api.run(from_archive.path)
    assert forked.forked_from == link
    assert [(r["_step"], r["x"]) for r in list(forked.scan_history())] == [
        *((i, i) for i in range(16)),
        (16, 100),
    ]
    assert forked.lineage()["ancestors"] == [link]
    with runhistory.init(project="forks", fork_from=f"{live_id}?_step=6") as from_live:
        pass
    assert [r["x"] for r in list(api.run(from_live.path).scan_history())] == [*range(6), -6]

    # resume_from with the archived version's ID: refused, saying what to do instead.
    with pytest.raises(runhistory.FailedPrecondition) as refused:
        runhistory.init(project="versions", resume_from=f"{first_id}?_step=3")
    assert f"resume_from='{run.id}?_step=N'" in refused.value.message
    assert f"fork_from='{first_id}?_step=N'" in refused.value.message
    assert api.run(run.path).version == 2

    # The live version's ID rewinds the run; a reader opened by that ID keeps reading it.
    runhistory.init(project="versions", resume_from=f"{live_id}?_step=6").finish()
    live.refresh()
    assert (live.version, live.archived) == (2, True)
    assert [row["x"] for row in list(live.scan_history())] == [*range(6), -6]


def test_rewind_to_a_pending_rows_step_and_a_fork_rewound_below_its_fork_step(
    api: runhistory.Api,
) -> None:
    run = runhistory.init(project="pending")
    for i in range(10):
        run.log({"x": i})
    run.log({"x": 10}, step=10, commit=False)  # acknowledged, not committed
    run.flush()
    rewound = runhistory.init(
        project="pending", resume_from=f"{run.id}?_step=10", reinit="create_new"
    )
    assert (rewound.version, rewound.step) == (2, 11)
    rewound.finish()
    with pytest.raises(runhistory.Superseded):
        run.finish()
    reader = api.run(run.path)
    assert reader.versions()[0]["last_step"] == 10
    assert [row["x"] for row in list(reader.scan_history())] == list(range(11))

    with runhistory.init(project="pending", fork_from=f"{run.id}?_step=8") as fork:
        fork.log({"x": 100})
    back = runhistory.init(project="pending", resume_from=f"{fork.id}?_step=3")
    assert back.forked_from is not None and back.forked_from["step"] == 3
    back.finish()
    forked = api.run(fork.path)
    assert forked.forked_from is not None and forked.forked_from["step"] == 3
    assert forked.lineage()["ancestors"][0]["step"] == 3
    assert [row["x"] for row in list(forked.scan_history())] == list(range(4))


# ---- batching, ordering and idempotent retries ---------------------------------------------


def test_many_log_calls_arrive_once_in_few_batches(api: runhistory.Api) -> None:
    run = runhistory.init(project="bulk")
    data = {f"key{k}": float(k) for k in range(10)}
    for _ in range(10_000):
        run.log(data)
    assert run.step == 10_000
    run.finish()

    rows = list(api.run(run.path).scan_history())
    assert steps(rows) == list(range(10_000))
    assert all({k: row[k] for k in data} == data for row in rows)
    window = list(api.run(run.path).scan_history(keys=["key3"], min_step=10, max_step=13))
    assert [(row["_step"], row["key3"]) for row in window] == [(10, 3.0), (11, 3.0), (12, 3.0)]
    assert "key4" not in window[0]
    # Batched: far fewer RowsLogged events than log() calls.
    logged = [e for e in api.run(run.path).events() if e["type"] == "RowsLogged"]
    assert 1 <= len(logged) <= 1_000
    assert sum(len(e["payload"]["rows"]) for e in logged) == 10_000


def test_log_waits_for_room_when_the_queue_is_full(
    api: runhistory.Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runhistory.sender.Sender, "max_queued", 8)
    run = runhistory.init(project="bulk")
    for i in range(500):
        run.log({"i": i})
        assert len(run._queue) <= 9
    run.finish()
    assert [row["i"] for row in api.run(run.path).scan_history()] == list(range(500))


def test_the_same_batch_sent_twice_lands_once(server: SdkServer, api: runhistory.Api) -> None:
    key = (("authorization", f"Bearer {server.api_key}"),)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.RunHistoryStub(channel)
        session = stub.Init(pb.InitRequest(entity=ENTITY, project="p"), metadata=key)
        batch = pb.LogBatch(
            path=session.path,
            writer=session.writer,
            seq=1,
            calls=[pb.LogCall(data={"a": pb.Value(int_value=i)}, timestamp=1.0) for i in range(3)],
        )
        first = stub.Log(batch, metadata=key)
        second = stub.Log(batch, metadata=key)
    assert first.applied and first.rows == 3
    assert not second.applied and second.rows == 0
    assert [row["a"] for row in api.run(session.path).scan_history()] == [0, 1, 2]


class LoseFirstLogAck(grpc.UnaryUnaryClientInterceptor):
    """A network fault on the client side: the first Log request reaches the server and is
    applied, but its acknowledgement is lost (the client sees UNAVAILABLE)."""

    def __init__(self) -> None:
        self.acks: list[tuple[int, bool]] = []

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        outcome = continuation(details, request)
        if not details.method.endswith("/Log"):
            return outcome
        ack = outcome.result()
        # The sender sends each spooled request's bytes as they are.
        batch = pb.LogBatch.FromString(request) if isinstance(request, bytes) else request
        self.acks.append((batch.seq, ack.applied))
        if len(self.acks) == 1:
            return LostAck()
        return outcome


class LostAck(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection reset after the request was sent (injected)"

    def result(self, timeout: float | None = None) -> Any:
        raise self

    def done(self) -> bool:
        return True

    def add_done_callback(self, callback: Any) -> None:
        callback(self)


def test_a_lost_acknowledgement_is_retried_with_the_same_seq(
    api: runhistory.Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = LoseFirstLogAck()
    plain = sdk_client.open_channel
    monkeypatch.setattr(
        sdk_client,
        "open_channel",
        lambda *args: grpc.intercept_channel(plain(*args), fault),
    )
    run = runhistory.init(project="retry")
    for i in range(5):
        run.log({"i": i})
    run.finish()

    assert fault.acks[:2] == [(1, True), (1, False)]  # resent as seq 1; applied only once
    assert [row["i"] for row in api.run(run.path).scan_history()] == [0, 1, 2, 3, 4]


def test_rows_logged_while_the_server_restarts_arrive_once(server: SdkServer) -> None:
    run = runhistory.init(project="restart")
    for i in range(100):
        run.log({"i": i})
    run.flush()
    server.stop()
    for i in range(100, 200):
        run.log({"i": i})
    time.sleep(0.3)  # the sender meets the stopped server and keeps retrying
    server.restart()  # same address, same database
    run.finish()
    with runhistory.Api() as api:
        rows = list(api.run(run.path).scan_history())
        assert [row["i"] for row in rows] == list(range(200))
        assert api.run(run.path).state == "finished"


def test_config_summary_and_metric_writes_keep_their_order(api: runhistory.Api) -> None:
    run = runhistory.init(project="order")
    run.log({"loss": 1.0})
    run.summary["loss"] = 0.0  # explicit, until loss is logged again
    run.log({"loss": 2.0})
    run.config["after"] = 1
    run.finish()
    events = [e["type"] for e in api.run(run.path).events()]
    assert events == [
        "Created",
        "RowsLogged",
        "SummarySet",
        "RowsLogged",
        "ConfigUpdated",
        "Finished",
    ]
    assert api.run(run.path).summary == {"loss": 2.0}


# ---- refusals --------------------------------------------------------------------------------


def test_a_superseded_writer_fails_at_finish(
    api: runhistory.Api, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    old = runhistory.init(project="fence")
    for i in range(5):
        old.log({"x": i})
    old.flush()
    new = runhistory.init(project="fence", resume_from=f"{old.id}?_step=2", reinit="create_new")
    old.log({"x": 99})  # queued; the server refuses it: the session was superseded
    with caplog.at_level(logging.ERROR, logger="runhistory"):
        with pytest.raises(runhistory.Superseded):
            old.flush()
        for i in range(100, 200):  # the training loop goes on; nothing more is sent
            old.log({"x": i})
        with pytest.raises(runhistory.FailedPrecondition, match="superseded") as refused:
            old.finish()
    assert isinstance(refused.value, runhistory.Superseded)
    assert refused.value.code == "FAILED_PRECONDITION" and refused.value.reason == "SUPERSEDED"
    old.finish()  # idempotent
    with pytest.raises(runhistory.Superseded):
        old.log({"x": 200})  # after finish(), the reason it ended
    # The background thread reported it in one log line, without a traceback.
    lines = [r for r in caplog.records if r.name == "runhistory" and r.levelno == logging.ERROR]
    assert len(lines) == 1 and "superseded" in lines[0].getMessage()
    assert lines[0].exc_info is None
    assert "Traceback" not in capfd.readouterr().err

    new.log({"x": 3})
    new.finish()
    rows = list(api.run(old.path).scan_history())
    assert [(row["_step"], row["x"]) for row in rows] == [(0, 0), (1, 1), (2, 2), (3, 3)]


def test_refusals_are_raised_as_the_class_of_their_reason(api: runhistory.Api) -> None:
    """The server's ErrorInfo reason chooses the class, not the message: this run's path
    has "superseded" in it, and writing to it after it finished is RUN_NOT_RUNNING."""
    with runhistory.init(project="superseded", id="superseded") as run:
        run.log({"x": 1})
    stale = runhistory.init(project="superseded", id="superseded", resume="must")
    with runhistory.init(
        project="superseded", id="superseded", resume="must", reinit="create_new"
    ) as current:
        current.log({"x": 2})
    stale.log({"x": 3})  # its session was superseded by `current`
    with pytest.raises(runhistory.Superseded) as superseded:
        stale.finish()
    assert superseded.value.reason == "SUPERSEDED"

    key = (("authorization", f"Bearer {api._connection.credentials.api_key}"),)
    batch = pb.LogBatch(path=run.path, calls_json=b'[[{"x": 4}, 1.0, null, null]]')
    with grpc.insecure_channel(api.address) as channel, pytest.raises(grpc.RpcError) as caught:
        pb_grpc.RunHistoryStub(channel).Log(batch, metadata=key)
    assert "superseded" in caught.value.details() and "resume it first" in caught.value.details()
    refused = sdk_client.error_from_rpc(caught.value)
    assert type(refused) is runhistory.RunNotRunning
    assert (refused.code, refused.reason) == ("FAILED_PRECONDITION", "RUN_NOT_RUNNING")
    assert refused.message == caught.value.details()
    with pytest.raises(runhistory.NotFound) as missing:
        api.run(f"{ENTITY}/superseded/nosuchrun")
    assert (missing.value.code, missing.value.reason) == ("NOT_FOUND", "NOT_FOUND")


def test_a_merged_row_over_the_limit_is_dropped_and_the_run_goes_on(
    api: runhistory.Api, caplog: pytest.LogCaptureFixture
) -> None:
    run = runhistory.init(project="limits")
    for i in range(5):
        run.log({"ok": i})
    # Each call is under the row limit (10 MiB); the row they merge into is over it. The
    # SDK measures merged rows with the server's limits, so the call that takes the row
    # over is dropped before it is sent; its commit stays, so the row at step 5 keeps the
    # first call's data and the steps go on as run.step said.
    run.log({"text": "x" * (6 << 20)}, commit=False)
    run.log({"more": "y" * (6 << 20)})
    run.log({"ok": 5})
    with caplog.at_level(logging.WARNING, logger="runhistory"):
        run.flush()
        run.log({"ok": 6})
        run.finish()
    assert run.step == 8
    assert len(run.warnings) == 1 and "10485760 bytes" in run.warnings[0]
    assert "step 5" in run.warnings[0]
    printed = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert printed == [f"runhistory: {run.warnings[0]}"]
    info = api.run(run.path)
    assert [(row["_step"], row["ok"]) for row in info.scan_history(keys=["ok"])] == [
        *((i, i) for i in range(5)),
        (6, 5),
        (7, 6),
    ]
    assert [row["_step"] for row in info.scan_history(keys=["text"])] == [5]
    assert list(info.scan_history(keys=["more"])) == []  # the call that was dropped
    assert info.state == "finished" and info.exit_code == 0 and info.last_step == 7


def test_a_batch_over_the_servers_request_limit_goes_in_parts(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = start_test_server(database, tmp_path, max_request_bytes=64 * 1024)
    use(small, monkeypatch)
    try:
        run = runhistory.init(project="limits")
        for i in range(200):  # about 400 KiB in one queue burst
            run.log({"i": i, "text": "y" * 2000})
        run.finish()
        with runhistory.Api() as api:
            assert [row["i"] for row in api.run(run.path).scan_history()] == list(range(200))
    finally:
        small.stop()


def test_wrong_calls_raise_and_bad_rows_are_dropped(server: SdkServer) -> None:
    run = runhistory.init(project="bad")
    # Wrong calls raise at once: they are the script's bug, not its data.
    with pytest.raises(runhistory.InvalidArgument, match="dict"):
        run.log([("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(runhistory.InvalidArgument):
        run.log({"a": 1}, step=-1)
    with pytest.raises(runhistory.InvalidArgument):
        run.log({"a": 1}, commit="yes")
    with pytest.raises(runhistory.InvalidArgument):
        run.define_metric("loss", summary="median")
    with pytest.raises(runhistory.InvalidArgument):
        run.config.update({"f": object()})
    # Rows the server would refuse are dropped, each with a warning naming what was wrong
    # and the limit; the step does not move.
    run.log({"_step": 1})
    run.log({"a": [1, 2]})
    run.log({"k" * 300: 1})
    run.log({"big": "z" * (11 * 1024 * 1024)})
    assert run.step == 0
    run.log({"a": 1})
    assert run.step == 1
    run.finish()
    assert len(run.warnings) == 4
    assert "reserved" in run.warnings[0]
    assert "list" in run.warnings[1] and "allowed: int, float" in run.warnings[1]
    assert "at most 256" in run.warnings[2]
    assert "at most 10485760 bytes" in run.warnings[3]
    with runhistory.Api() as api:
        assert list(api.run(run.path).scan_history()) == [
            {"_step": 0, "a": 1, "_timestamp": ANY, "_runtime": ANY}
        ]
    with pytest.raises(runhistory.RunNotRunning, match="finished"):
        run.log({"a": 2})


def test_errors_of_init_and_reads(server: SdkServer, api: runhistory.Api) -> None:
    with pytest.raises(runhistory.NotFound):
        api.run(f"{ENTITY}/p/nosuchrun")
    with pytest.raises(runhistory.PermissionDenied):
        api.run("another/p/nosuchrun")  # the key's entity is ENTITY
    with pytest.raises(runhistory.InvalidArgument):
        api.run("a/b/c/d/e")
    with pytest.raises(runhistory.InvalidArgument, match="_step"):
        runhistory.init(project="p", resume_from="abc?step=3")
    with pytest.raises(runhistory.NotFound):
        runhistory.init(project="p", resume_from="nosuchrun?_step=0")
    with pytest.raises(runhistory.NotFound):
        runhistory.init(project="p", id="nosuchrun", resume="must")
    run = runhistory.init(project="p", id="taken")
    run.finish()
    with pytest.raises(runhistory.AlreadyExists) as exists:
        runhistory.init(project="p", id="taken")
    assert exists.value.code == "ALREADY_EXISTS"
    with pytest.raises(runhistory.OutOfRange, match="no committed steps"):
        runhistory.init(project="p", fork_from="taken?_step=0")


def test_an_unreachable_server_ends_in_connection_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RUNHISTORY_RETRY_SECONDS", "0.5")
    started = time.monotonic()
    with pytest.raises(runhistory.ConnectionFailed, match="cannot reach") as failed:
        runhistory.init(project="p", address=f"127.0.0.1:{port}")
    assert failed.value.code == "UNAVAILABLE"
    assert time.monotonic() - started < 20
    with pytest.raises(runhistory.ConnectionFailed):
        runhistory.Api(address=f"127.0.0.1:{port}").run("e/p/r")


# ---- steps, warnings, values ----------------------------------------------------------------


def test_step_rules_and_the_lower_step_warning(
    api: runhistory.Api, caplog: pytest.LogCaptureFixture
) -> None:
    run = runhistory.init(project="steps")
    run.log({"a": 1}, commit=False)
    run.log({"b": 2})  # merged with a into step 0
    assert run.step == 1
    run.log({"c": 3}, step=5)  # moves to 5, committed later
    run.log({"d": 4}, step=5)
    assert run.step == 5
    with caplog.at_level(logging.WARNING, logger="runhistory"):
        run.log({"e": 5}, step=3)  # lower than 5: ignored with a warning
        run.log({"f": 6})  # merged into 5 and committed
        run.finish()
    assert run.step == 6
    assert len(run.warnings) == 1
    assert "step 3" in run.warnings[0] and "current step 5" in run.warnings[0]
    assert any("step 3" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)

    rows = list(api.run(run.path).scan_history())
    values = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
    assert steps(rows) == [0, 5]
    assert values == [{"a": 1, "b": 2}, {"c": 3, "d": 4, "f": 6}]


def test_values_round_trip(api: runhistory.Api) -> None:
    run = runhistory.init(project="values")
    run.log(
        {
            "nested": {"inner": {"x": 1}},
            "nan": math.nan,
            "inf": math.inf,
            "ninf": -math.inf,
            "flag": True,
            "text": "héllo",
            "big": 2**62,
        }
    )
    run.finish()
    (row,) = list(api.run(run.path).scan_history())
    assert row["nested.inner.x"] == 1 and math.isnan(row["nan"])
    assert row["inf"] == math.inf and row["ninf"] == -math.inf
    assert row["flag"] is True and row["text"] == "héllo" and row["big"] == 2**62
    assert next(iter(api.run(run.path).scan_history(keys=["flag"])))["flag"] is True


def test_context_manager_finishes_with_the_exit_code(api: runhistory.Api) -> None:
    with runhistory.init(project="ctx") as good:
        good.log({"x": 1})
    info = api.run(good.path)
    assert info.state == "finished" and info.exit_code == 0
    assert next(iter(info.scan_history()))["x"] == 1

    with pytest.raises(ZeroDivisionError), runhistory.init(project="ctx") as bad:
        bad.log({"x": 1})
        _ = 1 / 0
    info = api.run(bad.path)
    assert info.state == "crashed" and info.exit_code == 1
    assert steps(list(info.scan_history())) == [0]


# ---- config, summary, metrics, artifacts -------------------------------------------------


def test_config_summary_metrics_and_artifacts_round_trip(api: runhistory.Api) -> None:
    run = runhistory.init(
        project="cfg",
        name="first try",
        tags=["baseline", "cnn"],
        config={"lr": 0.1, "layers": [64, 32]},
    )
    assert run.name == "first try" and run.entity == ENTITY and run.project == "cfg"
    run.config.update({"batch": 32})
    run.config["optimizer"] = "adam"
    run.config.epochs = 3
    assert run.config.lr == 0.1 and run.config["epochs"] == 3
    run.define_metric("loss", summary="min,max")
    run.define_metric("secret", hidden=True)
    for loss in (0.9, 0.4, 0.6):
        run.log({"loss": loss, "secret": 1})
    run.summary["best_acc"] = 0.93
    run.summary.update({"notes": {"ok": True}})
    summary = run.summary.as_dict()  # waits for the writes so far
    assert summary["loss"] == {"min": 0.4, "max": 0.9}
    assert summary["best_acc"] == 0.93 and summary["notes.ok"] is True
    assert "secret" not in run.summary
    run.log_artifact("model", "model", digest="sha256:abc", size=123, uri="s3://b/model.pt")
    run.use_artifact("mnist", "dataset", digest="sha256:def")
    run.finish()

    info = api.run(run.path)
    assert info.name == "first try" and info.tags == ["baseline", "cnn"]
    assert info.config == {
        "lr": 0.1,
        "layers": [64, 32],
        "batch": 32,
        "optimizer": "adam",
        "epochs": 3,
    }
    assert info.summary == summary
    artifacts = info.artifacts()
    assert [(a["direction"], a["name"], a["type"]) for a in artifacts] == [
        ("produced", "model", "model"),
        ("used", "mnist", "dataset"),
    ]
    assert artifacts[0]["digest"] == "sha256:abc" and artifacts[0]["size"] == 123
    assert artifacts[0]["uri"] == "s3://b/model.pt" and artifacts[0]["version"] == 1

    # A rewind keeps the stored config, merges the new one, and archives the artifacts.
    again = runhistory.init(project="cfg", resume_from=f"{run.id}?_step=1", config={"lr": 0.05})
    assert again.name == "first try"
    assert again.config["lr"] == 0.05 and again.config["optimizer"] == "adam"
    again.finish()
    # Artifacts stay with the version that recorded them, now archived.
    assert [(a["name"], a["version"]) for a in api.run(run.path).artifacts()] == [
        ("model", 1),
        ("mnist", 1),
    ]
    assert [a["name"] for a in api.run(run.path).artifacts(version=1)] == ["model", "mnist"]
    assert api.run(run.path).artifacts(version=2) == []
    assert api.run(run.path).summary["loss"] == {"min": 0.4, "max": 0.9}


def test_plain_resume_continues_after_the_last_step(api: runhistory.Api) -> None:
    with runhistory.init(project="resume", id="r1", name="kept") as run:
        run.log({"x": 0})
        run.log({"x": 1})
    resumed = runhistory.init(project="resume", id="r1", resume="must")
    assert resumed.step == 2 and resumed.version == 1 and resumed.name == "kept"
    resumed.log({"x": 2})
    resumed.finish()
    assert [row["x"] for row in api.run("resume/r1").scan_history()] == [0, 1, 2]
    created = runhistory.init(project="resume", id="r2", resume="allow")
    assert created.step == 0
    created.finish()


# ---- the read API ----------------------------------------------------------------------------


def test_runs_events_as_of_and_rebuild(api: runhistory.Api) -> None:
    with runhistory.init(project="reads", entity=ENTITY) as run:
        run.log({"x": 1})
        run.flush()
        first = run.step
        run.log({"x": 2})
    fork = runhistory.init(project="reads", entity=ENTITY, fork_from=f"{run.id}?_step=0")
    fork.finish()
    assert first == 1

    listed = {r.id: r for r in api.runs(f"{ENTITY}/reads")}
    assert set(listed) == {run.id, fork.id}
    assert listed[fork.id].forked_from == {
        "run": run.path,
        "step": 0,
        "version": 1,
        "immutable_id": listed[run.id].immutable_id,
    }
    assert listed[run.id].forked_from is None
    assert list(api.runs("empty")) == []

    events = list(api.run(run.path).events())
    assert [e["type"] for e in events] == ["Created", "RowsLogged", "RowsLogged", "Finished"]
    assert [e["run_event"] for e in events] == [1, 2, 3, 4]
    assert events[1]["payload"]["rows"][0][3] == {"x": 1}
    everything = list(api.events())
    assert [e["position"] for e in everything] == sorted(e["position"] for e in everything)
    assert {e["run_uuid"] for e in everything} == {
        events[0]["run_uuid"],
        everything[-1]["run_uuid"],
    }
    cut = events[1]["position"]
    assert list(api.events(start=cut)) == [e for e in everything if e["position"] > cut]

    then = api.run(run.path).as_of(position=events[1]["position"])
    assert [row["x"] for row in then["rows"]] == [1]
    assert then["summary"] == {"x": 1}
    now = api.run(run.path).as_of(time=time.time())
    assert [row["x"] for row in now["rows"]] == [1, 2]
    with pytest.raises(runhistory.InvalidArgument):
        api.run(run.path).as_of()

    progress = list(api.rebuild())
    assert progress[-1]["done"] and progress[-1]["equal_to_live"]
    assert progress[-1]["checksums"]
    assert [row["x"] for row in api.run(run.path).scan_history()] == [1, 2]


def test_following_events_sees_new_runs(api: runhistory.Api) -> None:
    start = max((e["position"] for e in api.events()), default=0)
    stream = api.events(start=start, follow=True)
    seen: list[dict[str, Any]] = []

    def read() -> None:
        for event in stream:
            seen.append(event)
            if event["type"] == "Finished":
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with runhistory.init(project="follow") as run:
        run.log({"x": 1})
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert [e["type"] for e in seen] == ["Created", "RowsLogged", "Finished"]
    stream.close()


def as_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    keys = list(dict.fromkeys(key for row in rows for key in row))
    return {key: [row.get(key) for row in rows] for key in keys}


def rows_holding_any(read: runhistory.ApiRun, keys: list[str] | None = None, **options: Any):
    """The rows `history_columns(keys=...)` holds: those with any of the keys (scan_history,
    as W&B's, keeps those with every key)."""
    rows = list(read.scan_history(**options))
    if not keys:
        return rows
    return [
        {key: value for key, value in row.items() if key in keys or key.startswith("_")}
        for row in rows
        if any(key in row for key in keys)
    ]


def test_history_columns_hold_the_rows_column_by_column(api: runhistory.Api) -> None:
    run = runhistory.init(entity=ENTITY, project=PROJECT, id="columns", address=api.address)
    for i in range(1200):  # sealed by key in batches, the last few in the tail
        run.log({"loss": 1 / (i + 1), "epoch": i // 100} | ({"eval": "ok"} if i % 7 == 0 else {}))
    run.finish()
    fork = runhistory.init(
        entity=ENTITY, project=PROJECT, fork_from="columns?_step=600", address=api.address
    )
    fork.log({"loss": -1.0, "lr": 0.1})
    fork.finish()
    for path in (run.path, fork.path):
        read = api.run(path)
        for options in ({}, {"keys": ["loss"]}, {"keys": ["eval", "lr"]}, {"min_step": 590}):
            columns = read.history_columns(**options)
            expected = as_columns(rows_holding_any(read, **options))
            assert columns.keys() == expected.keys() and columns == expected, (path, options)
    columns = api.run(fork.path).history_columns(keys=["lr", "eval"])
    assert columns["_step"][-1] == 601 and columns["lr"] == [None] * 86 + [0.1]


def test_reads_recover_from_a_position_another_server_acknowledged(
    api: runhistory.Api, caplog: pytest.LogCaptureFixture
) -> None:
    """A process wrote to this address at a position the server now there never reached
    (it was restarted on another database, or another server took the port): its reads
    are asked again without that position, which is then forgotten."""
    # An earlier test's server may have had this port: start from what this one knows.
    sdk_client.forget_position(api.address, sdk_client.written_position(api.address))
    run = runhistory.init(entity=ENTITY, project=PROJECT, id="stale", address=api.address)
    run.log({"x": 1})
    run.finish()
    written = sdk_client.written_position(api.address)
    sdk_client.note_position(api.address, written + 1_000)
    read = api.run(run.path)  # GetRun, a unary read
    assert [row["x"] for row in read.scan_history()] == [1]
    assert sdk_client.written_position(api.address) == 0
    assert "has no event at position" in caplog.text
    sdk_client.note_position(api.address, written + 1_000)
    assert read.history_columns(keys=["x"])["x"] == [1]  # ReadHistory, a stream
    assert sdk_client.written_position(api.address) == 0
    # A position the server has is kept.
    sdk_client.note_position(api.address, written)
    assert [row["x"] for row in read.scan_history()] == [1]
    assert sdk_client.written_position(api.address) == written
