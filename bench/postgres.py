"""runhistory on PostgreSQL, beside raw PostgreSQL inserts measured in the same run.

Creates a schema of its own (`bench_<random>`) in the database `test` on 127.0.0.1:5432
(user postgres, trust auth), drops it at the end even on failure, and prints:
1. raw PostgreSQL baselines in points/s: psycopg `executemany` into a table (run, key,
   step, value) with a primary key, `COPY` into the same, and one jsonb (and one text) row
   per 1,000 points; each committed every 10,000 points, like the SDK's batches of up to
   1,000 rows of 10 keys;
2. ingest through the SDK on one server process (`serve --no-projections`) plus one
   projection worker, clients as threads and as processes (whether the GIL limits
   threads), then on two server processes (clients split between them): points/s until
   every `finish()` returned (acknowledged = durable) and until the worker applied them;
3. the projection worker's catch-up rate on a backlog ingested with the worker stopped;
4. saving and reading `Run` events through `eventsourcing.postgres` vs
   `eventsourcing_sqlalchemy` (the module runhistory uses for PostgreSQL URLs).

    python bench/postgres.py            # 4 clients x 25k steps x 10 keys = 1M points
    python bench/postgres.py --quick    # 2 clients x 2k steps

`eventsourcing.postgres` needs `psycopg_pool` (the `eventsourcing[postgres]` extra); without
it that comparison is skipped with a note. Every process started here is killed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

import runhistory
from runhistory.domain.identity import RunPath
from runhistory.domain.run import Run
from runhistory.domain.values import LogCall
from runhistory.service.application import RunEvents
from runhistory.service.runs import RunService
from runhistory.service.settings import Settings

KEYS = 10
HOST, PORT, DBNAME, USER = "127.0.0.1", 5432, "test", "postgres"
BASE_URL = f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{DBNAME}"
COMMIT_EVERY = 10_000  # points per transaction in the raw baselines
TIMEOUT = 1800.0  # seconds any one phase may take


def say(message: str) -> None:
    sys.stderr.write(f"  {message}\n")
    sys.stderr.flush()


def schema_url(schema: str) -> str:
    return f"{BASE_URL}?options=-csearch_path%3D{schema}"


def connect(schema: str | None = None) -> psycopg.Connection:
    options = f"-csearch_path={schema}" if schema else ""
    return psycopg.connect(
        host=HOST, port=PORT, dbname=DBNAME, user=USER, options=options, autocommit=False
    )


@contextlib.contextmanager
def schemas(*names: str) -> Iterator[None]:
    with connect() as conn:
        for name in names:
            conn.execute(f'CREATE SCHEMA "{name}"')
        conn.commit()
    try:
        yield
    finally:
        with connect() as conn:
            for name in names:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            conn.commit()
        say(f"dropped schema(s) {', '.join(names)}")


def per_second(count: float, seconds: float) -> str:
    return f"{count / seconds:>12,.0f}" if seconds > 0 else "         inf"


# ---- 1. raw PostgreSQL ----------------------------------------------------------------


def raw_baselines(schema: str, points: int) -> dict[str, float]:
    """Seconds to insert `points` points each way, committing every COMMIT_EVERY points."""
    steps = points // KEYS
    tuples = [
        ("bench/raw/r0", f"k{k}", s, float(s * KEYS + k)) for s in range(steps) for k in range(KEYS)
    ]
    rows = [{f"k{k}": float(s * KEYS + k) for k in range(KEYS)} for s in range(steps)]
    chunks = [tuples[i : i + COMMIT_EVERY] for i in range(0, len(tuples), COMMIT_EVERY)]
    per_blob = 1000 // KEYS  # steps per jsonb/text row: 1,000 points
    seconds: dict[str, float] = {}
    with connect(schema) as conn:
        for table in ("raw_many", "raw_copy"):
            conn.execute(
                f"CREATE TABLE {table} (run text, key text, step bigint, value double precision,"
                " PRIMARY KEY (run, key, step))"
            )
        for table, kind in (("raw_jsonb", "jsonb"), ("raw_text", "text")):
            conn.execute(
                f"CREATE TABLE {table} (run text, first_step bigint, body {kind},"
                " PRIMARY KEY (run, first_step))"
            )
        conn.commit()

        say(f"raw executemany: {points:,} points")
        started = time.perf_counter()
        with conn.cursor() as cur:
            for chunk in chunks:
                cur.executemany(
                    "INSERT INTO raw_many (run, key, step, value) VALUES (%s, %s, %s, %s)", chunk
                )
                conn.commit()
        seconds["executemany"] = time.perf_counter() - started

        say(f"raw COPY: {points:,} points")
        started = time.perf_counter()
        with conn.cursor() as cur:
            for chunk in chunks:
                with cur.copy("COPY raw_copy (run, key, step, value) FROM STDIN") as copy:
                    for row in chunk:
                        copy.write_row(row)
                conn.commit()
        seconds["copy"] = time.perf_counter() - started

        blobs_per_commit = COMMIT_EVERY // (per_blob * KEYS)
        for table, cast in (("raw_jsonb", "::jsonb"), ("raw_text", "")):
            say(f"raw {table.removeprefix('raw_')} rows of 1,000 points: {points:,} points")
            started = time.perf_counter()  # the JSON encoding is part of the cost
            with conn.cursor() as cur:
                for first in range(0, steps, per_blob * blobs_per_commit):
                    batch = [
                        (
                            "bench/raw/r0",
                            s,
                            json.dumps([[t, rows[t]] for t in range(s, min(s + per_blob, steps))]),
                        )
                        for s in range(
                            first, min(first + per_blob * blobs_per_commit, steps), per_blob
                        )
                    ]
                    cur.executemany(
                        f"INSERT INTO {table} (run, first_step, body) VALUES (%s, %s, %s{cast})",
                        batch,
                    )
                    conn.commit()
            seconds[table.removeprefix("raw_")] = time.perf_counter() - started
        for table in ("raw_many", "raw_copy"):
            count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            assert count is not None and count[0] == points, f"{table}: {count} of {points}"
    return seconds


# ---- processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Processes:
    """Every process this benchmark starts, so that all of them are killed at the end."""

    logs: Path
    started: list[subprocess.Popen[Any]] = field(default_factory=list)
    clients: list[Any] = field(default_factory=list)  # multiprocessing.Process

    def cli(self, name: str, *args: str, stdout: Any = None) -> subprocess.Popen[Any]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            [sys.executable, "-m", "runhistory.service.cli", *args],
            stdout=stdout if stdout is not None else log,
            stderr=log,
            text=True,
            env=env,
        )
        process.name = name  # type: ignore[attr-defined]
        self.started.append(process)
        return process

    def serve(self, url: str, name: str) -> tuple[subprocess.Popen[Any], str]:
        port = free_port()
        address = f"127.0.0.1:{port}"
        process = self.cli(
            name, "serve", "--no-auth", "--db", url, "--address", address, "--no-projections"
        )
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                self.check()
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return process, address
                except grpc.RpcError:
                    time.sleep(0.1)
        raise RuntimeError(f"{name} did not become healthy; see {self.logs / name}.log")

    def worker(self, url: str, name: str) -> subprocess.Popen[Any]:
        """A projection worker, returned once it has opened the database."""
        process = self.cli(name, "project", "--db", url, stdout=subprocess.PIPE)
        assert process.stdout is not None
        line = process.stdout.readline()
        if "from position" not in line:
            self.check()
            raise RuntimeError(f"{name} did not start: {line!r}; see {self.logs / name}.log")
        return process

    def check(self) -> None:
        """Raise if a process this benchmark still needs has died."""
        for process in self.started:
            if process.poll() is not None and not getattr(process, "stopped", False):
                log = (self.logs / f"{process.name}.log").read_text()[-2000:]  # type: ignore[attr-defined]
                raise RuntimeError(
                    f"{process.name} exited with {process.returncode}:\n{log}"  # type: ignore[attr-defined]
                )
        for client in self.clients:
            if client.exitcode not in (None, 0):
                raise RuntimeError(f"client process {client.name} exited with {client.exitcode}")

    def stop(self, process: subprocess.Popen[Any]) -> None:
        process.stopped = True  # type: ignore[attr-defined]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill_all(self) -> None:
        for client in self.clients:
            if client.is_alive():
                client.kill()
            client.join(timeout=10)
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


# ---- 2. ingest through the SDK --------------------------------------------------------


def client(address: str, project: str, run_id: str, steps: int, start: Any, results: Any) -> None:
    """One training job: init, (wait for the others), log `steps` rows, finish."""
    try:
        run = runhistory.init(entity="bench", project=project, id=run_id, address=address)
        rows = [{f"k{k}": float(step * KEYS + k) for k in range(KEYS)} for step in range(steps)]
        results.put((run_id, 0.0, 0.0, 0.0, "ready"))
        start.wait()
        began = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes on Linux
        for row in rows:
            run.log(row)
        logged = time.monotonic()
        run.finish()
        results.put((run_id, began, logged, time.monotonic(), None))
    except BaseException:
        results.put((run_id, 0.0, 0.0, 0.0, traceback.format_exc()))


@dataclass
class Ingest:
    points: int
    events: int
    logged: float  # seconds until the last client's loop of log() calls ended
    acknowledged: float  # seconds until the last finish() returned
    projected: float | None = None  # seconds until the worker applied every event


def progress_line(monitor: RunService, since: int, note: str) -> None:
    last = monitor.store.last_position()
    sys.stderr.write(
        f"\r  {note}: log at position {last:,} (+{last - since:,}), "
        f"read models at {monitor.runner.position():,}   "
    )
    sys.stderr.flush()


def ingest(
    monitor: RunService,
    processes: Processes,
    addresses: list[str],
    project: str,
    clients: int,
    steps: int,
    mode: str,
    worker: bool,
) -> Ingest:
    """`clients` runs logged at once through the SDK, as threads or processes."""
    say(
        f"ingest {project}: {clients} client {mode} x {steps:,} steps x {KEYS} keys on "
        f"{len(addresses)} server(s){' + a worker' if worker else ', worker stopped'}"
    )
    before = monitor.store.last_position()
    args = [(addresses[i % len(addresses)], project, f"r{i}", steps) for i in range(clients)]
    results: Any
    if mode == "threads":
        start: Any = threading.Event()
        results = queue.Queue()
        workers: list[Any] = [
            threading.Thread(target=client, args=(*a, start, results), daemon=True) for a in args
        ]
    else:
        context = multiprocessing.get_context("spawn")
        start = context.Event()
        results = context.Queue()
        workers = [
            context.Process(target=client, args=(*a, start, results), name=a[2], daemon=True)
            for a in args
        ]
        processes.clients = workers
    for w in workers:
        w.start()
    ready = 0
    deadline = time.monotonic() + TIMEOUT
    while ready < clients:  # every client has called init() and built its rows
        try:
            message = results.get(timeout=1)
        except queue.Empty:
            processes.check()
            if time.monotonic() > deadline:
                raise RuntimeError("the clients did not start") from None
            continue
        if message[4] != "ready":
            raise RuntimeError(f"client {message[0]} failed before logging:\n{message[4]}")
        ready += 1
    start.set()
    began = time.monotonic()
    done: list[tuple[str, float, float, float, str | None]] = []
    deadline = began + TIMEOUT
    shown = False
    while len(done) < clients:
        try:
            done.append(results.get(timeout=1))
            if done[-1][4]:
                raise RuntimeError(f"client {done[-1][0]} failed:\n{done[-1][4]}")
        except queue.Empty:
            processes.check()
            progress_line(monitor, before, f"{len(done)}/{clients} finished")
            shown = True
            if time.monotonic() > deadline:
                raise RuntimeError(f"ingest did not finish within {TIMEOUT:.0f} s") from None
    if shown:
        sys.stderr.write("\n")
    for w in workers:
        w.join(timeout=30)
    processes.clients = []
    after = monitor.store.last_position()
    result = Ingest(
        points=clients * steps * KEYS,
        events=after - before,
        logged=max(d[2] for d in done) - began,
        acknowledged=max(d[3] for d in done) - began,
    )
    if worker:
        wait_until_projected(monitor, processes, after, "worker")
        result.projected = time.monotonic() - began
    say(f"acknowledged {result.points / result.acknowledged:,.0f} points/s")
    return result


def wait_until_projected(
    monitor: RunService, processes: Processes, target: int, note: str, poll: float = 0.5
) -> None:
    deadline = time.monotonic() + TIMEOUT
    shown = time.monotonic()
    while monitor.runner.position() < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not reach position {target} in {TIMEOUT:.0f} s")
        if time.monotonic() - shown > 1:
            processes.check()
            sys.stderr.write(
                f"\r  {note}: read models at {monitor.runner._applied:,} of {target:,}   "
            )
            shown = time.monotonic()
        time.sleep(poll)
    sys.stderr.write(f"\r  {note}: read models at {target:,} of {target:,}   \n")


def check_read_back(address: str, project: str, clients: int, steps: int) -> None:
    api = runhistory.Api(address=address)
    for i in (0, clients - 1):
        rows = list(api.run(f"bench/{project}/r{i}").scan_history(keys=["k9"]))
        assert len(rows) == steps, f"bench/{project}/r{i}: {len(rows)} rows read, {steps} logged"
        assert rows[-1]["k9"] == float((steps - 1) * KEYS + 9)


# ---- 4. the event store's persistence module ------------------------------------------


def event_store_modules(schema: str, batches: int, rows: int) -> dict[str, dict[str, float]]:
    """Seconds to save `batches` RowsLogged events of `rows` 10-key rows, and to read them
    back in pages of 50 (as the projection worker does), through each module."""
    envs: dict[str, dict[str, str]] = {
        "eventsourcing_sqlalchemy": {
            "PERSISTENCE_MODULE": "eventsourcing_sqlalchemy",
            "SQLALCHEMY_URL": schema_url(f"{schema}_sa"),
        },
        "eventsourcing.postgres": {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": DBNAME,
            "POSTGRES_HOST": HOST,
            "POSTGRES_PORT": str(PORT),
            "POSTGRES_USER": USER,
            "POSTGRES_PASSWORD": "",
            "POSTGRES_SCHEMA": f"{schema}_pg",
        },
    }
    try:
        import psycopg_pool  # noqa: F401  (eventsourcing.postgres imports it)
    except ImportError:
        del envs["eventsourcing.postgres"]
    calls = [
        [
            LogCall({f"k{k}": float((b * rows + r) * KEYS + k) for k in range(KEYS)}, 0.0)
            for r in range(rows)
        ]
        for b in range(batches)
    ]
    figures: dict[str, dict[str, float]] = {}
    for round_ in (1, 2):  # two alternating rounds: the second shows the noise
        for module, env in envs.items():
            say(f"event store round {round_}: {module}, {batches} events of {rows} rows")
            app = RunEvents(env=env)
            try:
                path = RunPath("bench", "es", f"round{round_}")
                run = Run.start(path, "w", time.time())
                app.save(run)
                first = app.last_position()
                saving = 0.0
                for b, batch in enumerate(calls):
                    run.log(batch, writer="w", seq=b + 1)
                    started = time.perf_counter()
                    app.save(run)
                    saving += time.perf_counter() - started
                started = time.perf_counter()
                after, read = first, 0
                while page := app.read(after=after, limit=50):
                    read += len(page)
                    after = page[-1][0]
                reading = time.perf_counter() - started
                assert read == batches, f"{module}: read {read} events of {batches}"
            finally:
                app.close()
            figures[f"{module} #{round_}"] = {"save": saving, "read": reading}
    return figures


# ---- the benchmark --------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 clients x 2k steps; 20k raw points; 20 events"
    )
    args = parser.parse_args()
    raw_points = 20_000 if args.quick else 200_000
    clients, steps = (2, 2_000) if args.quick else (4, 25_000)
    batches, batch_rows = (20, 1000) if args.quick else (200, 1000)

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    url = schema_url(schema)
    say(f"schema {schema}; {os.cpu_count()} CPUs")
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory() as logs,
        schemas(schema, f"{schema}_sa", f"{schema}_pg"),
    ):
        processes = Processes(Path(logs))
        try:
            raw = raw_baselines(schema, raw_points)
            runs = run_ingests(url, processes, clients, steps)
            stores = event_store_modules(schema, batches, batch_rows)
        finally:
            processes.kill_all()
    print(
        f"\nmachine: {os.cpu_count()} CPUs, 1-minute load average {load_before:.1f} at the start "
        f"and {os.getloadavg()[0]:.1f} at the end (other work on the machine skews every figure)"
    )
    report(raw_points, raw, clients, steps, runs, batches, batch_rows, stores)
    return 0


def run_ingests(url: str, processes: Processes, clients: int, steps: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    # The monitor creates the tables first, so that servers never race to create them.
    with RunService(Settings(db=url), projections=False) as monitor:
        worker = processes.worker(url, "worker")
        server, address = processes.serve(url, "server1")
        by_mode = {}
        for mode in ("threads", "processes"):
            project = f"one-{mode}"
            by_mode[mode] = ingest(
                monitor, processes, [address], project, clients, steps, mode, worker=True
            )
            check_read_back(address, project, clients, steps)
        mode = min(by_mode, key=lambda m: by_mode[m].acknowledged)
        figures["one"] = by_mode
        figures["mode"] = mode

        second, address2 = processes.serve(url, "server2")
        figures["two"] = ingest(
            monitor, processes, [address, address2], "two", clients, steps, mode, worker=True
        )
        check_read_back(address2, "two", clients, steps)
        processes.stop(second)

        # 3. the worker's catch-up on a backlog
        processes.stop(worker)
        backlog = ingest(
            monitor, processes, [address], "backlog", clients, steps, mode, worker=False
        )
        figures["no-worker"] = backlog
        processes.stop(server)
        start, target = monitor.runner.position(), monitor.store.last_position()
        say(f"catch-up: worker starts on positions {start + 1:,}..{target:,}")
        launched = time.monotonic()
        worker = processes.worker(url, "worker-catch-up")
        ready = time.monotonic()
        wait_until_projected(monitor, processes, target, "catch-up", poll=0.02)
        caught_up = time.monotonic()
        processes.stop(worker)
        figures["catch-up"] = {
            "events": target - start,
            "points": backlog.points,
            "startup": ready - launched,
            "seconds": caught_up - ready,
        }
    return figures


def report(
    raw_points: int,
    raw: dict[str, float],
    clients: int,
    steps: int,
    runs: dict[str, Any],
    batches: int,
    batch_rows: int,
    stores: dict[str, dict[str, float]],
) -> None:
    best_raw = raw_points / raw["executemany"]
    print(f"\nraw PostgreSQL, {raw_points:,} points, a commit every {COMMIT_EVERY:,} points")
    labels = {
        "executemany": "executemany, a row per point (PK)",
        "copy": "COPY, a row per point (PK)",
        "jsonb": "jsonb, a row per 1,000 points",
        "text": "text, a row per 1,000 points",
    }
    for name, label in labels.items():
        rate = raw_points / raw[name]
        print(f"  {label:<38}{rate:>12,.0f} points/s  {rate / best_raw:5.2f}x executemany")

    points = clients * steps * KEYS
    print(
        f"\ningest through the SDK: {clients} clients x {steps:,} steps x {KEYS} keys = "
        f"{points:,} points, PostgreSQL, servers with --no-projections"
    )
    copy_rate = raw_points / raw["copy"]
    jsonb_rate = raw_points / raw["jsonb"]

    def line(label: str, result: Ingest) -> None:
        acked = result.points / result.acknowledged
        print(
            f"  {label:<38}{acked:>12,.0f} points/s acknowledged  "
            f"{acked / best_raw:5.2f}x executemany  {acked / jsonb_rate:5.2f}x jsonb  "
            f"{acked / copy_rate:5.2f}x COPY"
        )
        extra = f"    {result.events:,} events in the log"
        extra += f"; log() loops ended at {result.logged:.2f} s"
        extra += f", last finish() at {result.acknowledged:.2f} s"
        if result.projected is not None:
            extra += (
                f"; worker caught up at {result.projected:.2f} s "
                f"({result.points / result.projected:,.0f} points/s readable)"
            )
        print(extra)

    one = runs["one"]
    line("1 server + worker, client threads", one["threads"])
    line("1 server + worker, client processes", one["processes"])
    ratio = one["processes"].acknowledged / one["threads"].acknowledged
    print(
        f"  clients as {runs['mode']} below: processes took {ratio:.2f}x the time of threads "
        f"({'the GIL limits threads' if ratio < 0.95 else 'the GIL does not limit threads here'})"
    )
    line(f"2 servers + worker, client {runs['mode']}", runs["two"])
    scale = runs["one"][runs["mode"]].acknowledged / runs["two"].acknowledged
    print(f"  2 servers vs 1: {scale:.2f}x the points/s")
    line(f"1 server, worker stopped, {runs['mode']}", runs["no-worker"])

    catch = runs["catch-up"]
    print("\nprojection worker catch-up on the backlog (worker stopped during its ingest)")
    print(
        f"  {catch['events']:,} events, {catch['points']:,} points in {catch['seconds']:.2f} s "
        f"(+{catch['startup']:.2f} s process start): "
        f"{catch['points'] / catch['seconds']:,.0f} points/s, "
        f"{catch['events'] / catch['seconds']:,.0f} events/s"
    )

    print(
        f"\nevent store, {batches} RowsLogged events of {batch_rows:,} rows x {KEYS} keys "
        "saved one per transaction through RunEvents, read back in pages of 50"
    )
    for name, fig in stores.items():
        save, read = fig["save"], fig["read"]
        print(
            f"  {name:<30} save {per_second(batches, save)} events/s "
            f"{per_second(batches * batch_rows * KEYS, save)} points/s;"
            f"  read {per_second(batches, read)} events/s"
        )
    if not any(name.startswith("eventsourcing.postgres") for name in stores):
        print(
            "  eventsourcing.postgres: skipped, it needs psycopg_pool "
            "(pip install 'eventsourcing[postgres]')"
        )


if __name__ == "__main__":
    raise SystemExit(main())
