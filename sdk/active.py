"""The module-level surface of `wandb`: `runhistory.log`, `finish`, `define_metric`,
`config`, `summary` and `run` act on the active run, the one the last `init` started.

Before `init` and after that run's `finish`, `runhistory.run` is None, `runhistory.config`
and `runhistory.summary` are placeholders that say `init` comes first (as W&B's do), and
`log`, `define_metric` raise the same.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NoReturn

from runhistory.domain.errors import FailedPrecondition, InvalidArgument
from runhistory.writer import Metric, Run, global_run


def _required(what: str) -> NoReturn:
    raise FailedPrecondition(f"call runhistory.init() before {what}")


def _run(what: str) -> Run:
    run = global_run()
    if run is None:
        _required(what)
    return run


def log(data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
    """`runhistory.run.log(...)`: log to the active run."""
    _run("runhistory.log()").log(data, step=step, commit=commit)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    """Finish the active run (nothing to do without one, as in W&B)."""
    run = global_run()
    if run is not None:
        run.finish(exit_code, quiet)


def define_metric(
    name: str,
    step_metric: str | Metric | None = None,
    step_sync: bool | None = None,
    hidden: bool | None = None,
    summary: str | None = None,
    goal: str | None = None,
    overwrite: bool | None = None,
) -> Metric:
    """`runhistory.run.define_metric(...)` on the active run."""
    return _run("runhistory.define_metric()").define_metric(
        name, step_metric, step_sync, hidden, summary, goal, overwrite
    )


def login(
    key: str | None = None,
    relogin: bool | None = None,
    host: str | None = None,
    force: bool | None = None,
    timeout: int | None = None,
    verify: bool = False,
    referrer: str | None = None,
    prompt: bool = True,
    anonymous: Any = None,
) -> bool:
    """Set the API key (`key`) and the server (`host`, `host:port` or W&B's
    `http://host:port`) that `init` and `Api` use in this process, by setting
    $RUNHISTORY_API_KEY and $RUNHISTORY_ADDRESS, which child processes inherit too. Nothing
    is stored on disk and the key is not checked until it is used (the other arguments are
    W&B's and have no effect). Returns True, as W&B's does once logged in."""
    if key is not None:
        if not isinstance(key, str) or not key.strip():
            raise InvalidArgument("login(key=...) is an API key: a non-empty string")
        os.environ["RUNHISTORY_API_KEY"] = key.strip()
    if host is not None:
        if not isinstance(host, str) or not host.strip():
            raise InvalidArgument("login(host=...) is a server address: 'host:port'")
        address = host.strip()
        if "://" in address:
            address = address.split("://", 1)[1]
        os.environ["RUNHISTORY_ADDRESS"] = address.rstrip("/")
    return True


class PreInit:
    """`runhistory.config` or `summary` before `init`: every use says init comes first."""

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def _refuse(self, what: str) -> NoReturn:
        _required(f"{self._name}{what}")

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):  # copy, pickle and IPython probe these
            raise AttributeError(key)
        self._refuse(f".{key}")

    def __setattr__(self, key: str, value: Any) -> None:
        self._refuse(f".{key}")

    def __getitem__(self, key: str) -> Any:
        self._refuse(f"[{key!r}]")

    def __setitem__(self, key: str, value: Any) -> None:
        self._refuse(f"[{key!r}]")

    def __repr__(self) -> str:
        return f"<{self._name}: call runhistory.init() first>"


CONFIG_PLACEHOLDER = PreInit("runhistory.config")
SUMMARY_PLACEHOLDER = PreInit("runhistory.summary")


def module_attribute(name: str) -> Any:
    """`runhistory.run`, `config` and `summary`, read when asked: they follow the active
    run. Raises AttributeError for any other name."""
    run = global_run()
    if name == "run":
        return run
    if name == "config":
        return CONFIG_PLACEHOLDER if run is None else run.config
    if name == "summary":
        return SUMMARY_PLACEHOLDER if run is None else run.summary
    raise AttributeError(f"module 'runhistory' has no attribute {name!r}")


__all__ = ["define_metric", "finish", "log", "login", "module_attribute"]
