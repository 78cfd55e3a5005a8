"""The web UI's history endpoint on a long run: time to a downsampled chart.

Writes a run of N steps (default 100,000) with 10 keys per step to a SQLite file, then
times `GET /api/.../history?keys=loss&max_points=1000` over real HTTP on loopback (the
server reads only the asked key's rows and min/max-buckets them as they stream), and the
same for 3 keys. Prints milliseconds per request, the points sent,
and that the spike logged in the middle is among them. The first request reads the run;
repeats are answered from the server's cache of downsampled histories, which a new event of
the run invalidates.

    python bench/web_history.py              # 100k steps
    python bench/web_history.py --steps 1000000
    python bench/web_history.py --quick      # 10k steps, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from runhistory.domain.values import LogCall
from runhistory.service.runs import RunService
from runhistory.service.settings import Settings
from runhistory.service.web.server import start_web

KEYS = 10
BATCH_ROWS = 1000


def make_run(service: RunService, steps: int) -> None:
    session = service.init("bench", "web", "long")
    spike = steps // 2
    for start in range(0, steps, BATCH_ROWS):
        calls = []
        for step in range(start, min(start + BATCH_ROWS, steps)):
            row = {f"k{k}": math.sin(step / 100 + k) for k in range(KEYS - 1)}
            row["loss"] = 1000.0 if step == spike else 1.0 / (1 + step)
            calls.append(LogCall(row, time.time(), None))
        service.log(session.path, calls, writer=session.writer)
    sys.stderr.write(f"  wrote {steps:,} steps\n")
    service.runner.catch_up()


def timed(url: str, repeats: int) -> tuple[float, float, dict]:
    """The first request's ms (it reads the run), the median of the repeats after it (the
    server's cache of downsampled histories answers those) and the document."""
    times = []
    document: dict = {}
    for _ in range(1 + repeats):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=600) as response:
            document = json.loads(response.read())
        times.append((time.perf_counter() - started) * 1000)
    return times[0], statistics.median(times[1:]), document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10k steps, 3 repeats")
    args = parser.parse_args()
    steps, repeats = (10_000, 3) if args.quick else (args.steps, args.repeats)

    with (
        tempfile.TemporaryDirectory(prefix="runhistory-bench-") as tmp,
        RunService(Settings(db=str(Path(tmp) / "bench.db"))) as service,
    ):
        make_run(service, steps)
        web = start_web(service, "127.0.0.1:0")
        try:
            base = f"{web.url}/api/bench/web/runs/long/history?max_points=1000"
            cold, warm, doc = timed(f"{base}&keys=loss", repeats)
            own = doc["series"]["loss"]["own"]
            spike_kept = 1000.0 in own["values"]
            print(
                f"history, 1 key,  {steps:,} steps ({steps * KEYS:,} points in the run): "
                f"{cold:.0f} ms; again (cached): {warm:.1f} ms median of {repeats}; "
                f"{len(own['steps'])} points sent; spike kept: {spike_kept}"
            )
            cold, warm, _ = timed(f"{base}&keys=loss,k0,k1", repeats)
            print(f"history, 3 keys, {steps:,} steps: {cold:.0f} ms; again (cached): {warm:.1f} ms")
        finally:
            web.stop()
    if not spike_kept:
        sys.exit("the spike was lost")


if __name__ == "__main__":
    main()
