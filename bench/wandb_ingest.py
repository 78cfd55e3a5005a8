"""Ingest through the real `wandb` SDK into runhistory, beside runhistory's own SDK.

Starts a runhistory server on loopback as deployed (SQLite file in a temporary folder, API
keys required, the W&B API on the web server's address), then logs the same rows of 10 keys
twice, in the same run of this script:
- through `runhistory.init / log / finish` over gRPC;
- through `wandb.init / log / finish` (the pinned wandb SDK, unchanged, in a subprocess with
  `WANDB_BASE_URL` and `WANDB_API_KEY` set, its default settings otherwise).

For each it prints the points per second from the first `log()` until `finish()` returned
(every row acknowledged by the server, so durable), the `log()` loop and `finish()` times,
and checks that every row reads back.

    python bench/wandb_ingest.py            # 100k steps x 10 keys = 1M points each
    python bench/wandb_ingest.py --quick    # 10k steps
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import runhistory
from runhistory.service.auth import Role
from runhistory.service.bootstrap import start
from runhistory.service.settings import Settings

KEYS = 10
ENTITY = "bench"

WANDB_SCRIPT = """
import json, sys, time
import wandb

steps, keys = int(sys.argv[1]), int(sys.argv[2])
rows = [{f"k{k}": float(step * keys + k) for k in range(keys)} for step in range(steps)]
started = time.perf_counter()
run = wandb.init(project="bench")
initialised = time.perf_counter()
for i, row in enumerate(rows):
    run.log(row)
    if i % 10_000 == 0:
        sys.stderr.write(f"\\r  wandb: logged {i:,}/{steps:,} steps")
sys.stderr.write(f"\\r  wandb: logged {steps:,}/{steps:,} steps\\n")
logged = time.perf_counter()
run.finish()
finished = time.perf_counter()
print(json.dumps({"id": run.id, "init": initialised - started, "loop": logged - initialised,
                  "finish": finished - logged}))
"""


def runhistory_ingest(address: str, key: str, steps: int) -> dict[str, float]:
    rows = [{f"k{k}": float(step * KEYS + k) for k in range(KEYS)} for step in range(steps)]
    started = time.perf_counter()
    run = runhistory.init(project="bench", entity=ENTITY, address=address, api_key=key)
    initialised = time.perf_counter()
    for i, row in enumerate(rows):
        run.log(row)
        if i % 10_000 == 0:
            sys.stderr.write(f"\r  runhistory: logged {i:,}/{steps:,} steps")
    sys.stderr.write(f"\r  runhistory: logged {steps:,}/{steps:,} steps\n")
    logged = time.perf_counter()
    run.finish()
    finished = time.perf_counter()
    check(address, key, run.path, steps)
    return {
        "init": initialised - started,
        "loop": logged - initialised,
        "finish": finished - logged,
    }


def wandb_ingest(base_url: str, address: str, key: str, steps: int, folder: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_BASE_URL=base_url,
        WANDB_API_KEY=key,
        WANDB_SILENT="true",
        WANDB_DIR=str(folder),
        WANDB_CACHE_DIR=str(folder),
        WANDB_CONFIG_DIR=str(folder),
        NO_PROXY="127.0.0.1,localhost",
    )
    script = folder / "wandb_ingest.py"
    script.write_text(WANDB_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(steps), str(KEYS)],
        env=env,
        cwd=folder,
        stdout=subprocess.PIPE,
        text=True,
        timeout=3600,
        check=True,
    )
    times = json.loads(done.stdout.strip().splitlines()[-1])
    check(address, key, f"{ENTITY}/bench/{times['id']}", steps)
    return times


def timed(owner: object, name: str) -> list[float]:
    """Time every call of `owner.name` from now on: the seconds of each call."""
    seconds: list[float] = []
    method = getattr(owner, name)

    def timing(*args: object, **kwargs: object) -> object:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - started)

    setattr(owner, name, timing)
    return seconds


def check(address: str, key: str, path: str, steps: int) -> None:
    with runhistory.Api(address=address, api_key=key) as api:
        read = list(api.run(path).scan_history(keys=["k9"]))
    assert len(read) == steps, f"{len(read)} rows read back, {steps} logged"
    assert read[-1]["k9"] == float((steps - 1) * KEYS + 9)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10k steps instead of 100k")
    args = parser.parse_args()
    steps = 10_000 if args.quick else 100_000
    points = steps * KEYS

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = start(Settings(db=str(folder / "bench.db")), "127.0.0.1:0", "127.0.0.1:0")
        assert server.web is not None and server.keys is not None
        posts = timed(server.web.server.app.wandb.file_stream, "post")
        try:
            _, key = server.keys.create(ENTITY, Role.WRITER, "bench")
            ours = runhistory_ingest(server.address, key, steps)
            theirs = wandb_ingest(server.web.url, server.address, key, steps, folder)
        finally:
            server.stop()

    def rate(times: dict[str, float]) -> float:
        return points / (times["loop"] + times["finish"])

    print(f"\ningest of {points:,} points ({steps:,} rows x {KEYS} keys) into runhistory, SQLite")
    print(f"{'client':<24}{'points/s':>12}{'log() loop':>13}{'finish()':>11}{'init':>9}")
    for name, times in (("runhistory SDK (gRPC)", ours), ("wandb SDK (W&B API)", theirs)):
        print(
            f"{name:<24}{rate(times):>12,.0f}{times['loop']:>12.2f}s"
            f"{times['finish']:>10.2f}s{times['init']:>8.2f}s"
        )
    print(f"wandb / runhistory points/s: {rate(theirs) / rate(ours):.2f}")
    spent = sum(posts)
    print(
        f"the server's part of the wandb ingest: {len(posts)} file_stream posts in {spent:.2f} s"
        f" ({points / spent:,.0f} points/s while applying them); the rest is the wandb SDK's"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
