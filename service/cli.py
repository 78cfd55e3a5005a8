"""The `runhistory` command line: `demo` and `rebuild` on a local database.

Errors print one line and exit 1 (a refused request) or 2 (a usage error); `--traceback`
shows the whole trace.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runhistory.domain.errors import RunHistoryError
from runhistory.domain.run import LogCall
from runhistory.projections.runner import Progress
from runhistory.service.runs import RunService
from runhistory.service.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runhistory", description=__doc__)
    parser.add_argument("--traceback", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the W&B rewind-and-fork example and show it")
    demo.add_argument("--db", help="database (default: a temporary SQLite file)")

    rebuild = commands.add_parser("rebuild", help="drop every read model and replay the log")
    rebuild.add_argument("--db", help="database (default: $RUNHISTORY_DB or runhistory.db)")

    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return run_demo(args.db)
        return run_rebuild(args.db)
    except RunHistoryError as error:
        if args.traceback:
            raise
        print(f"runhistory: {error.code}: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _service(db: str | None) -> RunService:
    return RunService(Settings(db=db) if db else Settings())


def run_rebuild(db: str | None) -> int:
    with _service(db) as service:
        before = service.checksums()
        applied = service.rebuild(_progress_bar("rebuilding"))
        after = service.checksums()
    same = "equal to" if before == after else "DIFFERENT from"
    print(f"replayed {applied:,} events; the rebuilt read models are {same} the live ones")
    for name, digest in after.items():
        print(f"  {name:10} {digest[:16]}")
    return 0 if before == after else 1


def _progress_bar(label: str) -> Any:
    def show(progress: Progress) -> None:
        done = progress.position / progress.target if progress.target else 1.0
        bar = "#" * int(done * 30)
        sys.stderr.write(f"\r{label} [{bar:<30}] {progress.position:,}/{progress.target:,}")
        if progress.position >= progress.target:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def run_demo(db: str | None) -> int:
    with (
        tempfile.TemporaryDirectory() as tmp,
        _service(db or str(Path(tmp) / "demo.db")) as service,
    ):
        _demo(service)
    return 0


def _demo(service: RunService) -> None:
    """The W&B "rewind a run" page's scripts, as the SDK sends them."""
    run1 = service.init("demo", "rewind", config={"lr": 0.01})
    path = run1.path
    service.log(path, [LogCall({"metric": i}, float(i)) for i in range(300)], writer=run1.writer)
    service.finish(path, writer=run1.writer)
    print(f"run {path}: logged metric=i for steps 0..299 and finished")

    run2 = service.init("demo", "rewind", resume_from=f"{path.run_id}?_step=200")
    calls = []
    for i in range(200, 300):
        calls.append(LogCall({"metric": i, "step": i}, float(i)))
        calls.append(LogCall({"additional_metric": round(i * 1.1, 3), "step": i}, float(i)))
    service.log(path, calls, writer=run2.writer)
    service.finish(path, writer=run2.writer)
    print(f"rewound {path} to step 200 (now version {run2.version}) and logged 200 more rows")

    fork = service.init("demo", "rewind", fork_from=f"{path.run_id}?_step=300")
    service.log(
        fork.path,
        [LogCall({"metric": i * 3}, float(i)) for i in range(301, 311)],
        writer=fork.writer,
    )
    service.finish(fork.path, writer=fork.writer)
    print(f"forked {fork.path} from {path}?_step=300 and logged 10 rows\n")

    _show_history(service, path, "history of the rewound run")
    _show_history(service, path, "archived version 1", version=1)
    _show_history(service, fork.path, "history of the fork (inherited rows first)")

    print("\nversions of", path)
    for v in service.versions(path):
        status = f"archived, rewound to step {v['rewound_to_step']}" if v["archived"] else "live"
        summary = json.dumps(v["summary"])
        print(f"  v{v['version']}: {v['rows']} rows, {v['state']}, {status}; summary {summary}")

    print("\nlineage")
    _print_tree(service.lineage(path))
    print(f"\nsummary of the fork: {json.dumps(service.summary(fork.path))}")
    print(f"forked from: {service.run(fork.path)['forked_from']}")


def _show_history(service: RunService, path: Any, title: str, **options: Any) -> None:
    rows = service.history(path, **options)
    print(f"{title}: {len(rows)} rows, steps {rows[0]['_step']}..{rows[-1]['_step']}")
    for row in [*rows[:2], *rows[199:203], *rows[-2:]]:
        values = {k: v for k, v in row.items() if not k.startswith("_")}
        print(f"  _step {row['_step']:>3}  {json.dumps(values)}")


def _print_tree(lineage: dict[str, Any]) -> None:
    print(f"  {lineage['run']}")
    for v in lineage["versions"]:
        note = f"archived (rewound to {v['rewound_to_step']})" if v["archived"] else "live"
        print(f"  ├─ version {v['version']}: {note}")

    def descend(children: list[dict[str, Any]], indent: str) -> None:
        for child in children:
            source = f"v{child['source_version']} step {child['step']}"
            print(f"{indent}└─ fork {child['run']} from {source}")
            descend(child["descendants"], indent + "   ")

    descend(lineage["descendants"], "  ")


if __name__ == "__main__":
    raise SystemExit(main())
