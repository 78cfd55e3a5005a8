"""Every RPC against a real server on a loopback ephemeral port: success and refusals."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator

import grpc
import pytest
from conftest import SHARED, exact
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from runhistory.domain.values import flatten
from runhistory.protos import codec
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos import runhistory_pb2_grpc as pb_grpc
from runhistory.protos.status import ERROR_DOMAIN, refusal_reason
from runhistory.service.bootstrap import Running, start
from runhistory.service.settings import Settings

T0 = 1_700_000_000.0


# Servers in other processes, or restarted, share the store.
pytestmark = pytest.mark.backends(*SHARED)


@pytest.fixture
def server(database: str) -> Iterator[Running]:
    running = start(
        Settings(db=database, max_row_bytes=1024, max_request_bytes=64 * 1024, require_keys=False),
        "127.0.0.1:0",
    )
    yield running
    running.stop()


@pytest.fixture
def channel(server: Running) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.Channel) -> pb_grpc.RunHistoryStub:
    return pb_grpc.RunHistoryStub(channel)


def refused(code: grpc.StatusCode, call, *args, match: str = "", reason: str = "", **kwargs) -> str:
    """The refusal's message, once its code, message and reason (by default the code's name,
    in the status details as a google.rpc.ErrorInfo) are as expected."""
    with pytest.raises(grpc.RpcError) as caught:
        result = call(*args, **kwargs)
        if isinstance(result, Iterator):
            list(result)
    assert caught.value.code() == code, caught.value.details()
    assert match in caught.value.details()
    assert refusal_reason(caught.value) == (reason or code.name), caught.value.details()
    return caught.value.details()


def init(stub, run_id: str = "", **fields) -> pb.Session:
    return stub.Init(pb.InitRequest(entity="ent", project="proj", run_id=run_id, **fields))


def calls(*datas, step=None, commit=None) -> list[pb.LogCall]:
    made = []
    for i, data in enumerate(datas):
        call = pb.LogCall(data=codec.to_values(flatten(data)), timestamp=T0 + i)
        if step is not None:
            call.step = step
        if commit is not None:
            call.commit = commit
        made.append(call)
    return made


def log(stub, session: pb.Session, *datas, seq: int = 0) -> pb.LogAck:
    return stub.Log(
        pb.LogBatch(path=session.path, writer=session.writer, seq=seq, calls=calls(*datas))
    )


def history(stub, path: str, **fields) -> list[dict]:
    return list(codec.rows_from_chunks(stub.ReadHistory(pb.HistoryRequest(path=path, **fields))))


def rewind(point: str) -> pb.Branch:
    return pb.Branch(mode=pb.Branch.REWIND, point=point)


def fork(point: str) -> pb.Branch:
    return pb.Branch(mode=pb.Branch.FORK, point=point)


def test_health_and_reflection(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "runhistory.v1.RunHistory"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for answer in answers for s in answer.list_services_response.service}
    assert "runhistory.v1.RunHistory" in names


def test_wandb_rewind_and_fork_over_grpc(stub) -> None:
    first = init(stub, "w", config_json=json.dumps({"lr": 0.1}))
    log(stub, first, *({"metric": i} for i in range(300)), seq=1)
    stub.Finish(pb.FinishRequest(path=first.path, writer=first.writer, seq=2))
    second = init(stub, branch=rewind("w?_step=200"), config_json='{"seed": 1}')
    assert (second.path, second.version, second.next_step) == ("ent/proj/w", 2, 201)
    assert json.loads(second.config_json) == {"lr": 0.1, "seed": 1}
    batch = []
    for i in range(200, 300):
        batch += calls({"metric": i, "step": i}, {"additional_metric": i * 1.1, "step": i})
    stub.Log(pb.LogBatch(path=second.path, writer=second.writer, seq=1, calls=batch))
    ack = stub.Finish(pb.FinishRequest(path=second.path, writer=second.writer, seq=2))

    rows = history(stub, "ent/proj/w", min_position=ack.position)
    assert [r["_step"] for r in rows] == list(range(401))
    assert [r["_step"] for r in history(stub, "ent/proj/w", version=1)] == list(range(300))
    versions = stub.ListVersions(pb.RunRequest(path="ent/proj/w")).versions
    assert [(v.version, v.archived, v.rows) for v in versions] == [(1, True, 300), (2, False, 401)]
    assert versions[0].rewound_to_step == 200
    assert json.loads(versions[0].summary_json) == {"metric": 299}

    child = init(stub, "child", branch=fork("ent/proj/w?_step=300"))
    assert child.forked_from.run == "ent/proj/w" and child.forked_from.step == 300
    assert [r["_step"] for r in history(stub, child.path)] == list(range(301))
    assert history(stub, child.path, own_only=True) == []
    info = stub.GetRun(pb.RunRequest(path=child.path))
    assert (info.forked_from.run, info.forked_from.version, info.state) == (
        "ent/proj/w",
        2,
        "running",
    )
    lineage = stub.GetLineage(pb.RunRequest(path="ent/proj/w"))
    assert [d.run for d in lineage.descendants] == ["ent/proj/child"]
    assert [(v.version, v.archived) for v in lineage.versions] == [(1, True), (2, False)]
    assert [a.run for a in stub.GetLineage(pb.RunRequest(path=child.path)).ancestors] == [
        "ent/proj/w"
    ]
    details = refused(grpc.StatusCode.OUT_OF_RANGE, init, stub, "", branch=fork("w?_step=500"))
    assert "400" in details


def test_immutable_version_ids_over_grpc(stub) -> None:
    first = init(stub, "v", config_json='{"lr": 1}')
    log(stub, first, *({"x": i} for i in range(20)), seq=1)
    second = init(stub, branch=rewind("v?_step=5"), config_json='{"lr": 2}')
    ack = log(stub, second, {"x": -6})  # step 6
    assert first.immutable_id and second.immutable_id != first.immutable_id
    versions = stub.ListVersions(pb.RunRequest(path="ent/proj/v", min_position=ack.position))
    assert [v.immutable_id for v in versions.versions] == [first.immutable_id, second.immutable_id]
    lineage = stub.GetLineage(pb.RunRequest(path="ent/proj/v"))
    assert lineage.immutable_id == second.immutable_id
    assert [v.immutable_id for v in lineage.versions] == [first.immutable_id, second.immutable_id]
    live = stub.GetRun(pb.RunRequest(path="ent/proj/v"))
    assert (live.immutable_id, live.archived, live.version) == (second.immutable_id, False, 2)

    # GetRun and the reads take the ID, bare or under entity/project, and read that version.
    for path in (first.immutable_id, f"ent/proj/{first.immutable_id}"):
        info = stub.GetRun(pb.RunRequest(path=path))
        assert (info.path, info.version, info.archived, info.last_step) == (
            "ent/proj/v",
            1,
            True,
            19,
        )
        assert info.immutable_id == first.immutable_id
        assert [r["x"] for r in history(stub, path)] == list(range(20))
        assert json.loads(stub.GetConfig(pb.RunRequest(path=path)).json) == {"lr": 1}
        assert json.loads(stub.GetSummary(pb.RunRequest(path=path)).json) == {"x": 19}
    refused(
        grpc.StatusCode.INVALID_ARGUMENT,
        stub.GetRun,
        pb.RunRequest(path=first.immutable_id, version=2),
        match="names version 1 by its immutable ID, but version is 2",
    )
    refused(
        grpc.StatusCode.NOT_FOUND,
        stub.GetRun,
        pb.RunRequest(path=f"ent/other/{first.immutable_id}"),
        match="in project ent/other",
    )

    # Forks of the archived and of the live version, by ID.
    old = init(stub, "old", branch=fork(f"{first.immutable_id}?_step=15"))
    assert (old.forked_from.run, old.forked_from.version, old.forked_from.step) == (
        "ent/proj/v",
        1,
        15,
    )
    assert old.forked_from.immutable_id == first.immutable_id
    assert json.loads(old.config_json) == {"lr": 1}
    assert [r["x"] for r in history(stub, old.path)] == list(range(16))
    assert stub.GetRun(pb.RunRequest(path=old.path)).forked_from == old.forked_from
    ancestors = stub.GetLineage(pb.RunRequest(path=old.path)).ancestors
    assert [(a.run, a.version, a.step, a.immutable_id) for a in ancestors] == [
        ("ent/proj/v", 1, 15, first.immutable_id)
    ]
    new = init(stub, "new", branch=fork(f"ent/proj/{second.immutable_id}?_step=6"))
    assert [r["x"] for r in history(stub, new.path)] == [*range(6), -6]

    # resume_from: an archived version's ID is refused and changes nothing; the live one's
    # rewinds the run.
    details = refused(
        grpc.StatusCode.FAILED_PRECONDITION,
        init,
        stub,
        "",
        branch=rewind(f"{first.immutable_id}?_step=3"),
    )
    assert "resume_from='v?_step=N'" in details
    assert f"fork_from='{first.immutable_id}?_step=N'" in details
    assert stub.GetRun(pb.RunRequest(path="ent/proj/v")).version == 2
    third = init(stub, branch=rewind(f"{second.immutable_id}?_step=2"))
    assert (third.path, third.version) == ("ent/proj/v", 3)
    assert stub.GetRun(pb.RunRequest(path=second.immutable_id)).archived


def test_init_refusals(stub) -> None:
    init(stub, "dup")
    refused(grpc.StatusCode.ALREADY_EXISTS, init, stub, "dup", match="already exists")
    refused(grpc.StatusCode.NOT_FOUND, init, stub, "ghost", resume="must")
    refused(grpc.StatusCode.INVALID_ARGUMENT, init, stub, "ghost", resume="sometimes")
    refused(grpc.StatusCode.INVALID_ARGUMENT, init, stub, "bad/id")
    for point in ("dup", "dup?step=1", "dup?_step=-1", "dup?_step=1.5", "a/b?_step=1"):
        details = refused(grpc.StatusCode.INVALID_ARGUMENT, init, stub, "", branch=rewind(point))
        assert "_step=<N>" in details
    refused(grpc.StatusCode.NOT_FOUND, init, stub, "", branch=rewind("nobody?_step=0"))
    refused(
        grpc.StatusCode.OUT_OF_RANGE,
        init,
        stub,
        "",
        branch=rewind("dup?_step=0"),
        match="no committed",
    )
    refused(grpc.StatusCode.INVALID_ARGUMENT, init, stub, "", branch=pb.Branch(point="dup?_step=0"))
    refused(grpc.StatusCode.INVALID_ARGUMENT, init, stub, "x", config_json="[1, 2]", match="object")
    refused(grpc.StatusCode.INVALID_ARGUMENT, init, stub, "x", config_json="{oops", match="JSON")


def test_log_refusals_change_nothing(stub) -> None:
    s = init(stub, "r")
    log(stub, s, {"a": 1})
    before = list(stub.ReadEvents(pb.EventsRequest(start=0)))
    reserved = pb.LogCall(data=codec.to_values({"_step": 2}), timestamp=T0)
    bad_batch = pb.LogBatch(path=s.path, writer=s.writer, calls=[*calls({"ok": 1}), reserved])
    refused(grpc.StatusCode.INVALID_ARGUMENT, stub.Log, bad_batch, match="reserved")
    refused(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        log,
        stub,
        s,
        {"ok": 1},
        {"big": "x" * 2000},
        match="bytes",
    )
    many = [{"k": "y" * 900} for _ in range(80)]
    refused(grpc.StatusCode.RESOURCE_EXHAUSTED, log, stub, s, *many, match="request")
    empty = pb.LogBatch(path=s.path, writer=s.writer, calls=[pb.LogCall(data={"a": pb.Value()})])
    refused(grpc.StatusCode.INVALID_ARGUMENT, stub.Log, empty, match="empty")
    refused(
        grpc.StatusCode.INVALID_ARGUMENT, stub.Log, pb.LogBatch(calls=calls({"a": 1})), match="path"
    )
    refused(
        grpc.StatusCode.NOT_FOUND,
        stub.Log,
        pb.LogBatch(path="ent/proj/none", calls=calls({"a": 1})),
    )
    assert list(stub.ReadEvents(pb.EventsRequest(start=0))) == before
    assert [r["_step"] for r in history(stub, s.path)] == [0]


def test_lower_step_warns_and_special_floats_survive(stub) -> None:
    s = init(stub, "f")
    ack = stub.Log(
        pb.LogBatch(
            path=s.path,
            writer=s.writer,
            calls=[
                *calls({"x": math.nan, "y": math.inf, "z": -math.inf}, step=5),
                *calls({"x": 1.0}, step=3),
            ],
        )
    )
    assert len(ack.warnings) == 1 and "step 3" in ack.warnings[0] and "step 5" in ack.warnings[0]
    stub.Finish(pb.FinishRequest(path=s.path, writer=s.writer))
    (row,) = history(stub, s.path)
    assert (
        row["_step"] == 5
        and math.isnan(row["x"])
        and row["y"] == math.inf
        and row["z"] == -math.inf
    )
    assert isinstance(row["x"], float)


def test_idempotent_batches(stub) -> None:
    s = init(stub, "idem")
    batch = pb.LogBatch(path=s.path, writer=s.writer, seq=1, calls=calls({"a": 1}, {"a": 2}))
    first, again = stub.Log(batch), stub.Log(batch)
    assert first.applied and not again.applied and again.seq == 1
    acks = list(
        stub.LogStream(
            iter([batch, pb.LogBatch(path=s.path, writer=s.writer, seq=2, calls=calls({"a": 3}))])
        )
    )
    assert [(a.seq, a.applied) for a in acks] == [(1, False), (2, True)]
    assert [r["a"] for r in history(stub, s.path)] == [1, 2, 3]


def test_superseded_writer_and_finished_run(stub) -> None:
    s = init(stub, "fence")
    log(stub, s, {"a": 1}, {"a": 2})
    init(stub, branch=rewind("fence?_step=0"))
    superseded = {"match": "superseded", "reason": "SUPERSEDED"}
    refused(grpc.StatusCode.FAILED_PRECONDITION, log, stub, s, {"a": 3}, **superseded)
    finish = pb.FinishRequest(path=s.path, writer=s.writer)
    refused(grpc.StatusCode.FAILED_PRECONDITION, stub.Finish, finish, **superseded)
    again = init(stub, "fence", resume="must")
    stub.Finish(pb.FinishRequest(path=s.path, writer=again.writer))
    not_running = {"match": "finished", "reason": "RUN_NOT_RUNNING"}
    refused(grpc.StatusCode.FAILED_PRECONDITION, log, stub, again, {"a": 4}, **not_running)


def test_a_refusal_carries_its_reason_as_a_google_rpc_error_info(stub) -> None:
    s = init(stub, "reasons")
    stub.Finish(pb.FinishRequest(path=s.path, writer=s.writer))
    with pytest.raises(grpc.RpcError) as caught:
        log(stub, s, {"a": 1})
    error = caught.value
    # The standard rich status: code and message as before, and the details beside them.
    (details,) = [v for k, v in error.trailing_metadata() if k == "grpc-status-details-bin"]
    status = status_pb2.Status.FromString(details)
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert status.message == error.details() and "resume it first" in error.details()
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("RUN_NOT_RUNNING", ERROR_DOMAIN)


def test_config_summary_metrics_artifacts(stub) -> None:
    s = init(stub, "meta", config_json='{"lr": 0.1}')
    stub.UpdateConfig(
        pb.UpdateConfigRequest(path=s.path, writer=s.writer, config_json='{"bs": 32}')
    )
    log(stub, s, {"acc": 0.5}, {"acc": 0.7})
    stub.DefineMetric(pb.DefineMetricRequest(path=s.path, key="acc", summary="max,mean"))
    stub.SetSummary(pb.SetSummaryRequest(path=s.path, values=codec.to_values({"best": 0.7})))
    stub.RecordArtifact(
        pb.RecordArtifactRequest(path=s.path, direction="produced", name="m", type="model", size=3)
    )
    assert json.loads(stub.GetConfig(pb.RunRequest(path=s.path)).json) == {"lr": 0.1, "bs": 32}
    summary = json.loads(stub.GetSummary(pb.RunRequest(path=s.path)).json)
    assert summary == {"acc": {"max": 0.7, "mean": pytest.approx(0.6)}, "best": 0.7}
    (artifact,) = stub.ListArtifacts(pb.RunRequest(path=s.path)).artifacts
    assert (artifact.name, artifact.direction, artifact.version, artifact.size) == (
        "m",
        "produced",
        1,
        3,
    )
    refused(
        grpc.StatusCode.INVALID_ARGUMENT,
        stub.DefineMetric,
        pb.DefineMetricRequest(path=s.path, key="acc", summary="median"),
        match="min,max,mean,first,last",
    )
    refused(
        grpc.StatusCode.INVALID_ARGUMENT,
        stub.RecordArtifact,
        pb.RecordArtifactRequest(path=s.path, direction="borrowed", name="m", type="t"),
    )
    runs = stub.ListRuns(pb.ListRunsRequest(entity="ent", project="proj")).runs
    assert [r.run_id for r in runs] == ["meta"]
    refused(grpc.StatusCode.NOT_FOUND, stub.GetRun, pb.RunRequest(path="ent/proj/none"))
    refused(grpc.StatusCode.NOT_FOUND, stub.GetSummary, pb.RunRequest(path=s.path, version=9))
    refused(
        grpc.StatusCode.INVALID_ARGUMENT, stub.GetConfig, pb.RunRequest(path=s.path, version=-1)
    )


def test_history_filters(stub) -> None:
    s = init(stub, "filters")
    log(stub, s, *({"a": i, "nested": {"b": i}} if i % 3 == 0 else {"a": i} for i in range(3000)))
    rows = history(stub, s.path, keys=["nested.b"], min_step=10, max_step=2000)
    assert [r["_step"] for r in rows] == [i for i in range(12, 2001) if i % 3 == 0]
    assert set(rows[0]) == {"_step", "_timestamp", "_runtime", "nested.b"}
    rows = history(stub, s.path)
    assert [r["_step"] for r in rows] == list(range(3000))
    assert [r["a"] for r in rows] == list(range(3000))


def test_history_comes_as_series_holding_what_was_logged(stub) -> None:
    s = init(stub, "series")
    rows = [
        {"a": i, "f": i / 7, "s": f"#{i}"} | ({"eval": i % 2 == 0} if i % 100 == 0 else {})
        for i in range(3000)
    ]
    log(stub, s, *rows[:2500])  # sealed into blocks by key
    log(stub, s, *rows[2500:])  # and these sealed too, but for the last few
    log(stub, s, *rows[:5])  # steps 3000..3004: not sealed yet
    logged = {step: rows[step % 3000] for step in range(3005)}

    def expected(keys=(), min_step=0, max_step=3004) -> list[dict]:
        made = []
        for step in range(min_step, max_step + 1):
            values = {k: v for k, v in logged[step].items() if not keys or k in keys}
            if values:
                made.append({"_step": step, **values})
        return made

    for fields in (
        {},
        {"keys": ["f"]},
        {"keys": ["eval", "s"]},
        {"keys": ["eval"], "min_step": 150, "max_step": 2950},
        {"keys": ["missing"]},
        {"min_step": 2990},
    ):
        got = history(stub, s.path, **fields)
        assert all(r.pop("_timestamp") >= T0 and r.pop("_runtime") >= 0 for r in got), fields
        assert exact(got) == exact(expected(**fields)), fields
    chunks = list(stub.ReadHistory(pb.HistoryRequest(path=s.path, keys=["a"])))
    assert {series.key for series in chunks[0].series} == {"_timestamp", "_runtime", "a"}
    assert chunks[-1].upto_step == 3004
    sparse = list(stub.ReadHistory(pb.HistoryRequest(path=s.path, keys=["eval"])))
    # Times only for the rows that hold the key (every 100th and step 3000), not for all.
    assert sum(len(c.series[0].steps) // 8 for c in sparse) == 31


def test_the_encoding_flags_of_older_clients_are_ignored(channel, stub) -> None:
    """A request from a client of the three encodings, with `json = 8` and `series = 9`
    set: the numbers are reserved, the flags skipped as unknown fields, and the history
    comes as series like any other."""
    s = init(stub, "old")
    log(stub, s, {"a": 1}, {"a": 2})
    old_request = pb.HistoryRequest(path=s.path).SerializeToString() + bytes([8 << 3, 1, 9 << 3, 1])
    read = channel.unary_stream(
        "/runhistory.v1.RunHistory/ReadHistory",
        request_serializer=lambda raw: raw,
        response_deserializer=pb.HistoryChunk.FromString,
    )
    (chunk,) = read(old_request)
    assert [r["a"] for r in codec.chunk_rows(chunk)] == [1, 2]
    assert {"rows", "rows_json"}.isdisjoint(pb.HistoryChunk.DESCRIPTOR.fields_by_name)
    assert {"json", "series"}.isdisjoint(pb.HistoryRequest.DESCRIPTOR.fields_by_name)


def test_events_follow_streams_new_events(stub) -> None:
    s = init(stub, "tail")
    stream = stub.ReadEvents(pb.EventsRequest(start=0, path=s.path, follow=True))
    seen: list[pb.Event] = []
    got_three = threading.Event()

    def consume() -> None:
        try:
            for event in stream:
                seen.append(event)
                if len(seen) == 3:
                    got_three.set()
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.CANCELLED

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    init(stub, "other")  # another run's event is not streamed
    log(stub, s, {"a": 1})
    stub.Finish(pb.FinishRequest(path=s.path, writer=s.writer))
    assert got_three.wait(10)
    stream.cancel()
    reader.join(5)
    assert [e.type for e in seen] == ["Created", "RowsLogged", "Finished"]
    assert json.loads(seen[1].payload_json)["rows"][0][3] == {"a": 1}
    refused(grpc.StatusCode.INVALID_ARGUMENT, stub.ReadEvents, pb.EventsRequest(start=-1))


def test_as_of_and_rebuild(stub) -> None:
    s = init(stub, "asof", config_json='{"v": 1}')
    ack = log(stub, s, *({"x": i} for i in range(5)))
    stub.UpdateConfig(pb.UpdateConfigRequest(path=s.path, config_json='{"v": 2}'))
    init(stub, branch=rewind("asof?_step=1"))
    then = stub.AsOf(pb.AsOfRequest(path=s.path, position=ack.position))
    assert [r.step for r in then.rows] == [0, 1, 2, 3, 4]
    assert json.loads(then.config_json) == {"v": 1} and json.loads(then.summary_json) == {"x": 4}
    filtered = stub.AsOf(
        pb.AsOfRequest(path=s.path, position=ack.position, history=pb.HistoryRequest(min_step=3))
    )
    assert [r.step for r in filtered.rows] == [3, 4]
    refused(
        grpc.StatusCode.INVALID_ARGUMENT,
        stub.AsOf,
        pb.AsOfRequest(path=s.path),
        match="position or a time",
    )
    refused(grpc.StatusCode.NOT_FOUND, stub.AsOf, pb.AsOfRequest(path=s.path, time=0.0))

    progress = list(stub.Rebuild(pb.RebuildRequest()))
    final = progress[-1]
    assert final.done and final.equal_to_live and final.position == final.target
    assert set(final.checksums) == {
        "history",
        "summary",
        "runs",
        "config",
        "archive",
        "lineage",
        "artifacts",
    }
    assert [r["_step"] for r in history(stub, s.path)] == [0, 1]


def test_the_json_form_of_calls_matches_the_typed_one(stub) -> None:
    s = init(stub, "json")
    payload = codec.calls_to_json(
        [({"x": 1, "f": math.nan, "s": "a"}, T0, None, None), ({"x": 2}, T0, 7, True)]
    )
    ack = stub.Log(pb.LogBatch(path=s.path, writer=s.writer, calls_json=payload))
    assert ack.rows == 2 and ack.next_step == 8
    rows = history(stub, s.path)
    assert [r["_step"] for r in rows] == [0, 7]
    assert math.isnan(rows[0].pop("f")) and isinstance(rows[0]["x"], int)
    assert [{k: v for k, v in r.items() if k[0] != "_"} for r in rows] == [
        {"x": 1, "s": "a"},
        {"x": 2},
    ]
    assert history(stub, s.path, keys=["s"]) == [
        {"_step": 0, "_timestamp": T0, "_runtime": rows[0]["_runtime"], "s": "a"}
    ]
    both = pb.LogBatch(path=s.path, calls=calls({"x": 3}), calls_json=payload)
    refused(grpc.StatusCode.INVALID_ARGUMENT, stub.Log, both, match="not both")
    for bad, match in (
        (b"{oops", "not valid JSON"),
        (b'{"a": 1}', "JSON array"),
        (b'[[{"x": 1}, "noon", null, null]]', "JSON array"),
        (b'[[{"x": 1}, 1.0, null, "yes"]]', "commit"),
        (b'[[{"x": [1]}, 1.0, null, null]]', "type list"),
        (b'[[{"x": 1}, Infinity, null, null]]', "timestamp"),
    ):
        batch = pb.LogBatch(path=s.path, writer=s.writer, calls_json=bad)
        refused(grpc.StatusCode.INVALID_ARGUMENT, stub.Log, batch, match=match)
    assert [r["_step"] for r in history(stub, s.path)] == [0, 7]
