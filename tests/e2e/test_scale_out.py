"""Several processes on one database: servers without projections, a projection worker,
concurrent writers, and SIGKILL of a server or a worker. Nothing acknowledged is lost or
applied twice, and the read models end equal to a rebuild."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from conftest import SHARED, postgres_schema_url
from grpc_health.v1 import health_pb2, health_pb2_grpc

import runhistory
from runhistory.protos import codec
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos import runhistory_pb2_grpc as pb_grpc
from runhistory.service.runs import RunService
from runhistory.service.settings import Settings

# Servers in other processes, or restarted, share the store.
pytestmark = pytest.mark.backends(*SHARED)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "runhistory.service.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def serve(database: str, port: int, *flags: str) -> subprocess.Popen[str]:
    process = cli("serve", "--no-auth", "--db", database, "--address", f"127.0.0.1:{port}", *flags)
    return healthy(process, port)


def healthy(process: subprocess.Popen[str], port: int) -> subprocess.Popen[str]:
    """The server process, once it answers as SERVING on `port`."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return process
            except grpc.RpcError:
                time.sleep(0.1)
    process.kill()
    raise AssertionError("the server did not become healthy")


def stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
    process.wait(timeout=30)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def own_rows_by_version(service: RunService, path) -> list[dict]:
    """Every row the run's writers logged, each once: per version, the rows after the step
    its predecessor was rewound to."""
    rows = []
    after = None
    for version in service.versions(path):
        rows += service.history(path, version=version.version, min_step=after)
        if version.rewound_to_step is not None:
            after = version.rewound_to_step + 1
    return rows


def test_two_servers_and_a_worker(database: str, processes) -> None:
    ports = [free_port(), free_port()]
    processes += [serve(database, port, "--no-projections") for port in ports]
    processes.append(cli("project", "--db", database, "--interval", "0.02"))
    stubs = [pb_grpc.RunHistoryStub(grpc.insecure_channel(f"127.0.0.1:{p}")) for p in ports]
    shared = [
        stubs[0].Init(pb.InitRequest(entity="e", project="p", run_id=f"s{i}")) for i in range(2)
    ]

    acknowledged: dict[tuple[str, int], list[int]] = {}
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        stub = stubs[k % 2]
        try:
            for i in range(40):
                path = shared[(k + i) % 2].path
                batch = pb.LogBatch(
                    path=path,
                    calls=[pb.LogCall(data=codec.to_values({f"c{k}": i}), timestamp=time.time())],
                )
                for _attempt in range(20):
                    try:
                        ack = stub.Log(batch, timeout=30)
                        break
                    except grpc.RpcError as error:
                        if error.code() != grpc.StatusCode.ABORTED:
                            raise
                else:
                    raise AssertionError("a batch was aborted 20 times")
                assert ack.rows == 1
                acknowledged.setdefault((path, k), []).append(i)
        except BaseException as error:
            errors.append(error)

    def brancher() -> None:
        try:
            time.sleep(0.2)
            for n in range(3):
                stub = stubs[n % 2]
                point = f"s{n % 2}?_step=3"
                stub.Init(
                    pb.InitRequest(
                        entity="e",
                        project="p",
                        branch=pb.Branch(mode=pb.Branch.REWIND, point=point),
                    )
                )
                stub.Init(
                    pb.InitRequest(
                        entity="e", project="p", branch=pb.Branch(mode=pb.Branch.FORK, point=point)
                    )
                )
                time.sleep(0.1)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    threads.append(threading.Thread(target=brancher))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors

    # A client reads its own writes through the other server: it waits for the worker.
    ack = stubs[0].Log(
        pb.LogBatch(path=shared[0].path, calls=[pb.LogCall(data=codec.to_values({"last": 1}))])
    )
    request = pb.HistoryRequest(path=shared[0].path, keys=["last"], min_position=ack.position)
    assert len(list(codec.rows_from_chunks(stubs[1].ReadHistory(request)))) == 1
    with RunService(Settings(db=database), projections=False) as service:
        live = service.checksums()  # waits for the worker to apply every event
        for session in shared:
            path = runhistory.domain.identity.RunPath.parse(session.path)
            rows = own_rows_by_version(service, path)
            for k in range(4):
                logged = [row[f"c{k}"] for row in rows if f"c{k}" in row]
                assert sorted(logged) == sorted(acknowledged.get((session.path, k), []))
                assert len(logged) == len(set(logged)), "a row was applied twice"
        assert len(service.runs("e", "p")) == 2 + 3
    stop(processes[2])  # the worker, before the rebuild replays in this process
    with RunService(Settings(db=database)) as service:
        service.rebuild()
        assert service.checksums() == live


