"""Concurrent SDK writers: aggregate throughput and errors, beside one writer in the same run.

Each writer is a process of its own (a training job) that logs rows of 10 keys to its own
run through `runhistory.init / log / finish`; all start logging at the same moment. For
1, 4 and 16 writers, on a fresh database each time:
- SQLite: one `runhistory serve` (the default deployment: it applies the read models
  itself);
- PostgreSQL: two `runhistory serve --no-projections` (writers split between them) and one
  `runhistory project` worker, in a schema of its own in the database `test` on
  127.0.0.1:5432 (dropped at the end).
Then 1 and 2 processes each create small runs (init, one row, finish) one after another.
It prints points per second from the moment the writers start until the last `finish()`
returned (every row acknowledged, so durable), the ratio to the single writer's figure of
the same backend measured in this run, and the errors the writers got (a writer that
fails counts once, with its first message; the SDK retries UNAVAILABLE by itself). Every
run's rows are read back and counted.

    python bench/concurrency.py            # 20,000 rows x 10 keys per writer
    python bench/concurrency.py --quick    # SQLite: 2,000 rows, 1 and 4 writers (CI smoke)
    python bench/concurrency.py --backends sqlite --writers 1 2 4
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from postgres import KEYS, Processes, free_port, say, schema_url, schemas

import runhistory
from runhistory.domain.errors import NotFound
from runhistory.domain.identity import RunPath
from runhistory.service.runs import RunService
from runhistory.service.settings import Settings

TIMEOUT = 1800.0  # seconds any one measurement may take


READY = "ready"


def writer(address: str, run_id: str, rows: int, start: Any, results: Any) -> None:
    """One training job: init, wait for the others, log `rows` rows, finish. Reports
    READY or a refused init, then (run_id, began, finished, error)."""
    try:
        data = [{f"k{k}": float(step * KEYS + k) for k in range(KEYS)} for step in range(rows)]
        try:
            run = runhistory.init(entity="bench", project="concurrency", id=run_id, address=address)
        except Exception as failed:  # counted as this writer's error
            results.put((run_id, 0.0, 0.0, f"init: {type(failed).__name__}: {failed}"))
            return
        results.put((run_id, READY))
        start.wait()
        began = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes on Linux
        try:
            for row in data:
                run.log(row)
            run.finish()
            error = None
        except Exception as failed:
            error = f"{type(failed).__name__}: {failed}"
        results.put((run_id, began, time.monotonic(), error))
    except BaseException:
        results.put((run_id, 0.0, 0.0, traceback.format_exc()))


@dataclass
class Result:
    backend: str
    writers: int
    points: int  # acknowledged: stored in the end
    seconds: float  # from the start signal until the last finish() returned
    errors: list[str]
    applied: float = 0.0  # from the start signal until the read models held every row

    @property
    def rate(self) -> float:
        return self.points / self.seconds


def run_clients(
    processes: Processes, target: Any, arguments: list[tuple[Any, ...]]
) -> tuple[float, list[tuple[Any, ...]]]:
    """Start a process per argument tuple, each `target(*arguments, start, results)`; once
    every one has reported READY (or failed before it), signal the start. Returns when the
    start was signalled and each process's final report (its last item is an error)."""
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    clients = [
        context.Process(target=target, args=(*a, start, results), name=str(a[1]), daemon=True)
        for a in arguments
    ]
    processes.clients = clients
    for client in clients:
        client.start()
    messages: list[tuple[Any, ...]] = []
    ready = 0
    deadline = time.monotonic() + TIMEOUT
    while ready + len(messages) < len(clients):
        message = _next(results, processes, deadline)
        if message[-1] == READY:
            ready += 1
        else:
            messages.append(message)
    start.set()
    began = time.monotonic()
    while len(messages) < len(clients):
        messages.append(_next(results, processes, deadline))
        sys.stderr.write(f"\r  {len(messages)}/{len(clients)} finished")
    sys.stderr.write("\n")
    for client in clients:
        client.join(timeout=30)
    processes.clients = []
    return began, messages


