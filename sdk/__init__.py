"""runhistory: open, event-sourced run history for machine-learning experiments.

import runhistory as wandb

wandb.init(project="mnist", config={"lr": 0.1})
wandb.log({"loss": 0.5})
if wandb.run is not None:
    wandb.run.summary["best"] = 0.5
wandb.finish()
rewound = wandb.init(project="mnist", resume_from=f"{rewound_id}?_step=0")

`runhistory.run` is the active run (None before `init` and after `finish`);
`runhistory.config` and `runhistory.summary` are its config and summary.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from runhistory.active import define_metric, finish, log, login, module_attribute
from runhistory.api import Api, ApiRun, Runs
from runhistory.client import Cancelled, ConnectionFailed
from runhistory.domain.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    RunHistoryError,
    RunNotRunning,
    Superseded,
    Unauthenticated,
)
from runhistory.writer import Config, Metric, Run, Settings, Summary, init

# W&B's base error class, for scripts that catch `wandb.Error`.
Error = RunHistoryError


def __getattr__(name: str) -> Any:
    # `run`, `config` and `summary` follow the active run, so they are read when asked.
    return module_attribute(name)


__all__ = [
    "Aborted",
    "AlreadyExists",
    "Api",
    "ApiRun",
    "Cancelled",
    "Config",
    "ConnectionFailed",
    "DeadlineExceeded",
    "Error",
    "FailedPrecondition",
    "InvalidArgument",
    "Metric",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Run",
    "RunHistoryError",
    "RunNotRunning",
    "Runs",
    "Settings",
    "Summary",
    "Superseded",
    "Unauthenticated",
    "__version__",
    "define_metric",
    "finish",
    "init",
    "log",
    "login",
]
