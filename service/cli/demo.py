"""The demo's script: the W&B "rewind a run" example through the SDK, printed as it goes.
`runhistory demo` runs it against a server of its own (see `server_commands.cmd_demo`)."""

from __future__ import annotations

import json
import math
from typing import Any

import runhistory
from runhistory.api import ApiRun
from runhistory.service.cli.render import lineage_lines


def rewind_and_fork(address: str, api_key: str) -> dict[str, str]:
    """The W&B "rewind a run" page's scripts, through the SDK and the server. Returns the
    paths of the runs it made."""
    run1 = runhistory.init(
        entity="demo", project="rewind", config={"lr": 0.01}, address=address, api_key=api_key
    )
    for i in range(300):
        run1.log({"metric": i})
    run1.finish()
    path = f"demo/rewind/{run1.id}"
    print(f"run {path}: logged metric=i for steps 0..299 and finished")

    run2 = runhistory.init(
        entity="demo",
        project="rewind",
        resume_from=f"{run1.id}?_step=200",
        address=address,
        api_key=api_key,
    )
    for i in range(200, 300):
        if i < 250:
            run2.log({"metric": i, "step": i})
        else:  # the W&B example's subtle spikes from step 250 on
            run2.log({"metric": round(i + 2 * math.sin(i / 3.0), 3), "step": i})
        run2.log({"additional_metric": round(i * 1.1, 3), "step": i})
    run2.finish()

    with runhistory.Api(address=address, api_key=api_key) as api:
        rewound = api.run(path)
        print(
            f"rewound {path} to step 200 (now version {rewound.version}; version 1 is "
            "archived) and logged 200 more rows"
        )

        fork = runhistory.init(
            entity="demo",
            project="rewind",
            fork_from=f"{run1.id}?_step=300",
            address=address,
            api_key=api_key,
        )
        for i in range(301, 311):
            fork.log({"metric": i * 3})
        fork.finish()
        forked = api.run(f"demo/rewind/{fork.id}")
        print(f"forked {forked.path} from {path}?_step=300 and logged 10 rows\n")
        _show(rewound, forked)
    return {"rewound": path, "fork": str(forked.path)}


def _show(rewound: ApiRun, forked: ApiRun) -> None:
    _show_history(list(rewound.scan_history()), "history of the rewound run")
    _show_history(list(rewound.scan_history(version=1)), "archived version 1")
    _show_history(list(forked.scan_history()), "history of the fork (inherited rows first)")

    print(f"\nversions of {rewound.path}")
    for v in rewound.versions():
        status = f"archived, rewound to step {v['rewound_to_step']}" if v["archived"] else "live"
        print(
            f"  v{v['version']}: {v['rows']} rows, {v['state']}, {status}; "
            f"summary {json.dumps(v['summary'])}"
        )

    print("\nlineage")
    for line in lineage_lines(rewound.lineage()):
        print(f"  {line}")
    print(f"\nsummary of the fork: {json.dumps(forked.summary)}")
    link = forked.forked_from
    assert link is not None  # a fork of run1
    print(f"forked from: {link['run']} version {link['version']} at step {link['step']}")


def _show_history(rows: list[dict[str, Any]], title: str) -> None:
    print(f"{title}: {len(rows)} rows, steps {rows[0]['_step']}..{rows[-1]['_step']}")
    shown = sorted({*range(2), *range(199, 203), *range(len(rows) - 2, len(rows))})
    previous = -1
    for index in shown:
        if not 0 <= index < len(rows):
            continue
        if index != previous + 1:
            print("  ...")
        row = rows[index]
        values = {k: v for k, v in row.items() if not k.startswith("_")}
        print(f"  _step {row['_step']:>3}  {json.dumps(values)}")
        previous = index