def measure(
    backend: str, processes: Processes, database: str, addresses: list[str], writers: int, rows: int
) -> Result:
    arguments = [(addresses[i % len(addresses)], f"w{i}", rows) for i in range(writers)]
    began, messages = run_clients(processes, writer, arguments)
    errors = [f"{run_id}: {error}" for run_id, _, _, error in messages if error]
    finished = max(m[2] for m in messages)
    deadline = time.monotonic() + TIMEOUT
    with RunService(Settings(db=database), projections=False) as monitor:
        last = monitor.store.last_position()
        while monitor.runner.position() < last:
            processes.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the read models did not catch up within {TIMEOUT:.0f} s")
            time.sleep(0.2)
        applied = time.monotonic() - began
        # The points acknowledged: a writer that failed had part of its rows stored.
        stored = sum(_stored_rows(monitor, f"w{i}") for i in range(writers))
    return Result(backend, writers, stored * KEYS, max(finished - began, 1e-6), errors, applied)


def creator(address: str, prefix: str, runs: int, start: Any, results: Any) -> None:
    """Creates `runs` small runs one after another: init, one row, finish. Reports READY,
    then (prefix, began, ended, failures, first error)."""
    results.put((prefix, READY))
    start.wait()
    began, failures, first = time.monotonic(), 0, None
    for i in range(runs):
        try:
            run = runhistory.init(
                entity="bench", project="small", id=f"{prefix}-{i}", address=address
            )
            run.log({"x": 1.0})
            run.finish()
        except Exception as failed:
            failures += 1
            first = first or f"{type(failed).__name__}: {failed}"
    results.put((prefix, began, time.monotonic(), failures, first))


@dataclass
class SmallRuns:
    backend: str
    processes: int
    created: int
    seconds: float
    failed: int
    error: str | None

    @property
    def rate(self) -> float:
        return self.created / self.seconds


def measure_small_runs(
    backend: str, processes: Processes, addresses: list[str], count: int, runs: int
) -> SmallRuns:
    arguments = [(addresses[i % len(addresses)], f"c{i}", runs) for i in range(count)]
    began, messages = run_clients(processes, creator, arguments)
    failed = sum(m[3] for m in messages)
    error = next((m[4] for m in messages if m[4]), None)
    seconds = max(m[2] for m in messages) - began
    return SmallRuns(backend, count, count * runs - failed, seconds, failed, error)


def _stored_rows(monitor: RunService, run_id: str) -> int:
    try:
        return monitor.line_count(RunPath("bench", "concurrency", run_id))
    except NotFound:  # its init was refused
        return 0


def _next(results: Any, processes: Processes, deadline: float) -> Any:
    while True:
        try:
            return results.get(timeout=1)
        except queue.Empty:
            processes.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the writers did not finish within {TIMEOUT:.0f} s") from None


def read_back(address: str, writers: int, rows: int) -> None:
    """Every run holds its rows, once each."""
    with runhistory.Api(address=address) as api:
        for i in range(writers):
            steps = [
                r["_step"]
                for r in list(api.run(f"bench/concurrency/w{i}").scan_history(keys=["k9"]))
            ]
            assert steps == list(range(rows)), f"w{i}: {len(steps)} rows read, {rows} logged"


@contextmanager
def sqlite_servers(
    processes: Processes, folder: Path, name: str
) -> Iterator[tuple[str, list[str]]]:
    """The database and the addresses of its servers."""
    address = f"127.0.0.1:{free_port()}"
    database = str(folder / f"{name}.db")
    server = processes.cli(name, "serve", "--no-auth", "--db", database, "--address", address)
    _wait_healthy(processes, address, name)
    try:
        yield database, [address]
    finally:
        processes.stop(server)


@contextmanager
def postgres_servers(processes: Processes, name: str) -> Iterator[tuple[str, list[str]]]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with schemas(schema):
        url = schema_url(schema)
        started = [processes.serve(url, f"{name}-server{i}") for i in range(2)]
        worker = processes.worker(url, f"{name}-worker")
        try:
            yield url, [address for _, address in started]
        finally:
            for process, _ in started:
                processes.stop(process)
            processes.stop(worker)


def _wait_healthy(processes: Processes, address: str, name: str) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            processes.check()
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.1)
    raise RuntimeError(f"{name} did not become healthy")


