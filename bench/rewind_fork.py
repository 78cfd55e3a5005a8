"""Rewind and fork cost against history length, and the rebuild rate.

For a run of 1k points and one of 1M points (10 keys per step) on a SQLite file, times a
rewind and a fork until the read models show them (history, summary), and prints the
1M/1k ratio (target <= 1.5). Then drops and rebuilds every projection from the event log
and prints points per second (target >= 200,000).

    python bench/rewind_fork.py            # 1k vs 1M points
    python bench/rewind_fork.py --quick    # 1k vs 100k points, for a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from runhistory.domain.values import LogCall
from runhistory.service.runs import RunService
from runhistory.service.settings import Settings

KEYS = 10
BATCH_ROWS = 1000


def progress(label: str, done: int, total: int) -> None:
    sys.stderr.write(f"\r  {label}: {done:,}/{total:,}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def make_run(service: RunService, run_id: str, points: int) -> int:
    steps = points // KEYS
    session = service.init("bench", "rewind", run_id)
    for start in range(0, steps, BATCH_ROWS):
        calls = [
            LogCall({f"k{k}": (step * KEYS + k) * 0.001 for k in range(KEYS)}, float(step))
            for step in range(start, min(start + BATCH_ROWS, steps))
        ]
        service.log(session.path, calls, writer=session.writer)
        progress(f"logging {run_id}", min(start + BATCH_ROWS, steps) * KEYS, points)
    service.finish(session.path, writer=session.writer)
    service.runner.wait_for(service._written)
    return steps


def time_branches(
    service: RunService, run_id: str, steps: int, repeats: int
) -> tuple[float, float]:
    """Median seconds of a rewind and of a fork, each until its history and summary read."""
    rewinds, forks = [], []
    for i in range(repeats):
        # A step that is not on a summary checkpoint, in the middle of the history.
        step = steps // 2 + 37 - i
        begin = time.perf_counter()
        session = service.init("bench", "rewind", resume_from=f"{run_id}?_step={step}")
        service.runner.wait_for(session.position)
        service.summary(session.path)
        rewinds.append(time.perf_counter() - begin)

        begin = time.perf_counter()
        fork = service.init(
            "bench", "rewind", f"{run_id}-f{i}", fork_from=f"{run_id}?_step={step - 1}"
        )
        service.runner.wait_for(fork.position)
        service.summary(fork.path)
        forks.append(time.perf_counter() - begin)
    return statistics.median(rewinds), statistics.median(forks)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1k vs 100k points")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    large = 100_000 if args.quick else 1_000_000

    with tempfile.TemporaryDirectory() as tmp:
        service = RunService(Settings(db=str(Path(tmp) / "bench.db")))
        small_steps = make_run(service, "small", 1_000)
        large_steps = make_run(service, "large", large)
        small = time_branches(service, "small", small_steps, args.repeats)
        big = time_branches(service, "large", large_steps, args.repeats)

        print(
            f"\nrewind and fork on SQLite, median of {args.repeats}, until history and summary read"
        )
        print(f"{'':8}{'1k points':>14}{f'{large // 1000}k points':>14}{'ratio':>9}{'target':>10}")
        for label, a, b in (("rewind", small[0], big[0]), ("fork", small[1], big[1])):
            ratio = b / a
            verdict = "ok" if ratio <= 1.5 else "MISSED"
            print(
                f"{label:8}{a * 1000:>11.2f} ms{b * 1000:>11.2f} ms"
                f"{ratio:>9.2f}{'<= 1.5':>10} {verdict}"
            )

        points = 1_000 + large + KEYS * 2 * args.repeats  # ingested plus the one row per rewind
        started = time.perf_counter()
        events = service.rebuild(lambda p: progress("rebuild events", p.position, p.target))
        elapsed = time.perf_counter() - started
        rate = points / elapsed
        verdict = "ok" if rate >= 200_000 else "MISSED"
        print(
            f"\nrebuild: {events:,} events, {points:,} points in {elapsed:.2f} s "
            f"= {rate:,.0f} points/s "
            f"(target >= 200,000) {verdict}"
        )
        service.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
