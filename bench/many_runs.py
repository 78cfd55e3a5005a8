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
from collections.abc import Callable
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


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()  # warm: connections, caches of compiled statements
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def http_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=600) as response:
        document: dict = json.loads(response.read())
    return document


def cli(address: str, project: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "runhistory.service.cli",
            "runs",
            f"{ENTITY}/{project}",
            "--address",
            address,
        ],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("RUNHISTORY_")},
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)


def measure(count: int, repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="runhistory-bench-") as tmp:
        settings = Settings(db=str(Path(tmp) / "many.db"), require_keys=False)
        running = start(settings, "127.0.0.1:0", "127.0.0.1:0")
        try:
            fill(running, count)
            return timings(running, count, repeats)
        finally:
            running.stop()


def timings(running: Running, count: int, repeats: int) -> dict[str, float]:
    assert running.web is not None
    base = f"{running.web.url}/api/{ENTITY}/{PROJECT}"
    found: dict[str, float] = {}
    with grpc.insecure_channel(running.address) as channel:
        stub = pb_grpc.RunHistoryStub(channel)
        request = pb.ListRunsRequest(entity=ENTITY, project=PROJECT)
        page = stub.ListRuns(request)
        assert len(page.runs) == 50 and page.next_cursor, "the first page is not 50 runs"
        found["gRPC ListRuns"] = median_ms(lambda: stub.ListRuns(request), repeats)
        newest = pb.ListRunsRequest(entity=ENTITY, project=PROJECT, order="-updated_at")
        found["gRPC ListRuns, -updated_at"] = median_ms(lambda: stub.ListRuns(newest), repeats)
        tagged = pb.ListRunsRequest(
            entity=ENTITY,
            project=PROJECT,
            filter=pb.RunFilter(states=["finished"], tags=["group-3"]),
        )
        found["gRPC ListRuns, filter (1 run in 30)"] = median_ms(
            lambda: stub.ListRuns(tagged), repeats
        )
    with runhistory.Api(address=running.address) as api:
        found["Api().runs() first page"] = median_ms(
            lambda: api.runs(f"{ENTITY}/{PROJECT}").next_page(), repeats
        )
        found["len(Api().runs()) (a count)"] = median_ms(
            lambda: len(api.runs(f"{ENTITY}/{PROJECT}")), repeats
        )
    cli_repeats = max(3, repeats // 3)
    found["CLI runs (process)"] = median_ms(lambda: cli(running.address, PROJECT), cli_repeats)
    found["CLI runs, empty project (baseline)"] = median_ms(
        lambda: cli(running.address, "empty"), cli_repeats
    )
    first = http_json(f"{base}/runs")
    ids = ",".join(r["run_id"] for r in first["runs"])
    found["JSON /runs"] = median_ms(lambda: http_json(f"{base}/runs"), repeats)
    found["JSON /runs?sparkline=loss"] = median_ms(
        lambda: http_json(f"{base}/runs?sparkline=loss"), repeats
    )
    found["JSON /sparklines of the page"] = median_ms(
        lambda: http_json(f"{base}/sparklines?key=loss&runs={ids}"), repeats
    )
    found.update(writes_while_listing(running, f"{base}/runs?sparkline=loss", count))
    return found


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(1_000, 10_000), metavar="N")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="200 and 2,000 runs, 5 repeats")
    args = parser.parse_args()
    small, large = (200, 2_000) if args.quick else args.sizes
    repeats = 5 if args.quick else args.repeats

    results = {}
    for count in (small, large):
        print(f"{count:,} runs in {ENTITY}/{PROJECT}", file=sys.stderr)
        results[count] = measure(count, repeats)

    print(
        f"\nfirst page (50 runs) on SQLite, median of {repeats} ms (CLI: of {max(3, repeats // 3)})"
    )
    width = max(len(name) for name in results[small])
    print(f"{'':{width}}  {small:>8,} runs  {large:>8,} runs   ratio   target")
    missed = []
    for name, few in results[small].items():
        many = results[large][name]
        ratio = many / few if few else float("inf")
        is_page = not name.startswith("write") and "baseline" not in name and "count" not in name
        verdict = ""
        if "filter" in name:
            # It reads on until a page of matches: its cost follows how rare they are.
            ok = many < TARGET_MS
            verdict = f"< {TARGET_MS:.0f} ms " + ("ok" if ok else "MISSED")
            if not ok:
                missed.append(name)
        elif is_page and "CLI" not in name:
            ok = many < TARGET_MS and ratio <= TARGET_RATIO
            verdict = f"< {TARGET_MS:.0f} ms, <= {TARGET_RATIO} " + ("ok" if ok else "MISSED")
            if not ok:
                missed.append(name)
        elif name == "CLI runs (process)":
            extra = many - results[large]["CLI runs, empty project (baseline)"]
            verdict = f"{extra:+.0f} ms over the baseline"
        print(f"{name:{width}}  {few:>11.1f}  {many:>11.1f}  {ratio:>6.2f}   {verdict}")
    if missed:
        print(f"\nmissed: {', '.join(missed)}")


if __name__ == "__main__":
    main()
