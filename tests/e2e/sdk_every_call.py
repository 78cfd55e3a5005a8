"""Every SDK call, run as a script in a fresh interpreter against a server in another process
(RUNHISTORY_ADDRESS, RUNHISTORY_API_KEY and RUNHISTORY_ENTITY name it). It prints, as JSON,
the server-side modules loaded by `import runhistory` and by the calls (both must be empty)
and what the calls returned, for test_sdk_install.py to check.
"""

from __future__ import annotations

import json
import sys

# What only the server may load, beside the server's packages: runhistory's server side.
SERVER_SIDE_OF_RUNHISTORY = (
    "runhistory.service",
    "runhistory.projections",
    "runhistory.domain.run",
    "runhistory.domain.summary",
)


# `import grpc` itself imports the (empty) top packages grpc_health and grpc_reflection
# where they are installed, to alias them as grpc.health and grpc.reflection; their modules
# proper (grpc_health.v1, ...) are the server's.
IMPORTED_BY_GRPC = ("grpc_health", "grpc_reflection")


def server_side_loaded() -> list[str]:
    from runhistory.extras import SERVER_MODULES

    server_side = (*SERVER_MODULES, *SERVER_SIDE_OF_RUNHISTORY)
    return sorted(
        name
        for name in sys.modules
        if name not in IMPORTED_BY_GRPC
        and any(name == side or name.startswith(side + ".") for side in server_side)
    )


def main() -> None:
    import runhistory

    after_import = server_side_loaded()

    run = runhistory.init(project="every", config={"lr": 0.1}, name="all", tags=["t"])
    for i in range(10):
        run.log({"x": i, "nested": {"y": i / 2}, "s": f"#{i}"})
    run.log({"x": 10}, step=20, commit=True)
    run.config.update({"batch": 32})
    run.config["more"] = {"a": [1, 2]}
    run.summary["best"] = 1.0
    run.define_metric("x", summary="min,max")
    run.log_artifact("model", "model", digest="sha256:0", size=1, uri="file:///m")
    run.use_artifact("data", "dataset")
    outcome: dict[str, object] = {"name": run.name, "summary": run.summary.as_dict()}
    run.flush()
    run.finish()
    try:
        run.log({"x": 1})
    except runhistory.RunNotRunning as error:
        outcome["finished"] = error.reason

    stale = runhistory.init(project="every", id=run.id, resume="must")
    rewound = runhistory.init(project="every", resume_from=f"{run.id}?_step=5", reinit="create_new")
    stale.log({"x": -1})
    try:
        stale.finish()
    except runhistory.Superseded as error:
        outcome["superseded"] = error.reason
    rewound.log({"x": 100})
    rewound.finish()
    fork = runhistory.init(project="every", fork_from=f"{run.id}?_step=3")
    fork.log({"x": 1000})
    fork.finish()

    # Offline, then `runhistory sync`'s upload (sdk/sync.py): the client alone.
    import tempfile
    from pathlib import Path

    from runhistory.sync import sync_folder

    offline = runhistory.init(project="every", mode="offline", dir=tempfile.mkdtemp())
    offline.log({"x": 1})
    offline.finish()
    outcome["synced"] = sync_folder(Path(offline.dir)).sent

    api = runhistory.Api()
    read = api.run(run.path)
    read.refresh()
    outcome.update(
        rows=len(list(read.scan_history())),
        keys=[row["x"] for row in read.scan_history(keys=["x"], min_step=4)],
        columns=read.history_columns(keys=["x"])["x"],
        archived=len(list(read.scan_history(version=1))),
        own=len(list(api.run(fork.path).scan_history(own_only=True))),
        config=read.config,
        summary=read.summary,
        versions=[v["version"] for v in read.versions()],
        descendants=len(read.lineage()["descendants"]),
        artifacts=[a["name"] for a in read.artifacts()],
        events=len(list(read.events())),
        as_of=len(read.as_of(position=3)["rows"]),
        runs=len(api.runs("every")),
        log=len(list(api.events())),
        rebuilt=list(api.rebuild())[-1]["equal_to_live"],
    )
    try:
        api.run("every/nosuchrun")
    except runhistory.NotFound as error:
        outcome["missing"] = error.reason
    api.close()
    outcome.update(after_import=after_import, after_calls=server_side_loaded())
    print(json.dumps(outcome))


if __name__ == "__main__":
    main()
