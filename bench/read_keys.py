"""Reading history back through the SDK: one key's whole history, and the whole history.

Logs STEPS x 10 keys into one run of a runhistory server (once: the SQLite file in --dir,
or the run in a --db database, is reused), starts a fresh server process on it and times,
from a client in this process, `Api().run(path).scan_history(keys=["k0"])` and `scan_history()` over
gRPC. Prints the median of --repeats of each, in points per second. The server runs in its
own process, as in bench/compare.py, so the client and the server do not share a GIL.

    python bench/read_keys.py                       # 100k steps x 10 keys (1M points)
    python bench/read_keys.py --steps 10000 --repeats 3
    python bench/read_keys.py --db postgresql+psycopg://root@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import runhistory

KEYS = 10
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(db: str) -> tuple[subprocess.Popen[bytes], str]:
    address = f"127.0.0.1:{free_port()}"
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "runhistory.service.cli", "serve", "--no-auth"),
            *("--db", db, "--address", address),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", int(address.rsplit(":", 1)[1]))) == 0:
                return server, address
        if server.poll() is not None:
            raise SystemExit(f"server exited: {server.stderr.read().decode()}")  # type: ignore[union-attr]
        time.sleep(0.1)
    server.kill()
    raise SystemExit("server did not start in 30 s")


def timed(read: object, repeats: int) -> tuple[float, int]:
    seconds, rows = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        rows = read()  # type: ignore[operator]
        seconds.append(time.perf_counter() - started)
    points = sum(len(row) - 3 for row in rows)
    return statistics.median(seconds), points


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the SQLite file is")
    parser.add_argument("--db", help="a database URL instead of the SQLite file")
    args = parser.parse_args()

    db = args.db or str(Path(args.dir) / f"read_keys_{args.steps}.db")
    run_id = f"read-{args.steps}"
    server, address = serve(db)
    try:
        api = runhistory.Api(address=address)
        path = f"bench/read/{run_id}"
        if not any(run.id == run_id for run in api.runs("bench/read")):
            run = runhistory.init(entity="bench", project="read", id=run_id, address=address)
            for step in range(args.steps):
                run.log({f"k{k}": float(step * KEYS + k) for k in range(KEYS)})
            run.finish()
        api_run = api.run(path)
        list(api_run.scan_history(keys=["k0"], max_step=11))  # warm the connection
        one, one_points = timed(lambda: list(api_run.scan_history(keys=["k0"])), args.repeats)
        every, every_points = timed(lambda: list(api_run.scan_history()), args.repeats)
        assert one_points == args.steps, f"{one_points} points of k0"
        assert every_points == args.steps * KEYS, f"{every_points} points"
        print(
            f"one key:       {one * 1000:7.1f} ms  {one_points / one:>12,.0f} points/s"
            f"   (median of {args.repeats})"
        )
        print(
            f"whole history: {every * 1000:7.1f} ms  {every_points / every:>12,.0f} points/s"
            f"   (median of {args.repeats})"
        )
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
