"""API keys, authorization, TLS and hostile input, against real servers on loopback.

Every RPC is called with no key, a malformed key, a revoked key, another entity's key and a
reader key on writes: each gets the right status, changes nothing, and a refusal for another
entity's run reads the same whether that run exists or not.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import SHARED
from rpc_requests import calls_json, requests_for

import runhistory
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos import runhistory_pb2_grpc as pb_grpc
from runhistory.service.auth import KeyStore, Role
from runhistory.service.bootstrap import Running, start
from runhistory.service.settings import Settings

ALICE_RUN = "alice/p/r1"
HIDDEN_RUN = "alice/p/no-such-run"
T0 = 1_700_000_000.0


# Servers in other processes, or restarted, share the store.
pytestmark = pytest.mark.backends(*SHARED)


@dataclass
class Keys:
    admin: str
    writer: str
    reader: str
    revoked: str
    bob: str


@pytest.fixture
def server(database: str) -> Iterator[Running]:
    running = start(Settings(db=database), "127.0.0.1:0")
    yield running
    running.stop()


@pytest.fixture
def keys(server: Running) -> Keys:
    store = KeyStore(server.service.db)
    made = Keys(
        admin=store.create("alice", Role.ADMIN)[1],
        writer=store.create("alice", Role.WRITER)[1],
        reader=store.create("alice", Role.READER)[1],
        revoked=store.create("alice", Role.ADMIN)[1],
        bob=store.create("bob", Role.WRITER)[1],
    )
    store.revoke(made.revoked.split("_")[1])
    return made


@pytest.fixture
def stub(server: Running) -> Iterator[pb_grpc.RunHistoryStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.RunHistoryStub(channel)


@pytest.fixture
def alice_run(server: Running, keys: Keys) -> str:
    run = runhistory.init(
        entity="alice",
        project="p",
        id="r1",
        config={"lr": 0.1},
        address=server.address,
        api_key=keys.writer,
    )
    for i in range(5):
        run.log({"loss": 1.0 / (i + 1)})
    run.finish()
    return run.path


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def invoke(stub: pb_grpc.RunHistoryStub, rpc: str, request: Any, metadata: Any = ()) -> Any:
    """Call any RPC and drain it; returns the responses as a list."""
    method = getattr(stub, rpc)
    if rpc == "LogStream":
        return list(method(iter([request]), metadata=metadata, timeout=30))
    result = method(request, metadata=metadata, timeout=30)
    return list(result) if isinstance(result, Iterator) else [result]


def status_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


WRITES = {
    "Init",
    "Log",
    "LogStream",
    "UpdateConfig",
    "SetSummary",
    "DefineMetric",
    "RecordArtifact",
    "Finish",
}
ADMIN_ONLY = {"Rebuild"}
RPCS = [m.name for m in pb.DESCRIPTOR.services_by_name["RunHistory"].methods]


def test_every_rpc_is_covered() -> None:
    assert set(requests_for(ALICE_RUN)) == set(RPCS)


@pytest.mark.parametrize("rpc", RPCS)
def test_every_rpc_refuses_missing_malformed_and_revoked_keys(
    server: Running, keys: Keys, stub: pb_grpc.RunHistoryStub, alice_run: str, rpc: str
) -> None:
    request = requests_for(alice_run)[rpc]
    before = server.service.store.last_position()
    for metadata, expected in (
        ((), "no API key"),
        (bearer("rh_0123456789ab_" + "A" * 43), "no such key"),
        (bearer("not-a-key"), "keys read 'rh_<id>_<secret>'"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "must read 'Bearer KEY'"),
        (bearer(keys.revoked), "was revoked"),
    ):
        code, details = status_of(lambda metadata=metadata: invoke(stub, rpc, request, metadata))
        assert code == grpc.StatusCode.UNAUTHENTICATED, (rpc, metadata, details)
        assert expected in details
    assert server.service.store.last_position() == before


@pytest.mark.parametrize("rpc", RPCS)
def test_another_entitys_key_is_denied_and_learns_nothing(
    server: Running, keys: Keys, stub: pb_grpc.RunHistoryStub, alice_run: str, rpc: str
) -> None:
    before = server.service.store.last_position()
    existing = status_of(lambda: invoke(stub, rpc, requests_for(alice_run)[rpc], bearer(keys.bob)))
    hidden = status_of(lambda: invoke(stub, rpc, requests_for(HIDDEN_RUN)[rpc], bearer(keys.bob)))
    assert existing[0] == grpc.StatusCode.PERMISSION_DENIED, (rpc, existing)
    if rpc != "Rebuild":  # the one RPC that names no run: refused for bob's role instead
        assert "entity 'bob'" in existing[1] and "entity 'alice'" in existing[1]
    # The same answer whether the run exists or not.
    assert hidden == existing
    assert server.service.store.last_position() == before


@pytest.mark.parametrize("rpc", sorted(WRITES | ADMIN_ONLY))
def test_a_reader_key_may_not_write_and_a_writer_may_not_administer(
    server: Running, keys: Keys, stub: pb_grpc.RunHistoryStub, alice_run: str, rpc: str
) -> None:
    before = server.service.store.last_position()
    request = requests_for(alice_run)[rpc]
    code, details = status_of(lambda: invoke(stub, rpc, request, bearer(keys.reader)))
    assert code == grpc.StatusCode.PERMISSION_DENIED, (rpc, details)
    assert "a reader key may not" in details
    if rpc in ADMIN_ONLY:
        code, details = status_of(lambda: invoke(stub, rpc, request, bearer(keys.writer)))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "needs an admin key" in details
    assert server.service.store.last_position() == before


def test_each_role_may_do_what_it_should(
    server: Running, keys: Keys, stub: pb_grpc.RunHistoryStub, alice_run: str
) -> None:
    requests = requests_for(alice_run)
    for rpc in sorted(set(RPCS) - WRITES - ADMIN_ONLY):
        assert invoke(stub, rpc, requests[rpc], bearer(keys.reader)), rpc
    fork = invoke(stub, "Init", requests["Init"], bearer(keys.writer))[0]
    for rpc in ("Log", "LogStream", "UpdateConfig", "SetSummary", "DefineMetric", "Finish"):
        invoke(stub, rpc, requests_for(fork.path)[rpc], bearer(keys.writer))
    invoke(stub, "RecordArtifact", requests["RecordArtifact"], bearer(keys.writer))
    everything = invoke(stub, "ReadEvents", pb.EventsRequest(), bearer(keys.admin))
    assert len(everything) == server.service.store.last_position()
    code, details = status_of(
        lambda: invoke(stub, "ReadEvents", pb.EventsRequest(), bearer(keys.writer))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "may not read the whole event log" in details
    progress = invoke(stub, "Rebuild", pb.RebuildRequest(), bearer(keys.admin))
    assert progress[-1].done and progress[-1].equal_to_live


def test_forks_and_rewinds_across_entities_are_denied(
    server: Running, keys: Keys, alice_run: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNHISTORY_RETRY_SECONDS", "0")
    before = server.service.store.last_position()
    for branch in ({"fork_from": f"{alice_run}?_step=2"}, {"resume_from": f"{alice_run}?_step=2"}):
        with pytest.raises(runhistory.PermissionDenied, match="entity 'alice'"):
            runhistory.init(
                entity="bob", project="p", address=server.address, api_key=keys.bob, **branch
            )
    assert server.service.store.last_position() == before
    # Within alice's entity, the writer forks and rewinds.
    fork = runhistory.init(
        entity="alice",
        project="p",
        fork_from=f"{alice_run}?_step=2",
        address=server.address,
        api_key=keys.writer,
    )
    fork.finish()
    rewound = runhistory.init(
        entity="alice",
        project="p",
        resume_from=f"{alice_run}?_step=2",
        address=server.address,
        api_key=keys.writer,
    )
    rewound.finish()
    assert rewound.version == 2


def test_another_entitys_version_ids_are_not_found_bare_and_denied_by_path(
    server: Running, keys: Keys, stub: pb_grpc.RunHistoryStub, alice_run: str
) -> None:
    """A bare immutable ID is looked for among the key's entity's runs only: another
    entity's answers as an unknown ID does, so bob learns nothing; under a path, the entity
    is checked first, as for run IDs. Forks by ID are refused alike and write nothing."""
    before = server.service.store.last_position()
    alice_id = invoke(stub, "GetRun", pb.RunRequest(path=alice_run), bearer(keys.reader))[0]
    alice_id = alice_id.immutable_id
    unknown = "v" + "0" * 25
    found = status_of(
        lambda: invoke(stub, "GetRun", pb.RunRequest(path=alice_id), bearer(keys.bob))
    )
    missing = status_of(
        lambda: invoke(stub, "GetRun", pb.RunRequest(path=unknown), bearer(keys.bob))
    )
    assert found[0] == missing[0] == grpc.StatusCode.NOT_FOUND
    assert found[1] == missing[1].replace(unknown, alice_id)
    assert "among the runs of entity 'bob'" in found[1] and "alice" not in found[1]
    under = f"alice/p/{alice_id}"
    denied = status_of(lambda: invoke(stub, "GetRun", pb.RunRequest(path=under), bearer(keys.bob)))
    assert denied[0] == grpc.StatusCode.PERMISSION_DENIED
    for point in (f"{alice_id}?_step=2", f"{unknown}?_step=2"):
        request = pb.InitRequest(
            entity="bob", project="p", branch=pb.Branch(mode=pb.Branch.FORK, point=point)
        )
        code, _details = status_of(lambda r=request: invoke(stub, "Init", r, bearer(keys.bob)))
        assert code == grpc.StatusCode.NOT_FOUND
    assert server.service.store.last_position() == before
    # Alice's reader reads it by the bare ID; her writer forks it.
    info = invoke(stub, "GetRun", pb.RunRequest(path=alice_id), bearer(keys.reader))[0]
    assert (info.path, info.version) == (alice_run, 1)
    request = pb.InitRequest(
        entity="alice",
        project="q",
        branch=pb.Branch(mode=pb.Branch.FORK, point=f"{alice_id}?_step=2"),
    )
    assert invoke(stub, "Init", request, bearer(keys.writer))[0].forked_from.run == alice_run


def test_the_sdk_reads_its_key_from_the_environment(
    server: Running, keys: Keys, alice_run: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNHISTORY_RETRY_SECONDS", "0")
    monkeypatch.delenv("RUNHISTORY_API_KEY", raising=False)
    with runhistory.Api(address=server.address) as api, pytest.raises(runhistory.Unauthenticated):
        api.run(alice_run)
    monkeypatch.setenv("RUNHISTORY_API_KEY", keys.reader)
    with runhistory.Api(address=server.address) as api:
        assert api.run(alice_run).history()[0]["loss"] == 1.0


def test_keys_are_stored_only_as_hashes(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    running = start(Settings(db=str(db)), "127.0.0.1:0")
    try:
        record, key = KeyStore(running.service.db).create("alice", Role.WRITER, "ci")
    finally:
        running.stop()
    secret = key.split("_", 2)[2]
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT * FROM rh_api_keys").fetchall()
    assert len(rows) == 1 and record.key_id in rows[0]
    assert not any(secret in str(value) for value in rows[0])
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes(), path


def test_the_keys_command_and_revocation_on_every_server(tmp_path: Path) -> None:
    db = str(tmp_path / "shared.db")
    first = start(Settings(db=db), "127.0.0.1:0")
    second = start(Settings(db=db), "127.0.0.1:0")
    try:
        created = cli("keys", "--db", db, "create", "--entity", "team", "--role", "reader")
        key = created.stdout.strip().splitlines()[-1]
        assert key.startswith("rh_") and "reader" in created.stdout
        listed = cli("keys", "--db", db, "list")
        key_id = key.split("_")[1]
        assert key_id in listed.stdout and key.split("_", 2)[2] not in listed.stdout
        for running in (first, second):
            with grpc.insecure_channel(running.address) as channel:
                stub = pb_grpc.RunHistoryStub(channel)
                stub.ListRuns(pb.ListRunsRequest(entity="team", project="p"), metadata=bearer(key))
        revoked = cli("keys", "--db", db, "revoke", key_id)
        assert f"revoked API key {key_id}" in revoked.stdout
        for running in (first, second):
            with grpc.insecure_channel(running.address) as channel:
                stub = pb_grpc.RunHistoryStub(channel)
                code, details = status_of(
                    lambda stub=stub: stub.ListRuns(
                        pb.ListRunsRequest(entity="team", project="p"), metadata=bearer(key)
                    )
                )
                assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in details
        assert "revoked" in cli("keys", "--db", db, "list").stdout.splitlines()[0]
        unknown = cli("keys", "--db", db, "revoke", "000000000000", check=False)
        assert unknown.returncode == 1 and "NOT_FOUND: no API key" in unknown.stderr
    finally:
        first.stop()
        second.stop()


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "runhistory.service.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert done.returncode == 0, (done.stdout, done.stderr)
    return done


def test_serving_without_keys_is_refused_beyond_loopback(tmp_path: Path) -> None:
    with pytest.raises(runhistory.InvalidArgument, match="refusing to serve without API keys"):
        start(Settings(db=str(tmp_path / "a.db"), require_keys=False), "0.0.0.0:0")
    done = cli(
        "serve",
        "--no-auth",
        "--address",
        "0.0.0.0:0",
        "--db",
        str(tmp_path / "b.db"),
        check=False,
    )
    assert done.returncode == 1
    assert "refusing to serve without API keys on 0.0.0.0:0" in done.stderr
    assert "Traceback" not in done.stderr


# ---- TLS ---------------------------------------------------------------------------------


def test_tls_end_to_end_and_plaintext_refused(
    tmp_path: Path, pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNHISTORY_RETRY_SECONDS", "0")
    settings = Settings(
        db=str(tmp_path / "tls.db"), tls_cert=pki["server"], tls_key=pki["server_key"]
    )
    running = start(settings, "127.0.0.1:0")
    try:
        _, key = KeyStore(running.service.db).create("alice", Role.WRITER)
        run = runhistory.init(
            entity="alice", project="p", address=running.address, api_key=key, tls_ca=pki["ca"]
        )
        run.log({"acc": 0.5})
        run.finish()
        monkeypatch.setenv("RUNHISTORY_TLS_CA", str(pki["ca"]))
        monkeypatch.setenv("RUNHISTORY_API_KEY", key)
        with runhistory.Api(address=running.address) as api:
            assert api.run(run.path).history()[0]["acc"] == 0.5
        # A plaintext client does not get an answer.
        with grpc.insecure_channel(running.address) as channel:
            code, _ = status_of(
                lambda: pb_grpc.RunHistoryStub(channel).GetRun(
                    pb.RunRequest(path=run.path), metadata=bearer(key), timeout=5
                )
            )
        assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop()


def test_tls_with_required_client_certificates(
    tmp_path: Path, pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNHISTORY_RETRY_SECONDS", "0")
    settings = Settings(
        db=str(tmp_path / "mtls.db"),
        tls_cert=pki["server"],
        tls_key=pki["server_key"],
        tls_client_ca=pki["ca"],
    )
    running = start(settings, "127.0.0.1:0")
    try:
        _, key = KeyStore(running.service.db).create("alice", Role.READER)
        without = runhistory.Api(address=running.address, api_key=key, tls_ca=pki["ca"])
        with without, pytest.raises(runhistory.ConnectionFailed):
            without.runs("alice/p")
        with runhistory.Api(
            address=running.address,
            api_key=key,
            tls_ca=pki["ca"],
            tls_cert=pki["client"],
            tls_key=pki["client_key"],
        ) as api:
            assert api.runs("alice/p") == []
    finally:
        running.stop()


def test_tls_settings_are_checked(tmp_path: Path, pki: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="both a certificate and its private key"):
        Settings(db="memory", tls_cert=pki["server"])
    with pytest.raises(ValueError, match="no such file"):
        Settings(db="memory", tls_cert=tmp_path / "nope.pem", tls_key=pki["server_key"])
    done = cli(
        "serve", "--tls-cert", str(pki["server"]), "--db", str(tmp_path / "x.db"), check=False
    )
    assert done.returncode == 1 and "TLS needs both" in done.stderr


# ---- hostile input -------------------------------------------------------------------------


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[Running]:
    settings = Settings(
        db=str(tmp_path / "open.db"),
        require_keys=False,
        max_calls_per_batch=10,
        max_depth=4,
        max_open_streams=1,
    )
    running = start(settings, "127.0.0.1:0")
    yield running
    running.stop()


def test_malformed_messages_are_invalid_argument_on_every_rpc(open_server: Running) -> None:
    truncated = [b"\xff\xff\xff\xff", b"\x0a\x05ab"]  # a cut-off tag; a length past the end
    bad_utf8 = b"\x0a\x02\xc3\x28"  # field 1, a string, with invalid UTF-8
    with grpc.insecure_channel(open_server.address) as channel:
        for method in pb.DESCRIPTOR.services_by_name["RunHistory"].methods:
            field = method.input_type.fields_by_number.get(1)
            is_string = field is not None and field.type == field.TYPE_STRING
            name = f"/runhistory.v1.RunHistory/{method.name}"
            for data in truncated + ([bad_utf8] if is_string else []):
                if method.client_streaming:
                    rpc = channel.stream_stream(name)
                    code, details = status_of(lambda rpc=rpc, data=data: list(rpc(iter([data]))))
                elif method.server_streaming:
                    rpc = channel.unary_stream(name)
                    code, details = status_of(lambda rpc=rpc, data=data: list(rpc(data)))
                else:
                    rpc = channel.unary_unary(name)
                    code, details = status_of(lambda rpc=rpc, data=data: rpc(data))
                assert code == grpc.StatusCode.INVALID_ARGUMENT, (method.name, data, details)
                assert f"not a valid runhistory.v1.{method.input_type.name}" in details
    assert open_server.service.store.last_position() == 0


def test_limits_name_themselves(open_server: Running) -> None:
    with grpc.insecure_channel(open_server.address) as channel:
        stub = pb_grpc.RunHistoryStub(channel)
        session = stub.Init(pb.InitRequest(entity="e", project="p", run_id="r"))
        before = open_server.service.store.last_position()
        nested: dict[str, Any] = {"v": 1}
        for _ in range(5):
            nested = {"n": nested}
        code, details = status_of(
            lambda: stub.Log(pb.LogBatch(path=session.path, calls_json=calls_json((nested,))))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "at most 4 levels" in details
        deep = b"[" * 100_000 + b"]" * 100_000
        code, details = status_of(lambda: stub.Log(pb.LogBatch(path=session.path, calls_json=deep)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "nests too deep" in details
        eleven = calls_json(tuple({"x": i} for i in range(11)))
        code, details = status_of(
            lambda: stub.Log(pb.LogBatch(path=session.path, calls_json=eleven))
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_calls_per_batch" in details
        code, details = status_of(
            lambda: stub.GetRun(pb.RunRequest(path=session.path, min_position=10**12))
        )
        assert code == grpc.StatusCode.OUT_OF_RANGE and "beyond the last event" in details
        assert open_server.service.store.last_position() == before

        # One open follow stream is the limit here: a second is refused, not queued.
        follow = stub.ReadEvents(pb.EventsRequest(follow=True))
        next(follow)
        code, details = status_of(lambda: list(stub.ReadEvents(pb.EventsRequest(follow=True))))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_open_streams" in details
        follow.cancel()


HOSTILE_NAMES = [
    "a'b",
    'a"b',
    "x; DROP TABLE rh_runs; --",
    "../etc",
    "a/b",
    "a\\b",
    "a\x00b",
    "a\nb",
    "ключ",
    "🙂",
    " ",
    "a" * 65,
    "%2e%2e",
    "$(id)",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_refused_with_the_rule(open_server: Running, name: str) -> None:
    with grpc.insecure_channel(open_server.address) as channel:
        stub = pb_grpc.RunHistoryStub(channel)
        for request in (
            pb.InitRequest(entity=name, project="p"),
            pb.InitRequest(entity="e", project=name),
            pb.InitRequest(entity="e", project="p", run_id=name),
        ):
            code, details = status_of(lambda request=request: stub.Init(request))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, details)
            assert "letters, digits" in details
        code, details = status_of(lambda: stub.GetRun(pb.RunRequest(path=f"e/p/{name}")))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, details)
    assert open_server.service.store.last_position() == 0


def test_hostile_values_and_keys_are_stored_literally(open_server: Running) -> None:
    data = {
        "x'; DROP TABLE rh_rows; --": "'; DELETE FROM rh_runs; --",
        "ключ/🙂": "line\nbreak\ttab\x00nul",
        "$.a[0]": "{{template}}",
        "path": "../../etc/passwd",
    }
    run = runhistory.init(entity="e", project="p", address=open_server.address)
    run.log(data)
    run.config.update({'quote"key': "<script>alert(1)</script>"})
    run.finish()
    with runhistory.Api(address=open_server.address) as api:
        read = api.run(run.path)
        row = read.history()[0]
        assert {k: row[k] for k in data} == data
        assert read.history(keys=["x'; DROP TABLE rh_rows; --"])[0]["x'; DROP TABLE rh_rows; --"]
        assert read.config['quote"key'] == "<script>alert(1)</script>"
        assert len(api.runs("e/p")) == 1
