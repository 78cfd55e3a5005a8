"""The SDK's `log()` cost as the training loop sees it, and end-to-end ingest over gRPC.

Starts a runhistory server on loopback (SQLite file in a temporary folder), logs rows of
10 keys through `runhistory.init / log / finish`, and prints:
- the median and 99th percentile of one `log()` call (target: median <= 20 microseconds),
- points per second from the first `log()` until `finish()` returned (every row
  acknowledged, so durable) and until the rows were readable through the API.

    python bench/sdk_ingest.py            # 100k steps x 10 keys = 1M points
    python bench/sdk_ingest.py --quick    # 10k steps
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import runhistory
from runhistory.service.bootstrap import start
from runhistory.service.settings import Settings

KEYS = 10


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10k steps instead of 100k")
    args = parser.parse_args()
    steps = 10_000 if args.quick else 100_000

    with tempfile.TemporaryDirectory() as tmp:
        server = start(Settings(db=str(Path(tmp) / "bench.db"), require_keys=False), "127.0.0.1:0")
        try:
            run = runhistory.init(project="bench", entity="sdk", address=server.address)
            rows = [{f"k{k}": float(step * KEYS + k) for k in range(KEYS)} for step in range(steps)]
            costs = []
            clock = time.perf_counter_ns
            started = time.perf_counter()
            for i, row in enumerate(rows):
                before = clock()
                run.log(row)
                costs.append(clock() - before)
                if i % 10_000 == 0:
                    sys.stderr.write(f"\r  logged {i:,}/{steps:,} steps")
            sys.stderr.write(f"\r  logged {steps:,}/{steps:,} steps\n")
            logged = time.perf_counter()
            run.finish()
            acknowledged = time.perf_counter()
            reader = runhistory.Api(address=server.address).run(run.path)
            read = list(reader.scan_history(keys=["k0"]))
            visible = time.perf_counter()
            assert len(read) == steps, f"{len(read)} rows read back, {steps} logged"
        finally:
            server.stop()

    points = steps * KEYS
    median_us = statistics.median(costs) / 1000
    p99_us = statistics.quantiles(costs, n=100)[98] / 1000
    verdict = "ok" if median_us <= 20 else "MISSED"
    print(f"\nSDK log() of a 10-key row, {steps:,} calls")
    print(f"  median {median_us:.1f} us, p99 {p99_us:.1f} us (target: median <= 20 us) {verdict}")
    print(f"  training loop time: {logged - started:.2f} s for {points:,} points")
    print("end-to-end ingest over gRPC into SQLite")
    print(f"  acknowledged (durable): {points / (acknowledged - started):,.0f} points/s")
    print(f"  readable through the API: {points / (visible - started):,.0f} points/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
