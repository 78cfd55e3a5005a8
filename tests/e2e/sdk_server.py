"""Servers for the SDK's tests, with a fresh database and an admin API key each.

Two kinds, behind one interface:
- `runhistory serve` in another process, from the Python that $RUNHISTORY_TEST_SERVER_PYTHON
  names (default: this one). This is how the SDK's tests run on a client-only install, e.g.
  Python 3.10 or 3.13 against a server in the 3.11 venv.
- A server in this process, where the server is installed and no other Python is named:
  starting one takes milliseconds instead of a second, which the 3.11 suite's many
  fresh servers add up.

This module imports nothing of the server at the top, so it loads on a client install; its
fixtures replace conftest's there (the client runs use `pytest --noconftest`). A test module
takes them with `from sdk_server import server_fixture, ...`: each is named without the
`_fixture`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runhistory.extras import server_problem

SERVER_PYTHON = "RUNHISTORY_TEST_SERVER_PYTHON"
ENTITY = "your_entity_name"
# `runhistory` the console script runs exactly this.
CLI = "import sys; from runhistory.service.cli import main; sys.exit(main())"
START_SECONDS = 60.0


def server_python() -> str:
    """The Python whose install runs the out-of-process servers."""
    return os.environ.get(SERVER_PYTHON) or sys.executable


def in_process() -> bool:
    """Whether the tests' servers run in this process: no other Python was named and the
    server is installed here."""
    return not os.environ.get(SERVER_PYTHON) and server_problem() is None


class SdkServer(ABC):
    """A running server the SDK can reach at `address` with `api_key` (an admin key of
    `entity`)."""

    address: str
    api_key: str
    entity: str

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def restart(self) -> None:
        """Start again on the same address and database (after `stop`)."""


class ServerProcess(SdkServer):
    """`runhistory serve` in a process of its own, on a free port."""

    def __init__(
        self,
        database: str,
        logs: Path,
        entity: str = ENTITY,
        python: str | None = None,
        limits: dict[str, int] | None = None,
        serve_args: tuple[str, ...] = (),
    ) -> None:
        self.database = database
        self.entity = entity
        # Size limits as `serve` flags: max_row_bytes=100 is --max-row-bytes 100.
        self.limit_flags = [
            part
            for name, value in (limits or {}).items()
            for part in ("--" + name.replace("_", "-"), str(value))
        ]
        self.python = python or server_python()
        self.serve_args = serve_args  # more options of `runhistory serve`
        # Run before the Python command line, e.g. `setpriv ...` to drop privileges.
        self.prefix: list[str] = []
        self.logs = logs  # the server's stdout and stderr
        self.process: subprocess.Popen[bytes] | None = None
        self.api_key = self._create_key()
        self.address = self._serve("127.0.0.1:0")

    def _command(self, *args: str) -> list[str]:
        return [*self.prefix, self.python, "-c", CLI, *args]

    def _create_key(self) -> str:
        create = ("create", "--entity", self.entity, "--role", "admin", "--label", "tests")
        made = subprocess.run(
            self._command("keys", "--db", self.database, *create),
            capture_output=True,
            text=True,
            timeout=START_SECONDS,
        )
        if made.returncode != 0:
            raise RuntimeError(f"`runhistory keys create` failed: {made.stderr.strip()}")
        return made.stdout.strip().splitlines()[-1]

    def _serve(self, address: str) -> str:
        out, err = self.logs / "stdout", self.logs / "stderr"
        with out.open("wb") as stdout, err.open("ab") as stderr:
            self.process = subprocess.Popen(
                self._command(
                    "serve",
                    "--db",
                    self.database,
                    "--address",
                    address,
                    *self.limit_flags,
                    *self.serve_args,
                ),
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            found = re.search(rb"serving on (\S+?),", out.read_bytes())
            if found:
                return found.group(1).decode()
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"`runhistory serve` did not start from {self.python}: "
            f"{err.read_text(errors='replace').strip()[-2000:]}"
        )

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # it stops gracefully, like `serve` under systemd
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self._serve(self.address)

    @property
    def stderr(self) -> str:
        return (self.logs / "stderr").read_text(errors="replace")


class InProcessServer(SdkServer):
    """The gRPC server in this process (the full install only)."""

    def __init__(self, database: str, entity: str = ENTITY, **settings: Any) -> None:
        from runhistory.service.auth import Role

        self.database = database
        self.entity = entity
        self.settings = settings
        running = self._start("127.0.0.1:0")
        self.address = running.address
        _, self.api_key = running.keys.create(entity, Role.ADMIN, "SDK tests")

    def _start(self, address: str) -> Any:
        from runhistory.service.bootstrap import start
        from runhistory.service.settings import Settings

        self.running = start(Settings(db=self.database, **self.settings), address)
        return self.running

    def stop(self) -> None:
        self.running.stop()

    def restart(self) -> None:
        self._start(self.address)


def start_test_server(database: str, logs: Path, **settings: Any) -> SdkServer:
    """A server on `database` with the given settings, in this process when it can be.
    In another process, `runhistory serve` takes the size limits (`max_...`) as flags; a
    test that sets other settings skips there."""
    if in_process():
        return InProcessServer(database, **settings)
    others = sorted(name for name in settings if not name.startswith("max_"))
    if others:
        pytest.skip(
            f"server settings {others} are set in this process only; the server "
            f"runs in another ({server_python()})"
        )
    return ServerProcess(database, logs, limits=settings)


def use(server: SdkServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the SDK of this process at `server`, as a user's environment would, with no
    run active: one an earlier test left open would be what `init` returns (as W&B's)."""
    from runhistory import writer

    monkeypatch.setattr(writer, "_active_runs", [])
    monkeypatch.setattr(writer, "_global_run", None)
    monkeypatch.setenv("RUNHISTORY_ADDRESS", server.address)
    monkeypatch.setenv("RUNHISTORY_API_KEY", server.api_key)
    monkeypatch.setenv("RUNHISTORY_ENTITY", server.entity)
    monkeypatch.delenv("RUNHISTORY_PROJECT", raising=False)
    # Runs' spools go to a folder of the test's, not the working folder.
    monkeypatch.setenv("RUNHISTORY_DIR", tempfile.mkdtemp(prefix="runhistory-spool-"))


# ---- fixtures ----------------------------------------------------------------------------


def backends() -> list[str]:
    # PostgreSQL schemas are made with SQLAlchemy, which only the full install has.
    return ["sqlite-file", "postgres"] if server_problem() is None else ["sqlite-file"]


@pytest.fixture(name="backend", params=backends())
def backend_fixture(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(name="database")
def database_fixture(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh database for the server: a SQLite file, or a PostgreSQL schema of its own."""
    if backend == "postgres":
        from conftest import postgres_schema_url

        yield from postgres_schema_url()
    else:
        yield str(tmp_path / "runhistory.db")


@pytest.fixture(name="server")
def server_fixture(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SdkServer]:
    """A server with a fresh database, which the SDK of this process uses by default."""
    running = start_test_server(database, tmp_path)
    use(running, monkeypatch)
    yield running
    running.stop()


@pytest.fixture(name="server_process")
def server_process_fixture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ServerProcess]:
    """`runhistory serve` in another process, whatever this one has installed."""
    running = ServerProcess(str(tmp_path / "runhistory.db"), tmp_path)
    use(running, monkeypatch)
    yield running
    running.stop()