def test_sigkill_of_a_server_loses_no_acknowledged_row(database: str, processes) -> None:
    port = free_port()
    processes.append(serve(database, port))
    os.environ["RUNHISTORY_RETRY_SECONDS"] = "60"
    run = runhistory.init(entity="e", project="kill", id="k", address=f"127.0.0.1:{port}")
    for i in range(3000):
        run.log({"i": i})
        if i == 1500:
            run.flush(timeout=30)  # some batches are acknowledged before the kill
            processes[0].kill()
            processes[0].wait()
            processes.append(serve(database, port))
    run.finish()
    rows = list(runhistory.Api(address=f"127.0.0.1:{port}").run("e/kill/k").scan_history())
    assert [row["_step"] for row in rows] == list(range(3000))
    assert [row["i"] for row in rows] == list(range(3000))


def test_sigkill_of_a_worker_resumes_equal_to_a_rebuild(database: str, processes) -> None:
    with RunService(Settings(db=database), projections=False) as service:
        for r in range(4):
            session = service.init("e", "w", f"r{r}")
            for b in range(250):  # many small events: a long backlog of transactions
                calls = [runhistory.domain.run.LogCall({"x": b * 10 + i}, 0.0) for i in range(8)]
                service.log(session.path, calls, writer=session.writer)
            service.init("e", "w", resume_from=f"r{r}?_step=100")
            service.init("e", "w", f"f{r}", fork_from=f"r{r}?_step=50")
        total = service.store.last_position()
    with RunService(Settings(db=database), projections=False) as service:
        worker = cli("project", "--db", database, "--page-size", "1")
        processes.append(worker)
        assert worker.stdout is not None
        assert re.search(r"from position 0", worker.stdout.readline())
        while service.runner.position() < 5:
            time.sleep(0.005)
        worker.kill()  # SIGKILL, somewhere in the middle of a page
        worker.wait()
        reached = service.runner.position()
        assert 0 < reached < total, f"killed at {reached} of {total}: make the backlog longer"
        processes.append(cli("project", "--db", database))
        live = service.checksums()
    stop(processes[-1])
    with RunService(Settings(db=database)) as service:
        service.rebuild()
        assert service.checksums() == live


def test_a_rewind_on_one_server_fences_a_writer_on_another(database: str, processes) -> None:
    ports = [free_port(), free_port()]
    processes += [serve(database, port) for port in ports]  # both apply projections
    a, b = (pb_grpc.RunHistoryStub(grpc.insecure_channel(f"127.0.0.1:{p}")) for p in ports)
    session = a.Init(pb.InitRequest(entity="e", project="p", run_id="fenced"))
    batch = pb.LogBatch(
        path=session.path,
        writer=session.writer,
        calls=[pb.LogCall(data=codec.to_values({"x": i})) for i in range(5)],
    )
    a.Log(batch)
    rewound = b.Init(
        pb.InitRequest(
            entity="e", project="p", branch=pb.Branch(mode=pb.Branch.REWIND, point="fenced?_step=1")
        )
    )
    with pytest.raises(grpc.RpcError) as refused:
        a.Log(batch)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "superseded by a rewind" in refused.value.details()
    # The client that rewound reads its write through the other server too.
    request = pb.HistoryRequest(path=session.path, min_position=rewound.position)
    rows = list(codec.rows_from_chunks(a.ReadHistory(request)))
    assert [row["_step"] for row in rows] == [0, 1]


@pytest.mark.backends("postgres")
def test_servers_and_a_worker_started_at_once_on_an_empty_database(processes) -> None:
    """Two servers and a projection worker, started at the same moment on a new schema, all
    come up: they make the tables one after another. Before, two of them racing to create
    a table failed one (UniqueViolation on pg_type_typname_nsp_index), about one start in
    two here; so four fresh schemas."""
    for _round in range(4):
        schemas = postgres_schema_url()
        database = next(schemas)
        try:
            ports = [free_port(), free_port()]
            started = [
                cli("serve", "--no-auth", "--no-projections", "--db", database, "--address", a)
                for a in (f"127.0.0.1:{port}" for port in ports)
            ]
            started.append(cli("project", "--db", database, "--interval", "0.02"))
            processes += started
            for process, port in zip(started, ports, strict=False):
                healthy(process, port)
            channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for port in ports]
            stubs = [pb_grpc.RunHistoryStub(channel) for channel in channels]
            session = stubs[0].Init(pb.InitRequest(entity="e", project="p", run_id="r"))
            ack = stubs[0].Log(
                pb.LogBatch(path=session.path, calls=[pb.LogCall(data=codec.to_values({"x": 1}))])
            )
            # Read through the other server: the worker applied the row.
            request = pb.HistoryRequest(path=session.path, keys=["x"], min_position=ack.position)
            assert len(list(codec.rows_from_chunks(stubs[1].ReadHistory(request)))) == 1
            for process in started:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
            for channel in channels:
                channel.close()
            for process in started:
                stop(process)
                assert process.returncode == 0, process.stderr.read() if process.stderr else ""
        finally:
            schemas.close()  # drops the schema
