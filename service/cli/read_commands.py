"""The client commands: they read a server through the SDK, so they run on a client-only
install too (nothing here imports the server side)."""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
from typing import Any

import runhistory
from runhistory.api import ApiRun
from runhistory.domain.errors import NotFound, RunHistoryError
from runhistory.domain.rules import check_step_range
from runhistory.service.cli.render import (
    PROG,
    ProgressBar,
    RunNames,
    inline,
    lineage_lines,
    local_time,
    plural,
    print_json,
    print_json_lines,
    print_mapping,
    print_rows,
    print_table,
)
from runhistory.sync import spool_folders, sync_folder

# A person at a terminal would rather hear that the server is down than wait the SDK's
# 30 s of retries, which are there to ride out a server restart under a training job.
CLI_RETRY_SECONDS = "3"


def reader(args: argparse.Namespace) -> runhistory.Api:
    """The command's one SDK reader; `main` closes it."""
    if getattr(args, "api", None) is None:
        os.environ.setdefault("RUNHISTORY_RETRY_SECONDS", CLI_RETRY_SECONDS)
        args.api = runhistory.Api(address=args.address)
    api: runhistory.Api = args.api
    return api


def _run(args: argparse.Namespace) -> ApiRun:
    return reader(args).run(args.run)


def cmd_runs(args: argparse.Namespace) -> int:
    listing = reader(args).runs(
        args.project,
        filters=_run_filters(args),
        order=args.order,
        per_page=args.per_page,
        cursor=args.cursor,
    )
    found = list(listing) if args.all else listing.next_page()
    if listing.cursor is not None:
        # On stderr: stdout stays the table (or the JSON list) of this page.
        print(
            f"more runs: add --cursor {listing.cursor} for the next page, or --all",
            file=sys.stderr,
        )
    if args.json:
        print_json([_run_record(run) for run in found])
        return 0
    if not found:
        matching = " match the filters" if _run_filters(args) else ""
        print(f"no runs in {args.project}{matching}")
        return 0
    rows = [
        [
            run.id,
            run.name,
            run.state,
            run.version,
            run.last_step,
            local_time(run.creation_time),
            local_time(run.updated_at),
            ", ".join(run.tags),
        ]
        for run in found
    ]
    headers = ["run", "name", "state", "version", "last step", "created", "updated", "tags"]
    print_table(headers, rows)
    return 0


def _run_filters(args: argparse.Namespace) -> dict[str, Any]:
    """The options as W&B-style filters, which the SDK takes."""
    filters: dict[str, Any] = {}
    if args.state:
        filters["state"] = {"$in": args.state}
    if args.tag:
        filters["tags"] = {"$in": args.tag}
    if args.name is not None:
        filters["display_name"] = args.name
    if args.name_regex is not None:
        filters["display_name"] = {"$regex": args.name_regex}
    if args.id_regex is not None:
        filters["name"] = {"$regex": args.id_regex}
    return filters


def _run_record(run: ApiRun) -> dict[str, Any]:
    return {
        "path": run.path,
        "id": run.id,
        "entity": run.entity,
        "project": run.project,
        "name": run.name,
        "tags": list(run.tags),
        "state": run.state,
        "version": run.version,
        "immutable_id": run.immutable_id,
        "last_step": run.last_step,
        "created_at": run.creation_time,
        "updated_at": run.updated_at,
    }


def _history_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "keys": args.keys,
        "min_step": args.min_step,
        "max_step": args.max_step,
        "own_only": args.own_only,
    }


def cmd_history(args: argparse.Namespace) -> int:
    options = _history_options(args)
    # --max-step includes its step; scan_history's, as W&B's, does not. The bounds are
    # checked as given, so a refusal names them.
    _, high = check_step_range(options["min_step"], options["max_step"])
    if high is not None:
        options["max_step"] = high + 1
    rows = _run(args).scan_history(**options, version=args.version)
    if args.json:
        print_json_lines(rows)
        return 0
    print_rows(list(rows), args.keys)
    return 0


def _version_record(run: ApiRun, version: int) -> dict[str, Any]:
    found = run.versions()
    for record in found:
        if record["version"] == version:
            return record
    raise NotFound(f"run {run.path} has no version {version}: its versions are 1..{len(found)}")


