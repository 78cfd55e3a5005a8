"""What this install of runhistory can run: the client always, the server only with the
`server` extra on Python 3.11 or later.

`pip install runhistory` is the client: the SDK and the CLI's read commands, on Python 3.10
and later. `pip install 'runhistory[server]'` adds the server. The CLI's server commands
call `require_server` first, so on a client install they stop with one line saying what to
install instead of an ImportError; the message lives here only.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec

from runhistory.domain.errors import FailedPrecondition

SERVER_EXTRA = "runhistory[server]"
SERVER_PYTHON = (3, 11)
# The import names of the server extra's packages (pyproject.toml).
SERVER_MODULES = (
    "eventsourcing",
    "eventsourcing_sqlalchemy",
    "sqlalchemy",
    "pydantic",
    "grpc_health",
    "grpc_reflection",
    "plotly",
)


class ServerNotInstalled(FailedPrecondition):
    """A server command on an install without the server."""

    reason = "SERVER_NOT_INSTALLED"


def missing_server_modules() -> list[str]:
    """The server's packages this environment cannot import."""
    return [name for name in SERVER_MODULES if find_spec(name) is None]


def server_problem() -> str | None:
    """Why this environment cannot run the server, or None when it can."""
    if sys.version_info < SERVER_PYTHON:
        running = ".".join(map(str, sys.version_info[:3]))
        needed = ".".join(map(str, SERVER_PYTHON))
        return (
            f"the runhistory server needs Python {needed} or later, and this is Python "
            f"{running}: install '{SERVER_EXTRA}' into a Python {needed}+ environment "
            "(the client, `import runhistory` and the read commands, works here)"
        )
    missing = missing_server_modules()
    if missing:
        return (
            f"the runhistory server is not installed here ({', '.join(missing)} missing): "
            f"pip install '{SERVER_EXTRA}'"
        )
    return None


def require_server(command: str) -> None:
    """Raise ServerNotInstalled, a one-line refusal, unless this environment can run the
    server for `runhistory COMMAND`."""
    problem = server_problem()
    if problem is not None:
        raise ServerNotInstalled(f"`runhistory {command}` runs the server; {problem}")


__all__ = ["SERVER_EXTRA", "ServerNotInstalled", "require_server", "server_problem"]
