"""runhistory side by side with MLflow, on the same machine, in the same run.

One command:

    python bench/compare.py            # 1M-point ingest and reads, 10M points for memory
    python bench/compare.py --quick    # 100k-point ingest and reads, 1M points for memory

It installs MLflow (the version pinned in bench/requirements-mlflow.txt) into its own venv,
bench/.venv-mlflow (skipped when already there), starts an MLflow tracking server (SQLite
backend; one worker and no GenAI job runner, the stronger baseline on 2 cores, or its
defaults with --mlflow-defaults) and a runhistory server (SQLite file), each as its own
process on loopback with fresh temporary storage, and runs every workload from a client
subprocess of its own, so that neither client slows the other:

- ingest of STEPS x 10 keys into one run: runhistory through the SDK (`log()` per step,
  until `finish()` returned and the last row is readable through the API), MLflow through
  `MlflowClient.log_batch` with 1,000 metrics per request (MLflow's cap);
- reads of one key's whole history and of the run's whole history: runhistory's
  `Api().run(path).scan_history()` (a dict per row, as MLflow's Metric objects per point) and,
  for one key, `history_columns()` (a list per column, as a data frame takes them),
  MLflow's `get_metric_history` per key (it pages at 25,000);
- the raw SQLite ceiling: executemany of the same points, 1,000 per transaction, WAL,
  synchronous=FULL (as runhistory's read models), PRIMARY KEY (run, key, step);
- the SDK's `log()` cost as the training loop sees it (beside one MLflow `log_metric` call);
- the runhistory server's resident memory (VmRSS sampled, VmHWM) while ingesting 10M points
  into a fresh server (beside the MLflow server's, processes summed, during its ingest).

Then it prints one table (figure, runhistory, baseline, ratio, target, ok/MISSED) on stdout;
progress goes to stderr. Every process it started is ended at the end, also on an error,
SIGTERM or Ctrl-C.

The same file is also the client of each workload (`--worker NAME`, run by the venv's
python for runhistory and by bench/.venv-mlflow's for MLflow), so it imports only the
standard library at the top.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
MLFLOW_VENV = BENCH / ".venv-mlflow"
MLFLOW_REQUIREMENTS = BENCH / "requirements-mlflow.txt"
MLFLOW_PYTHON = MLFLOW_VENV / "bin" / "python"

KEYS = 10  # values per step, as in bench/sdk_ingest.py
BATCH = 1_000  # MLflow's log_batch cap; also the raw SQLite transaction size
RESULT = "RESULT "  # prefix of a worker's result line on its stdout

# MLflow must not try to reach the internet (telemetry) from the server or the client.
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
# The MLflow server as a lean tracking server: one uvicorn worker (one client at a time is
# served by one worker anyway) and no GenAI job runner (seven huey consumers that take CPU
# and memory on a 2-core machine and play no part in tracking).
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
MLFLOW_WORKERS = 1


@dataclass(frozen=True)
class Sizes:
    steps: int  # ingest and read: steps x KEYS points in one run
    memory_steps: int  # the memory run
    read_repeats: int  # one-key reads: median of this many
    log_metric_calls: int  # MLflow log_metric calls timed one by one


QUICK = Sizes(steps=10_000, memory_steps=100_000, read_repeats=1, log_metric_calls=50)
FULL = Sizes(steps=100_000, memory_steps=1_000_000, read_repeats=3, log_metric_calls=300)


def say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def progress(label: str, done: int, total: int) -> None:
    sys.stderr.write(f"\r    {label}: {done:,}/{total:,}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(RESULT + json.dumps(result) + "\n")
    sys.stdout.flush()


def row_values(step: int) -> list[float]:
    return [float(step * KEYS + k) for k in range(KEYS)]


KEY_NAMES = [f"k{k}" for k in range(KEYS)]


# ==== workers: each runs in its own subprocess ===============================================


def worker_sqlite(args: dict[str, Any]) -> None:
    """The raw SQLite ceiling: the same points, executemany, 1,000 per transaction, WAL,
    with `synchronous` as given (FULL: every commit durable, as runhistory's)."""
    import sqlite3

    steps = args["steps"]
    label = f"sqlite points, synchronous={args['synchronous']}"
    connection = sqlite3.connect(args["db"], isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute(f"PRAGMA synchronous = {args['synchronous']}")
    connection.execute(
        "CREATE TABLE points (run TEXT NOT NULL, key TEXT NOT NULL, step INTEGER NOT NULL,"
        " value REAL NOT NULL, PRIMARY KEY (run, key, step))"
    )
    points = [
        ("run-1", key, step, value)
        for step in range(steps)
        for key, value in zip(KEY_NAMES, row_values(step), strict=True)
    ]
    batches = [points[i : i + BATCH] for i in range(0, len(points), BATCH)]
    insert = "INSERT INTO points (run, key, step, value) VALUES (?, ?, ?, ?)"
    started = time.perf_counter()
    for i, batch in enumerate(batches):
        connection.execute("BEGIN")
        connection.executemany(insert, batch)
        connection.execute("COMMIT")
        if i % 100 == 0:
            progress(label, i * BATCH, len(points))
    elapsed = time.perf_counter() - started
    progress(label, len(points), len(points))
    (count,) = connection.execute("SELECT count(*) FROM points").fetchone()
    assert count == len(points), f"{count} points stored, {len(points)} inserted"
    connection.close()
    emit({"points": len(points), "seconds": elapsed})


def worker_rh_ingest(args: dict[str, Any]) -> None:
    """runhistory through the SDK: log() per step, until finish() returned (every row
    acknowledged) and the last row is readable through the API."""
    import runhistory

    steps, address = args["steps"], args["address"]
    prebuild, time_calls = args["prebuild"], args["time_calls"]
    key = args["api_key"]
    run = runhistory.init(
        entity="bench", project="compare", id=args["run_id"], address=address, api_key=key
    )
    rows = (
        [dict(zip(KEY_NAMES, row_values(s), strict=True)) for s in range(steps)]
        if prebuild
        else None
    )
    costs: list[int] = []
    clock = time.perf_counter_ns
    log = run.log
    started = time.perf_counter()
    for step in range(steps):
        row = (
            rows[step] if rows is not None else dict(zip(KEY_NAMES, row_values(step), strict=True))
        )
        if time_calls:
            before = clock()
            log(row)
            costs.append(clock() - before)
        else:
            log(row)
        if step % 10_000 == 0:
            progress("runhistory steps logged", step, steps)
    progress("runhistory steps logged", steps, steps)
    logged = time.perf_counter()
    run.finish()
    acknowledged = time.perf_counter()
    last = list(
        runhistory.Api(address=address, api_key=key)
        .run(run.path)
        .scan_history(keys=["k0"], min_step=steps - 1)
    )
    visible = time.perf_counter()
    assert len(last) == 1 and last[0]["_step"] == steps - 1, f"last row read back: {last}"
    result: dict[str, Any] = {
        "path": run.path,
        "points": steps * KEYS,
        "logged": logged - started,
        "acknowledged": acknowledged - started,
        "visible": visible - started,
    }
    if costs:
        result["log_median_us"] = statistics.median(costs) / 1000
        result["log_p99_us"] = statistics.quantiles(costs, n=100)[98] / 1000
    emit(result)


def _count_points(rows: list[dict[str, Any]]) -> int:
    return sum(1 for row in rows for key in row if not key.startswith("_"))


def worker_rh_read(args: dict[str, Any]) -> None:
    """runhistory: one key's whole history as rows and as columns (medians of repeats),
    then every key's as rows."""
    import runhistory

    steps = args["steps"]
    run = runhistory.Api(address=args["address"], api_key=args["api_key"]).run(args["path"])
    one_key = []
    for i in range(args["repeats"]):
        started = time.perf_counter()
        rows = list(run.scan_history(keys=["k0"]))
        one_key.append(time.perf_counter() - started)
        assert len(rows) == steps and _count_points(rows) == steps, f"{len(rows)} rows of k0"
        progress("runhistory one-key reads", i + 1, args["repeats"])
    one_key_columns = []
    for i in range(args["repeats"]):
        started = time.perf_counter()
        columns = run.history_columns(keys=["k0"])
        one_key_columns.append(time.perf_counter() - started)
        assert len(columns["k0"]) == steps and None not in columns["k0"], "columns of k0"
        progress("runhistory one-key reads as columns", i + 1, args["repeats"])
    started = time.perf_counter()
    rows = list(run.scan_history())
    every_key = time.perf_counter() - started
    points = _count_points(rows)
    assert points == steps * KEYS, f"{points} points read, {steps * KEYS} logged"
    emit(
        {
            "one_key": statistics.median(one_key),
            "one_key_points": steps,
            "one_key_columns": statistics.median(one_key_columns),
            "all": every_key,
            "all_points": points,
        }
    )


def _mlflow_client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def worker_mlflow_ingest(args: dict[str, Any]) -> None:
    """MLflow: log_batch of 1,000 metrics per request into one run."""
    from mlflow.entities import Metric

    client = _mlflow_client(args["uri"])
    experiment = client.create_experiment(f"compare-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment).info.run_id
    steps = args["steps"]
    total = steps * KEYS
    batch: list[Any] = []
    sent = 0
    started = time.perf_counter()
    base = int(time.time() * 1000)
    for step in range(steps):
        for key, value in zip(KEY_NAMES, row_values(step), strict=True):
            batch.append(Metric(key, value, base + step, step))
        if len(batch) >= BATCH or step == steps - 1:
            client.log_batch(run_id, metrics=batch)
            sent += len(batch)
            batch = []
            if sent % (BATCH * 20) == 0 or sent == total:
                progress("mlflow points logged", sent, total)
    elapsed = time.perf_counter() - started
    client.set_terminated(run_id)
    emit({"run_id": run_id, "experiment": experiment, "points": sent, "seconds": elapsed})


def worker_mlflow_read(args: dict[str, Any]) -> None:
    """MLflow: get_metric_history of one key (median of repeats), then of every key."""
    client = _mlflow_client(args["uri"])
    run_id, steps = args["run_id"], args["steps"]
    one_key = []
    for i in range(args["repeats"]):
        started = time.perf_counter()
        history = client.get_metric_history(run_id, "k0")
        one_key.append(time.perf_counter() - started)
        assert len(history) == steps, f"{len(history)} points of k0, {steps} logged"
        progress("mlflow one-key reads", i + 1, args["repeats"])
    started = time.perf_counter()
    points = 0
    for i, key in enumerate(KEY_NAMES):
        points += len(client.get_metric_history(run_id, key))
        progress("mlflow keys read", i + 1, KEYS)
    every_key = time.perf_counter() - started
    assert points == steps * KEYS, f"{points} points read, {steps * KEYS} logged"
    emit(
        {
            "one_key": statistics.median(one_key),
            "one_key_points": steps,
            "all": every_key,
            "all_points": points,
        }
    )


def worker_mlflow_log_metric(args: dict[str, Any]) -> None:
    """MLflow: the cost of one log_metric call (one value), as a training loop sees it."""
    client = _mlflow_client(args["uri"])
    run_id = client.create_run(args["experiment"]).info.run_id
    costs = []
    calls = args["calls"]
    for step in range(calls):
        before = time.perf_counter_ns()
        client.log_metric(run_id, "k0", float(step), step=step)
        costs.append(time.perf_counter_ns() - before)
        if step % 20 == 0:
            progress("mlflow log_metric calls", step, calls)
    progress("mlflow log_metric calls", calls, calls)
    client.set_terminated(run_id)
    emit({"median_us": statistics.median(costs) / 1000})


WORKERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "sqlite": worker_sqlite,
    "rh-ingest": worker_rh_ingest,
    "rh-read": worker_rh_read,
    "mlflow-ingest": worker_mlflow_ingest,
    "mlflow-read": worker_mlflow_read,
    "mlflow-log-metric": worker_mlflow_log_metric,
}


# ==== processes ==============================================================================

_started: list[subprocess.Popen] = []


def spawn(command: list[str], **kwargs: Any) -> subprocess.Popen:
    """A child in a session of its own, so that ending its process group ends whatever it
    started (MLflow's server forks workers) and a Ctrl-C reaches only us."""
    env = {**os.environ, **QUIET_ENV, **kwargs.pop("env", {})}
    process = subprocess.Popen(command, start_new_session=True, env=env, **kwargs)
    _started.append(process)
    return process


def end(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the child's process group, SIGKILL after `grace` seconds."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    # The leader may be gone while processes it started still run in its group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    if process in _started:
        _started.remove(process)


def end_all() -> None:
    for process in reversed(list(_started)):
        end(process)


def run_worker(python: Path | str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run `--worker name` under `python`; its progress goes to our stderr, its result is
    the last RESULT line on its stdout."""
    process = spawn(
        [str(python), str(Path(__file__).resolve()), "--worker", name, "--args", json.dumps(args)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        output, _ = process.communicate()
    finally:
        end(process)
    results = [line for line in output.splitlines() if line.startswith(RESULT)]
    if process.returncode != 0 or not results:
        raise RuntimeError(
            f"worker {name} failed (exit {process.returncode}); see its errors above"
        )
    return json.loads(results[-1][len(RESULT) :])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_until(
    ready: Callable[[], bool], process: subprocess.Popen, log: Path, what: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{tail(log)}")
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer within {timeout:.0f} s:\n{tail(log)}")


@dataclass
class Server:
    process: subprocess.Popen
    address: str  # host:port for runhistory, http://host:port for MLflow
    log: Path
    api_key: str = ""  # runhistory: a writer key of entity "bench"


def start_runhistory(folder: Path, name: str) -> Server:
    """The runhistory server as deployed: API keys required, checked on every request."""
    port = free_port()
    log = folder / f"{name}.log"
    db = str(folder / f"{name}.db")
    cli = [sys.executable, "-m", "runhistory.service.cli"]
    created = subprocess.run(
        [*cli, "keys", "--db", db, "create", "--entity", "bench"],
        capture_output=True,
        text=True,
        check=True,
    )
    process = spawn(
        [*cli, "serve", "--db", db, "--address", f"127.0.0.1:{port}"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=folder,
    )
    return Server(process, f"127.0.0.1:{port}", log, created.stdout.strip().splitlines()[-1])


def start_mlflow(folder: Path, defaults: bool) -> Server:
    """The MLflow server, lean (see MLFLOW_SERVER_ENV) unless `defaults`."""
    port = free_port()
    log = folder / "mlflow-server.log"
    (folder / "mlflow-artifacts").mkdir()
    process = spawn(
        [
            str(MLFLOW_VENV / "bin" / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--default-artifact-root",
            str(folder / "mlflow-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *([] if defaults else ["--workers", str(MLFLOW_WORKERS)]),
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=folder,
        env={} if defaults else MLFLOW_SERVER_ENV,
    )
    return Server(process, f"http://127.0.0.1:{port}", log)


def runhistory_ready(server: Server) -> Callable[[], bool]:
    return lambda: "serving on" in server.log.read_text(errors="replace")


def mlflow_ready(server: Server) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{server.address}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    return ready


# ==== memory =================================================================================


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes (empty once it is gone)."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, amount, _unit = line.split()
                    values[name[:-1]] = int(amount) * 1024
    except OSError:
        pass
    return values


def _tree(pid: int) -> list[int]:
    """The process and its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo.extend(int(child) for child in children.read().split())
    return found


@dataclass
class MemorySampler:
    """Samples the VmRSS of a process (summed over its descendants) every `interval`."""

    pid: int
    interval: float = 0.1
    samples: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def rss(self) -> int:
        return sum(_status(pid).get("VmRSS", 0) for pid in _tree(self.pid))

    def hwm(self) -> int:
        """The peak resident size of the process itself (not its children)."""
        return _status(self.pid).get("VmHWM", 0)

    def __enter__(self) -> MemorySampler:
        def sample() -> None:
            while not self._stop.wait(self.interval):
                self.samples.append(self.rss())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)


# ==== MLflow's venv ==========================================================================


def pinned_mlflow() -> str:
    for line in MLFLOW_REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("mlflow=="):
            return line.split("==", 1)[1]
    raise RuntimeError(f"{MLFLOW_REQUIREMENTS} pins no mlflow version (mlflow==X.Y.Z)")


def installed_mlflow() -> str | None:
    if not MLFLOW_PYTHON.exists():
        return None
    probe = subprocess.run(
        [str(MLFLOW_PYTHON), "-c", "import importlib.metadata as m; print(m.version('mlflow'))"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_mlflow() -> str:
    version = pinned_mlflow()
    if installed_mlflow() == version and (MLFLOW_VENV / "bin" / "mlflow").exists():
        say(f"[1/4] MLflow {version} already in {MLFLOW_VENV.relative_to(REPO)}: skipping install")
        return version
    say(f"[1/4] installing MLflow {version} into {MLFLOW_VENV.relative_to(REPO)} (a few minutes)")
    if not MLFLOW_PYTHON.exists():
        subprocess.run(["python3.11", "-m", "venv", str(MLFLOW_VENV)], check=True)
    # pip's own progress (one line per package, download bars) goes to our stderr.
    for command in (
        [str(MLFLOW_PYTHON), "-m", "pip", "install", "--upgrade", "pip"],
        [str(MLFLOW_PYTHON), "-m", "pip", "install", "-r", str(MLFLOW_REQUIREMENTS)],
    ):
        subprocess.run(command, check=True, stdout=sys.stderr)
    if installed_mlflow() != version:
        raise RuntimeError(f"MLflow {version} is still not importable from {MLFLOW_PYTHON}")
    return version


# ==== the comparison =========================================================================


@dataclass
class Line:
    figure: str
    ours: str
    baseline: str
    ratio: str
    target: str
    ok: bool | None  # None: information only

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("ok" if self.ok else "MISSED")


def rate(points: int, seconds: float) -> float:
    return points / seconds if seconds > 0 else float("inf")


def mb(size: int) -> str:
    return f"{size / 2**20:,.0f} MB"


def table(lines: list[Line]) -> str:
    header = Line("figure", "runhistory", "baseline", "ratio", "target", None)
    rows = [header, *lines]
    widths = [
        max(len(getattr(line, name)) for line in rows)
        for name in ("figure", "ours", "baseline", "ratio", "target")
    ]

    def render(line: Line, verdict: str) -> str:
        cells = (line.figure, line.ours, line.baseline, line.ratio, line.target)
        text = "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )
        return f"{text}  {verdict}".rstrip()

    out = [render(header, "ok/MISSED"), "-" * (sum(widths) + 2 * len(widths) + 9)]
    out += [render(line, line.verdict) for line in lines]
    return "\n".join(out)


def compare(
    sizes: Sizes, mlflow_version: str, folder: Path, mlflow_defaults: bool
) -> tuple[list[Line], list[str]]:
    points = sizes.steps * KEYS
    notes: list[str] = []
    start_load = load()

    say("[2/4] starting the MLflow and runhistory servers (fresh SQLite files on loopback)")
    mlflow = start_mlflow(folder, mlflow_defaults)
    ours = start_runhistory(folder, "runhistory")
    wait_until(runhistory_ready(ours), ours.process, ours.log, "the runhistory server", 60)
    say(f"    runhistory serving on {ours.address} (pid {ours.process.pid})")
    wait_until(mlflow_ready(mlflow), mlflow.process, mlflow.log, "the MLflow server", 180)
    say(f"    MLflow {mlflow_version} serving on {mlflow.address} (pid {mlflow.process.pid})")

    say(f"[3/4] workloads: {points:,} points = {sizes.steps:,} steps x {KEYS} keys, one run")
    say("  raw SQLite ceiling (executemany, 1,000 points per transaction, WAL, primary key)")
    sqlite, sqlite_normal = (
        run_worker(
            sys.executable,
            "sqlite",
            {"db": str(folder / f"raw-{sync}.db"), "steps": sizes.steps, "synchronous": sync},
        )
        for sync in ("FULL", "NORMAL")
    )

    say("  runhistory ingest through the SDK")
    rh_in = run_worker(
        sys.executable,
        "rh-ingest",
        {
            "address": ours.address,
            "api_key": ours.api_key,
            "steps": sizes.steps,
            "run_id": "ingest",
            "prebuild": True,
            "time_calls": True,
        },
    )
    say("  MLflow ingest through log_batch (1,000 metrics per request)")
    with MemorySampler(mlflow.process.pid) as mlflow_memory:
        ml_in = run_worker(
            MLFLOW_PYTHON, "mlflow-ingest", {"uri": mlflow.address, "steps": sizes.steps}
        )

    say("  runhistory reads")
    rh_read = run_worker(
        sys.executable,
        "rh-read",
        {
            "address": ours.address,
            "api_key": ours.api_key,
            "path": rh_in["path"],
            "steps": sizes.steps,
            "repeats": sizes.read_repeats,
        },
    )
    say("  MLflow reads (get_metric_history per key)")
    ml_read = run_worker(
        MLFLOW_PYTHON,
        "mlflow-read",
        {
            "uri": mlflow.address,
            "run_id": ml_in["run_id"],
            "steps": sizes.steps,
            "repeats": sizes.read_repeats,
        },
    )
    say("  MLflow log_metric cost, one call per value")
    ml_metric = run_worker(
        MLFLOW_PYTHON,
        "mlflow-log-metric",
        {"uri": mlflow.address, "experiment": ml_in["experiment"], "calls": sizes.log_metric_calls},
    )
    end(mlflow.process)
    end(ours.process)

    memory_points = sizes.memory_steps * KEYS
    say(f"  runhistory server memory while ingesting {memory_points:,} points (a fresh server)")
    fresh = start_runhistory(folder, "memory")
    wait_until(runhistory_ready(fresh), fresh.process, fresh.log, "the runhistory server", 60)
    idle = MemorySampler(fresh.process.pid).rss()
    with MemorySampler(fresh.process.pid) as memory:
        rh_mem = run_worker(
            sys.executable,
            "rh-ingest",
            {
                "address": fresh.address,
                "api_key": fresh.api_key,
                "steps": sizes.memory_steps,
                "run_id": "memory",
                "prebuild": False,
                "time_calls": False,
            },
        )
    hwm = memory.hwm()
    after = memory.rss()
    end(fresh.process)

    say("[4/4] done")
    rh_rate = rate(points, rh_in["visible"])
    ml_rate = rate(ml_in["points"], ml_in["seconds"])
    sq_rate = rate(sqlite["points"], sqlite["seconds"])
    normal_rate = rate(sqlite_normal["points"], sqlite_normal["seconds"])
    lines = [
        Line(
            f"ingest {points / 1e6:g}M points, points/s",
            f"{rh_rate:,.0f}",
            f"{ml_rate:,.0f}",
            f"{rh_rate / ml_rate:,.1f}x",
            ">= 250,000, >= 35x",
            rh_rate >= 250_000 and rh_rate / ml_rate >= 35,
        ),
        Line(
            "ingest vs raw SQLite (with primary key)",
            f"{rh_rate:,.0f}",
            f"{sq_rate:,.0f}",
            f"{rh_rate / sq_rate:.2f}",
            ">= 0.50",
            rh_rate / sq_rate >= 0.5,
        ),
    ]
    one_key = f"read one key ({sizes.steps / 1e3:g}k points)"
    for what, key, theirs_key, count in (
        (f"{one_key}, points/s", "one_key", "one_key", "one_key_points"),
        (f"{one_key} as columns", "one_key_columns", "one_key", "one_key_points"),
        (f"read whole history ({points / 1e6:g}M points), points/s", "all", "all", "all_points"),
    ):
        ours_rate = rate(rh_read[count], rh_read[key])
        theirs = rate(ml_read[count], ml_read[theirs_key])
        lines.append(
            Line(
                what,
                f"{ours_rate:,.0f}",
                f"{theirs:,.0f}",
                f"{ours_rate / theirs:,.1f}x",
                ">= 1,000,000, >= 50x",
                ours_rate >= 1_000_000 and ours_rate / theirs >= 50,
            )
        )
    log_us = rh_in["log_median_us"]
    lines += [
        Line(
            "SDK log() of a 10-key row, median",
            f"{log_us:.1f} us",
            f"{ml_metric['median_us']:,.0f} us",
            f"{ml_metric['median_us'] / log_us:,.0f}x",
            "<= 20 us",
            log_us <= 20,
        ),
        Line(
            f"server memory ingesting {memory_points / 1e6:g}M points, peak",
            mb(max(hwm, memory.peak)),
            mb(mlflow_memory.peak),
            "-",
            "<= 300 MB",
            max(hwm, memory.peak) <= 300 * 2**20,
        ),
    ]

    notes += [
        f"runhistory ingest: log() loop {rh_in['logged']:.2f} s, finish() returned at "
        f"{rh_in['acknowledged']:.2f} s ({rate(points, rh_in['acknowledged']):,.0f} points/s "
        f"acknowledged), last row readable at {rh_in['visible']:.2f} s; "
        f"log() p99 {rh_in['log_p99_us']:.1f} us",
        f"MLflow ingest: {ml_in['seconds']:.2f} s for {ml_in['points']:,} points in "
        f"{ml_in['points'] // BATCH:,} log_batch requests",
        f"raw SQLite, WAL, primary key: synchronous=FULL (every commit durable, as "
        f"runhistory's read models; the ratio's baseline) {sqlite['seconds']:.2f} s; "
        f"synchronous=NORMAL {normal_rate:,.0f} points/s (runhistory at "
        f"{rh_rate / normal_rate:.2f} of it)",
        f"reads: runhistory one key {rh_read['one_key'] * 1000:,.0f} ms as rows, "
        f"{rh_read['one_key_columns'] * 1000:,.0f} ms as columns (`history_columns`; medians "
        f"of {sizes.read_repeats}), whole history {rh_read['all']:.2f} s; MLflow one key "
        f"{ml_read['one_key']:.2f} s, whole history {ml_read['all']:.2f} s ({KEYS} keys)",
        f"log() baseline: one MLflow log_metric() call (one value), median of "
        f"{sizes.log_metric_calls}",
        (
            "MLflow server: its defaults (--mlflow-defaults: 4 workers, GenAI job runner)"
            if mlflow_defaults
            else f"MLflow server: --workers {MLFLOW_WORKERS}, "
            f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false (the lean tracking server, the stronger "
            f"baseline on 2 cores; --mlflow-defaults runs its defaults)"
        )
        + "; clients with telemetry off",
        f"memory: runhistory server VmHWM {mb(hwm)}, sampled VmRSS peak {mb(memory.peak)} "
        f"(idle {mb(idle)}, after {mb(after)}); {memory_points:,} points in "
        f"{rh_mem['visible']:.1f} s = {rate(memory_points, rh_mem['visible']):,.0f} points/s. "
        f"Baseline: MLflow server processes summed, sampled VmRSS peak during its "
        f"{ml_in['points'] / 1e6:g}M-point ingest",
        f"load average (1, 5, 15 min) at the start {start_load}, at the end {load()}: other "
        f"work on the machine skews every figure",
    ]
    return lines, notes


def interrupted(*_: object) -> None:
    raise KeyboardInterrupt


def load() -> str:
    with open("/proc/loadavg") as loadavg:
        return " ".join(loadavg.read().split()[:3])


def orchestrate(quick: bool, mlflow_defaults: bool) -> int:
    sizes = QUICK if quick else FULL
    # SIGTERM ends us like Ctrl-C does: through the `finally` that ends every child.
    signal.signal(signal.SIGTERM, interrupted)
    # Also when started in the background by a shell, which ignores SIGINT for it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        mlflow_version = ensure_mlflow()
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="runhistory-compare-") as tmp:
            try:
                lines, notes = compare(sizes, mlflow_version, Path(tmp), mlflow_defaults)
            finally:
                end_all()
    except KeyboardInterrupt:
        say("\ninterrupted: every process this benchmark started has been ended")
        return 130
    except Exception as error:
        say(f"\nerror: {error}")
        return 1
    mode = "--quick" if quick else "full size"
    print(
        f"\nrunhistory vs MLflow {mlflow_version} (tracking server, SQLite backend), {mode}, "
        f"{os.cpu_count()} cores, {time.perf_counter() - started:.0f} s"
    )
    print(table(lines))
    print()
    for note in notes:
        print(f"- {note}")
    return 0 if all(line.ok is not False for line in lines) else 1


def ensure_runhistory() -> None:
    """Run under the repository's venv when the current python lacks runhistory."""
    if importlib.util.find_spec("runhistory") is not None:
        return
    python = REPO / ".venv" / "bin" / "python"
    if python.exists() and Path(sys.executable).resolve() != python.resolve():
        os.execv(str(python), [str(python), *sys.argv])
    raise SystemExit("runhistory is not importable: run with the venv that has it installed")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100k-point ingest, 1M for memory")
    parser.add_argument(
        "--mlflow-defaults",
        action="store_true",
        help="run the MLflow server with its default 4 workers and job runner",
    )
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--args", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        WORKERS[args.worker](json.loads(args.args))
        return 0
    ensure_runhistory()
    return orchestrate(args.quick, args.mlflow_defaults)


if __name__ == "__main__":
    raise SystemExit(main())