def _print_document(args: argparse.Namespace, name: str, flatten: bool) -> int:
    """The run's summary or config, live or of `--version`."""
    run = _run(args)
    document = (
        getattr(run, name) if args.version is None else _version_record(run, args.version)[name]
    )
    if args.json:
        print_json(document)
    else:
        print_mapping(document, f"empty {name}", flatten=flatten)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    return _print_document(args, "summary", flatten=False)


def cmd_config(args: argparse.Namespace) -> int:
    return _print_document(args, "config", flatten=True)


def cmd_versions(args: argparse.Namespace) -> int:
    found = _run(args).versions()
    if args.json:
        print_json(found)
        return 0
    rows = [
        [
            f"v{v['version']}",
            v["immutable_id"],
            "archived" if v["archived"] else "live",
            v["rewound_to_step"],
            v["state"],
            v["last_step"],
            v["rows"],
            local_time(v["started_at"]),
            local_time(v["archived_at"]),
            inline(v["summary"]),
        ]
        for v in found
    ]
    headers = [
        "version", "immutable ID", "status", "rewound to", "state", "last step", "rows",
        "started", "archived", "summary",
    ]  # fmt: skip
    print_table(headers, rows)
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    tree = _run(args).lineage()
    if args.json:
        print_json(tree)
    else:
        for line in lineage_lines(tree):
            print(line)
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    run = _run(args) if args.run else None
    source = reader(args) if run is None else run  # one run's events, or the server's
    stream = source.events(start=args.start, follow=args.follow)
    names = RunNames(None if run is None else run.path)
    shown = 0
    if args.follow:  # `timeout 60 runhistory events --follow` ends like Ctrl-C
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        for event in stream:
            shown += 1
            if args.json:
                print(json.dumps(event, default=str), flush=args.follow)
            else:
                print(names.line(event), flush=args.follow)
    except KeyboardInterrupt:
        if not args.follow:
            raise
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    if not shown and not args.json and not args.follow:
        print(f"no events after position {args.start}")
    return 0


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def cmd_as_of(args: argparse.Namespace) -> int:
    at = {"position": args.position} if args.position is not None else {"time": args.time}
    snapshot = _run(args).as_of(**at, **_history_options(args))
    if args.json:
        print_json(snapshot)
        return 0
    point = f"position {args.position}" if args.position is not None else local_time(args.time)
    print(f"{args.run} as of {point}\n")
    print("history")
    print_rows(snapshot["rows"], args.keys)
    print("\nsummary")
    print_mapping(snapshot["summary"], "empty summary", flatten=False)
    print("\nconfig")
    print_mapping(snapshot["config"], "empty config", flatten=True)
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    """Upload each spool folder; one line per run, errors included, and exit code 1 if any
    failed (the others are uploaded all the same)."""
    # Long enough to ride out a server restart; an upload cut short goes on where it stopped.
    os.environ.setdefault("RUNHISTORY_RETRY_SECONDS", "10")
    folders = [folder for path in args.paths for folder in spool_folders(path)]
    failed = 0
    results: list[dict[str, object]] = []
    for folder in folders:
        bar = ProgressBar(f"{folder.name}: uploading")
        try:
            uploaded = sync_folder(folder, args.address, progress=functools.partial(bar.show, 0))
        except RunHistoryError as error:
            bar.finish()
            failed += 1
            print(f"{PROG}: {folder}: {error.code}: {error.message}", file=sys.stderr)
            results.append({"folder": str(folder), "error": f"{error.code}: {error.message}"})
            continue
        bar.finish()
        for warning in uploaded.warnings:
            print(f"{PROG}: {folder}: {warning}", file=sys.stderr)
        record = {"folder": str(folder), "run": uploaded.path, "sent": uploaded.sent}
        if uploaded.note:
            record["note"] = uploaded.note
        results.append(record)
        if not args.json:
            what = uploaded.note or f"uploaded {plural(uploaded.sent, 'write')}"
            print(f"{uploaded.path}: {what} ({folder})")
    if args.json:
        print_json(results)
    return 1 if failed else 0
