"""Listing a project of many runs: the first page of every listing surface, at two sizes.

Fills a project with N runs (default 1,000 and 10,000; each with a name, tags, a short
`loss` history, a third of them finished) on an embedded SQLite server, then times the
first page (50 runs, the default) of each listing surface over loopback:

- gRPC `ListRuns`, and `Api().runs()`'s first page through the SDK;
- the `runhistory runs` command (a whole process: its start costs the same at any size, so
  the same command on an empty project is printed beside it as the baseline);
- the JSON API `/api/E/P/runs` (with each run's summary), with `sparkline=loss`, and the
  project page's `/sparklines` call for the runs of the page.

It prints each figure (median of the repeats) beside the target (under 200 ms) and the
ratio between the two sizes (the cost must not grow with the runs: target <= 1.5), then the
latency of writes (a run created through the service) while the JSON API's first page is
read over and over, against the same writes alone. Runs are created fast through the
service layer: a few hundred aggregates per event-store transaction.

    python bench/many_runs.py              # 1,000 and 10,000 runs
    python bench/many_runs.py --quick      # 200 and 2,000 runs, for a smoke run
    python bench/many_runs.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

import runhistory
from runhistory.domain.identity import RunPath
from runhistory.domain.run import Run
from runhistory.domain.values import LogCall
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos import runhistory_pb2_grpc as pb_grpc
from runhistory.service.bootstrap import Running, start
from runhistory.service.settings import Settings

ENTITY, PROJECT = "bench", "many"
SAVE_BATCH = 250  # runs per event-store transaction while filling the project
ROWS_PER_RUN = 20
TARGET_MS = 200.0
TARGET_RATIO = 1.5


def progress(text: str) -> None:
    sys.stderr.write(f"\r  {text}\033[K")
    sys.stderr.flush()


def fill(running: Running, count: int) -> None:
    """`count` runs with a name, tags and `ROWS_PER_RUN` rows of `loss`; every third is
    finished. Saved a batch of aggregates per transaction, then projected."""
    service = running.service
    started = time.perf_counter()
    for first in range(0, count, SAVE_BATCH):
        batch = []
        for i in range(first, min(first + SAVE_BATCH, count)):
            writer = f"w{i}"
            run = Run.start(
                RunPath(ENTITY, PROJECT, f"run{i:05d}"),
                writer,
                time.time(),
                name=f"trial-{i % 97}",
                tags=["even" if i % 2 == 0 else "odd", f"group-{i % 10}"],
                config={"lr": 0.001 * (1 + i % 7)},
            )
            calls = [
                LogCall({"loss": 1.0 / (1 + s + i % 5)}, time.time(), None)
                for s in range(ROWS_PER_RUN)
            ]
            run.log(calls, writer=writer, limits=service.limits)
            if i % 3 == 0:
                run.finish(0, writer=writer)
            batch.append(run)
        service.store.save(*batch)
        progress(f"{count:,} runs: saved {first + len(batch):,}")
    last = service.store.last_position()
    service._written = max(service._written, last)  # reads wait for them
    while service.runner.position() < last:
        applied = service.runner.position()
        progress(f"{count:,} runs: saved; read models at event {applied:,} of {last:,}")
        time.sleep(0.5)
    progress(f"{count:,} runs: saved and projected in {time.perf_counter() - started:.1f} s\n")


def interleaved_ms(calls: dict[int, Callable[[], object]], repeats: int) -> dict[int, float]:
    """The median ms of each size's call, the sizes taking turns: the machine's load (other
    processes on 2 cores) then weighs on both alike."""
    for call in calls.values():
        call()  # warm: connections, caches of compiled statements
    times: dict[int, list[float]] = {size: [] for size in calls}
    for _ in range(repeats):
        for size, call in calls.items():
            started = time.perf_counter()
            call()
            times[size].append((time.perf_counter() - started) * 1000)
    return {size: statistics.median(found) for size, found in times.items()}


def http_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=600) as response:
        document: dict = json.loads(response.read())
    return document


def cli(address: str, project: str) -> None:
    command = ["runs", f"{ENTITY}/{project}", "--address", address]
    done = subprocess.run(
        [sys.executable, "-m", "runhistory.service.cli", *command],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("RUNHISTORY_")},
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)


# ---- the surfaces: each a name, and the call of its first page on a server ----------------

OnServer = Callable[[Running], Callable[[], object]]
CLI_REPEATS = 5  # a CLI process takes a few hundred ms


def grpc_call(request: pb.ListRunsRequest) -> OnServer:
    def on(running: Running) -> Callable[[], object]:
        stub = pb_grpc.RunHistoryStub(grpc.insecure_channel(running.address))
        page = stub.ListRuns(request)
        assert len(page.runs) == 50 or request.HasField("filter"), "not a page of 50 runs"
        return lambda: stub.ListRuns(request)

    return on


def sdk_call(count_only: bool) -> OnServer:
    def on(running: Running) -> Callable[[], object]:
        api = runhistory.Api(address=running.address)
        if count_only:
            return lambda: len(api.runs(f"{ENTITY}/{PROJECT}"))
        return lambda: api.runs(f"{ENTITY}/{PROJECT}").next_page()

    return on


def cli_call(project: str) -> OnServer:
    return lambda running: lambda: cli(running.address, project)


def http_call(tail: str, page_ids: bool = False) -> OnServer:
    def on(running: Running) -> Callable[[], object]:
        assert running.web is not None
        base = f"{running.web.url}/api/{ENTITY}/{PROJECT}"
        url = f"{base}{tail}"
        if page_ids:  # the project page asks for the sparklines of the runs it shows
            url += ",".join(r["run_id"] for r in http_json(f"{base}/runs")["runs"])
        return lambda: http_json(url)

    return on


FILTER = pb.RunFilter(states=["finished"], tags=["group-3"])
SURFACES: list[tuple[str, OnServer]] = [
    ("gRPC ListRuns", grpc_call(pb.ListRunsRequest(entity=ENTITY, project=PROJECT))),
    (
        "gRPC ListRuns, -updated_at",
        grpc_call(pb.ListRunsRequest(entity=ENTITY, project=PROJECT, order="-updated_at")),
    ),
    (
        "gRPC ListRuns, filter (1 run in 30)",
        grpc_call(pb.ListRunsRequest(entity=ENTITY, project=PROJECT, filter=FILTER)),
    ),
    ("Api().runs() first page", sdk_call(count_only=False)),
    ("len(Api().runs()) (a count)", sdk_call(count_only=True)),
    ("CLI runs (process)", cli_call(PROJECT)),
    ("CLI runs, empty project (baseline)", cli_call("empty")),
    ("JSON /runs", http_call("/runs")),
    ("JSON /runs?sparkline=loss", http_call("/runs?sparkline=loss")),
    ("JSON /sparklines of the page", http_call("/sparklines?key=loss&runs=", page_ids=True)),
]


def measure(
    sizes: tuple[int, int], repeats: int, databases: dict[int, str]
) -> dict[int, dict[str, float]]:
    servers: dict[int, Running] = {}
    try:
        for count in sizes:
            print(f"{count:,} runs in {ENTITY}/{PROJECT}", file=sys.stderr)
            settings = Settings(db=databases[count], require_keys=False)
            servers[count] = start(settings, "127.0.0.1:0", "127.0.0.1:0")
            fill(servers[count], count)
        found: dict[int, dict[str, float]] = {count: {} for count in sizes}
        for name, on in SURFACES:
            progress(f"timing {name}")
            calls = {count: on(running) for count, running in servers.items()}
            turns = CLI_REPEATS if name.startswith("CLI") else repeats
            for count, ms in interleaved_ms(calls, turns).items():
                found[count][name] = ms
        progress("timing writes while the JSON API lists\n")
        for count, running in servers.items():
            assert running.web is not None
            url = f"{running.web.url}/api/{ENTITY}/{PROJECT}/runs?sparkline=loss"
            found[count].update(writes_while_listing(running, url, count))
        return found
    finally:
        for running in servers.values():
            running.stop()


def writes_while_listing(running: Running, url: str, count: int) -> dict[str, float]:
    """p50 and p95 latency of creating a run through the service, alone and while another
    thread reads the JSON API's first page (with sparklines) over and over."""
    service = running.service

    def creates(label: str) -> list[float]:
        times = []
        for n in range(200):
            started = time.perf_counter()
            service.create(RunPath(ENTITY, "writes", f"{label}{count}-{n}"))
            times.append((time.perf_counter() - started) * 1000)
        return sorted(times)

    alone = creates("alone")
    stop = threading.Event()
    pages = 0

    def reader() -> None:
        nonlocal pages
        while not stop.is_set():
            http_json(url)
            pages += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        busy = creates("busy")
    finally:
        stop.set()
        thread.join()
    return {
        "write p50, alone": alone[len(alone) // 2],
        "write p95, alone": alone[int(len(alone) * 0.95)],
        "write p50, while listing": busy[len(busy) // 2],
        "write p95, while listing": busy[int(len(busy) * 0.95)],
    }


@contextmanager
def databases(sizes: tuple[int, int], postgres: str | None) -> Iterator[dict[int, str]]:
    """A fresh database for each size: SQLite files, or PostgreSQL schemas."""
    if postgres is None:
        with tempfile.TemporaryDirectory(prefix="runhistory-bench-") as tmp:
            yield {count: str(Path(tmp) / f"many-{count}.db") for count in sizes}
        return
    from sqlalchemy import create_engine, text

    schemas = {count: f"bench_many_{count}_{os.getpid()}" for count in sizes}
    admin = create_engine(postgres)
    with admin.begin() as conn:
        for schema in schemas.values():
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield {c: f"{postgres}?options=-csearch_path%3D{s}" for c, s in schemas.items()}
    finally:
        with admin.begin() as conn:
            for schema in schemas.values():
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(1_000, 10_000), metavar="N")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="200 and 2,000 runs, 5 repeats")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="on PostgreSQL (a schema of its own per size, dropped after), e.g. "
        "postgresql+psycopg://postgres@127.0.0.1:5432/test; default: SQLite files",
    )
    args = parser.parse_args()
    small, large = (200, 2_000) if args.quick else args.sizes
    repeats = 5 if args.quick else args.repeats
    with databases((small, large), args.postgres) as where:
        results = measure((small, large), repeats, where)

    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"\nfirst page (50 runs) on {backend}, ms: median of {repeats} (CLI: of {CLI_REPEATS}), "
        "the two sizes taking turns"
    )
    width = max(len(name) for name in results[small])
    print(f"{'':{width}}  {small:>8,} runs  {large:>8,} runs   ratio   target")
    missed = []
    for name, few in results[small].items():
        many = results[large][name]
        ratio = many / few if few else float("inf")
        verdict = ""
        if "filter" in name:
            # It reads on until it has a page of matches: its cost follows how rare they are.
            ok = many < TARGET_MS
            verdict = f"< {TARGET_MS:.0f} ms " + ("ok" if ok else "MISSED")
        elif name.startswith(("gRPC", "Api", "JSON")):
            ok = many < TARGET_MS and ratio <= TARGET_RATIO
            verdict = f"< {TARGET_MS:.0f} ms, <= {TARGET_RATIO} " + ("ok" if ok else "MISSED")
        else:
            ok = True
            if name == "CLI runs (process)":
                extra = many - results[large]["CLI runs, empty project (baseline)"]
                verdict = f"{extra:+.0f} ms over the baseline"
        if not ok:
            missed.append(name)
        print(f"{name:{width}}  {few:>11.1f}  {many:>11.1f}  {ratio:>6.2f}   {verdict}")
    if missed:
        print(f"\nmissed: {', '.join(missed)}")


if __name__ == "__main__":
    main()
