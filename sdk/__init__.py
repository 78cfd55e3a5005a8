"""runhistory: open, event-sourced run history for machine-learning experiments.

import runhistory as wandb

run = wandb.init(project="mnist", config={"lr": 0.1})
run.log({"loss": 0.5})
run.finish()
rewound = wandb.init(project="mnist", resume_from=f"{run.id}?_step=0")
"""

__version__ = "0.1.0"

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
from runhistory.writer import Config, Run, Summary, init

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Api",
    "ApiRun",
    "Cancelled",
    "Config",
    "ConnectionFailed",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Run",
    "RunHistoryError",
    "RunNotRunning",
    "Runs",
    "Summary",
    "Superseded",
    "Unauthenticated",
    "__version__",
    "init",
]