def servers_of(backend: str, processes: Processes, folder: Path, name: str) -> Any:
    if backend == "sqlite":
        return sqlite_servers(processes, folder, name)
    return postgres_servers(processes, name)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="SQLite, 2,000 rows, 1 and 4 writers, 20 small runs"
    )
    parser.add_argument("--rows", type=int, help="rows per writer (default 20,000)")
    parser.add_argument("--writers", type=int, nargs="+", help="writer counts (default 1 4 16)")
    parser.add_argument("--small-runs", type=int, help="small runs per process (default 100)")
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=("sqlite", "postgres"),
        help="default: both; with --quick, sqlite",
    )
    args = parser.parse_args()
    backends = args.backends or (["sqlite"] if args.quick else ["sqlite", "postgres"])
    rows = args.rows or (2_000 if args.quick else 20_000)
    counts = args.writers or ([1, 4] if args.quick else [1, 4, 16])
    small = args.small_runs or (20 if args.quick else 100)
    if 1 not in counts:
        counts = [1, *counts]  # the baseline
    load_before = os.getloadavg()
    started = time.monotonic()
    results: list[Result] = []
    creations: list[SmallRuns] = []
    with tempfile.TemporaryDirectory() as tmp:
        processes = Processes(Path(tmp))
        try:
            for backend in backends:
                for writers in counts:
                    name = f"{backend}-{writers}"
                    say(f"{backend}: {writers} writer(s) x {rows:,} rows x {KEYS} keys")
                    with servers_of(backend, processes, Path(tmp), name) as (database, addresses):
                        result = measure(backend, processes, database, addresses, writers, rows)
                        if not result.errors:
                            read_back(addresses[-1], writers, rows)
                    say(
                        f"{result.rate:,.0f} points/s acknowledged, {len(result.errors)} "
                        f"error(s); read models complete after {result.applied:.1f} s"
                    )
                    results.append(result)
                for count in (1, 2):
                    name = f"{backend}-small-{count}"
                    say(f"{backend}: {count} process(es) x {small} small runs")
                    with servers_of(backend, processes, Path(tmp), name) as (_, addresses):
                        creation = measure_small_runs(backend, processes, addresses, count, small)
                    say(f"{creation.rate:.1f} runs/s, {creation.failed} failed")
                    creations.append(creation)
        finally:
            processes.kill_all()
    report(results, creations, rows, load_before, time.monotonic() - started)
    return 1 if any(r.errors for r in results) or any(c.failed for c in creations) else 0


def report(
    results: list[Result],
    creations: list[SmallRuns],
    rows: int,
    load_before: tuple[float, ...],
    took: float,
) -> None:
    print(
        f"\nconcurrent SDK writers, each {rows:,} rows x {KEYS} keys to its own run, {took:.0f} s"
    )
    header = f"{'backend':<10}{'writers':>8}{'points':>12}{'seconds':>9}{'points/s':>12}"
    print(f"{header}{'vs 1 writer':>13}{'errors':>8}{'applied at':>12}")
    single = {r.backend: r.rate for r in results if r.writers == 1}
    for r in results:
        ratio = f"{r.rate / single[r.backend]:.2f}x" if r.backend in single else "-"
        print(
            f"{r.backend:<10}{r.writers:>8}{r.points:>12,}{r.seconds:>9.2f}{r.rate:>12,.0f}"
            f"{ratio:>13}{len(r.errors):>8}{r.applied:>11.1f}s"
        )
    for r in results:
        for error in r.errors[:3]:
            print(f"- {r.backend}, {r.writers} writers: {error}")
    print("\nsmall runs (init, one row, finish), one after another in each process")
    print(f"{'backend':<10}{'processes':>10}{'runs':>7}{'runs/s':>9}{'vs 1':>8}{'failed':>8}")
    alone = {c.backend: c.rate for c in creations if c.processes == 1}
    for c in creations:
        ratio = f"{c.rate / alone[c.backend]:.2f}x" if alone.get(c.backend) else "-"
        print(
            f"{c.backend:<10}{c.processes:>10}{c.created + c.failed:>7}{c.rate:>9.1f}"
            f"{ratio:>8}{c.failed:>8}"
        )
        if c.error:
            print(f"- {c.backend}, {c.processes} processes: {c.error}")
    print(
        "- points/s: points acknowledged (stored), from the start signal until the last "
        "finish() returned; applied at: until the read models held every row; every run of a "
        "measurement without errors read back whole"
    )
    print("- sqlite: one `runhistory serve`; postgres: two servers (--no-projections), one worker")
    before, after = (" ".join(f"{x:.2f}" for x in load) for load in (load_before, os.getloadavg()))
    print(f"- machine: {os.cpu_count()} cores, load average {before} at the start, {after} at end")


if __name__ == "__main__":
    raise SystemExit(main())
