"""The `runhistory` command line.

  serve      run the gRPC server (and with --http the web UI) until SIGINT or SIGTERM;
             API keys required unless --no-auth
  keys       create, list and revoke API keys, on the database directly
  demo       the W&B rewind-and-fork example, through the SDK, on an embedded server,
             with the web UI on 127.0.0.1:8080 (--keep serves it until Ctrl-C)
  runs, history, summary, config, versions, lineage, events, as-of
             read a server through the SDK (`--address`, default $RUNHISTORY_ADDRESS or
             127.0.0.1:50051); human-readable tables, or `--json`
  rebuild    rebuild the read models on the server, or offline on a database (`--db`)

Errors print one line, `runhistory: CODE: message`, and exit 1 (a refused request or an
unreachable server) or 2 (a usage error); `--traceback` shows the whole trace.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import runhistory
from runhistory.domain.errors import InvalidArgument, NotFound, RunHistoryError
from runhistory.domain.identity import RunPath, check_name

# The server side (grpc_server, runs, settings and SQLAlchemy) is imported by the commands
# that run it (serve, demo, rebuild --db), so that client commands start quickly.

PROG = "runhistory"
DEFAULT_ADDRESS = "127.0.0.1:50051"  # the SDK's and the server's default
DEMO_HTTP = "127.0.0.1:8080"


# ---- entry point -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:
        # The reader went away (`runhistory history ... | head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except Exception as error:
        refusal = _refusal(error)
        if refusal is None or getattr(args, "traceback", False):
            raise
        print(f"{PROG}: {refusal[0]}: {refusal[1]}", file=sys.stderr)
        return 1
    finally:
        if getattr(args, "api", None) is not None:
            args.api.close()


def _refusal(error: BaseException) -> tuple[str, str] | None:
    """(code, message) of a refused request or an unreachable server (the SDK's
    `ConnectionFailed` is a `RunHistoryError` too); None for a bug."""
    if isinstance(error, RunHistoryError):
        return error.code, error.message
    return None


# ---- arguments ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Open, event-sourced run history for machine-learning experiments.",
        epilog=__doc__.split("\n\n")[-1],
    )
    parser.add_argument("--traceback", action="store_true", help="show tracebacks of errors")

    # Accepted after the command too; SUPPRESS keeps a value given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--traceback", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    client = argparse.ArgumentParser(add_help=False, parents=[common])
    client.add_argument(
        "--address", help="server address (default: $RUNHISTORY_ADDRESS or 127.0.0.1:50051)"
    )
    client.add_argument(
        "--json", action="store_true", help="print JSON (NaN and Infinity as bare words)"
    )

    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, parents: list, handler: Callable) -> Any:
        sub = commands.add_parser(name, help=help, description=help, parents=parents)
        sub.set_defaults(handler=handler)
        return sub

    serve = command("serve", "run the gRPC server until SIGINT or SIGTERM", [common], cmd_serve)
    serve.add_argument(
        "--address",
        help=f"address to listen on (default: $RUNHISTORY_ADDRESS or {DEFAULT_ADDRESS})",
    )
    serve.add_argument(
        "--db",
        help="database: SQLAlchemy URL or SQLite file (default: $RUNHISTORY_DB or runhistory.db)",
    )
    serve.add_argument(
        "--no-projections",
        dest="projections",
        action="store_false",
        help="leave the read models to `runhistory project` workers",
    )
    serve.add_argument(
        "--http",
        metavar="HOST:PORT",
        type=_http_arg,
        help="also serve the web UI and its JSON API there, e.g. 127.0.0.1:8080",
    )
    serve.add_argument(
        "--no-auth",
        dest="require_keys",
        action="store_false",
        help="serve without API keys (refused unless the address is a loopback one)",
    )
    serve.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate")
    serve.add_argument("--tls-key", metavar="PEM", help="the TLS certificate's private key")
    serve.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="require client certificates signed by this CA (with --tls-cert)",
    )

    keys = command(
        "keys",
        "API keys: create (printed once), list, revoke; works on the database directly",
        [common],
        cmd_keys,
    )
    keys.add_argument(
        "--db",
        help="database: SQLAlchemy URL or SQLite file (default: $RUNHISTORY_DB or runhistory.db)",
    )
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = key_commands.add_parser(
        "create", help="a new key for an entity; its last line of output is the key"
    )
    create.add_argument("--entity", required=True, type=_entity_arg, help="the key's entity")
    create.add_argument(
        "--role",
        choices=["reader", "writer", "admin"],
        default="writer",
        help="reader: read; writer: also log, rewind, fork; admin: also read the whole "
        "event log and rebuild (default: writer)",
    )
    create.add_argument("--label", default="", help="a note on who or what uses the key")
    listing = key_commands.add_parser("list", help="the keys, revoked ones included")
    listing.add_argument("--entity", type=_entity_arg, help="only this entity's keys")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = key_commands.add_parser("revoke", help="revoke a key: refused at once everywhere")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's ID, as `keys list` shows it")

    project = command(
        "project",
        "a projection worker: apply new events to the read models until SIGINT or SIGTERM",
        [common],
        cmd_project,
    )
    project.add_argument(
        "--db",
        help="database: SQLAlchemy URL or SQLite file (default: $RUNHISTORY_DB or runhistory.db)",
    )
    project.add_argument(
        "--interval", type=float, default=0.05, help="seconds between polls (default 0.05)"
    )
    project.add_argument(
        "--page-size", type=int, default=50, help="events applied per transaction (default 50)"
    )

    demo = command(
        "demo",
        "run the W&B rewind-and-fork example through the SDK on an embedded server",
        [common],
        cmd_demo,
    )
    demo.add_argument("--db", help="the embedded server's database (default: a temporary file)")
    demo.add_argument(
        "--http",
        metavar="HOST:PORT",
        type=_http_arg,
        default=DEMO_HTTP,
        help=f"serve the web UI there (default {DEMO_HTTP}; a free port if that one is taken)",
    )
    demo.add_argument("--no-http", dest="http", action="store_const", const=None, help="no web UI")
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep serving (gRPC and the web UI) after the demo until Ctrl-C",
    )

    runs = command("runs", "list the runs of a project", [client], cmd_runs)
    runs.add_argument("project", metavar="ENTITY/PROJECT", type=_project_arg)

    history = command("history", "a run's history rows", [client], cmd_history)
    history.add_argument("run", metavar="RUN", type=_run_arg, help="entity/project/run_id")
    _history_filters(history)
    history.add_argument(
        "--version", type=_version_arg, metavar="V", help="an archived version (1, 2, ...)"
    )

    for name, handler, what in (
        ("summary", cmd_summary, "a run's summary"),
        ("config", cmd_config, "a run's config"),
    ):
        sub = command(name, what, [client], handler)
        sub.add_argument("run", metavar="RUN", type=_run_arg, help="entity/project/run_id")
        sub.add_argument("--version", type=_version_arg, metavar="V", help="a version (1, 2, ...)")

    versions = command(
        "versions", "a run's versions: the archive and the live one", [client], cmd_versions
    )
    versions.add_argument("run", metavar="RUN", type=_run_arg, help="entity/project/run_id")

    lineage = command(
        "lineage", "a run's ancestors, versions and descendants, as a tree", [client], cmd_lineage
    )
    lineage.add_argument("run", metavar="RUN", type=_run_arg, help="entity/project/run_id")

    events = command(
        "events",
        "the event log, of every run or of one (--json: one JSON object per line)",
        [client],
        cmd_events,
    )
    events.add_argument(
        "run", metavar="RUN", type=_run_arg, nargs="?", help="entity/project/run_id"
    )
    events.add_argument(
        "--start",
        type=_count_arg,
        default=0,
        metavar="N",
        help="events after this position (default 0)",
    )
    events.add_argument(
        "--follow", action="store_true", help="keep printing new events until Ctrl-C"
    )

    as_of = command(
        "as-of", "a run's history, summary and config as they stood at a point", [client], cmd_as_of
    )
    as_of.add_argument("run", metavar="RUN", type=_run_arg, help="entity/project/run_id")
    point = as_of.add_mutually_exclusive_group(required=True)
    point.add_argument("--position", type=_count_arg, metavar="N", help="an event position")
    point.add_argument(
        "--time",
        type=_time_arg,
        metavar="T",
        help="seconds since the epoch, or ISO-8601 (local time unless it has an offset)",
    )
    _history_filters(as_of)

    rebuild = command(
        "rebuild",
        "drop every read model, replay the event log, compare checksums with the live ones",
        [common],
        cmd_rebuild,
    )
    rebuild.add_argument(
        "--json", action="store_true", help="print the result as JSON (progress stays on stderr)"
    )
    target = rebuild.add_mutually_exclusive_group()
    target.add_argument(
        "--address", help="the server (default: $RUNHISTORY_ADDRESS or 127.0.0.1:50051)"
    )
    target.add_argument(
        "--db", help="rebuild offline on this database instead, with no server running"
    )
    return parser


def _history_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keys", type=_keys_arg, metavar="K1,K2", help="only these keys: k1,k2,..."
    )
    parser.add_argument("--min-step", type=_count_arg, metavar="N", help="from step N")
    parser.add_argument("--max-step", type=_count_arg, metavar="N", help="up to step N")
    parser.add_argument(
        "--own-only", action="store_true", help="a fork's own rows, without the inherited ones"
    )


def _run_arg(text: str) -> str:
    if text.count("/") != 2:
        raise argparse.ArgumentTypeError(f"invalid run {text!r}: use entity/project/run_id")
    try:
        return str(RunPath.parse(text))
    except RunHistoryError as error:
        raise argparse.ArgumentTypeError(error.message) from None


def _entity_arg(text: str) -> str:
    try:
        return check_name("entity", text)
    except InvalidArgument as error:
        raise argparse.ArgumentTypeError(error.message) from None


def _project_arg(text: str) -> str:
    parts = text.split("/")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"invalid project {text!r}: use entity/project")
    try:
        check_name("entity", parts[0])
        check_name("project", parts[1])
    except RunHistoryError as error:
        raise argparse.ArgumentTypeError(error.message) from None
    return text


def _count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: an integer >= 0")
    return value


def _version_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid version {text!r}: versions are 1, 2, ...")
    return value


def _keys_arg(text: str) -> list[str]:
    keys = [key.strip() for key in text.split(",") if key.strip()]
    if not keys:
        raise argparse.ArgumentTypeError("no keys: give k1,k2,...")
    return keys


def _http_arg(text: str) -> str:
    from runhistory.service.web.server import parse_http_address

    try:
        parse_http_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _time_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        try:
            value = datetime.fromisoformat(text.strip()).timestamp()
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid time {text!r}: seconds since the epoch or ISO-8601 "
                "(2025-01-31T12:00:00, 2025-01-31 12:00:00+00:00, ...)"
            ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"invalid time {text!r}: a finite number of seconds")
    return value


# ---- serve -------------------------------------------------------------------------------


@contextmanager
def _until_signalled() -> Iterator[threading.Event]:
    """An event set by the first SIGINT or SIGTERM; a second signal acts as usual."""
    stopping = threading.Event()
    handled = (signal.SIGINT, signal.SIGTERM)

    def request_stop(signum: int, _frame: object) -> None:
        stopping.set()
        for number, handler in previous.items():
            signal.signal(number, handler)

    previous = {number: signal.signal(number, request_stop) for number in handled}
    try:
        yield stopping
    finally:
        for number, handler in previous.items():
            if signal.getsignal(number) is request_stop:
                signal.signal(number, handler)


def cmd_serve(args: argparse.Namespace) -> int:
    from runhistory.service.grpc_server import start_server

    settings = _settings(
        args.db,
        require_keys=args.require_keys,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
    )
    address = args.address or os.environ.get("RUNHISTORY_ADDRESS") or DEFAULT_ADDRESS
    with _until_signalled() as stopping:
        try:
            with _opening(settings):
                running = start_server(settings, address, projections=args.projections)
        except (OSError, RuntimeError) as error:  # grpc: RuntimeError("Failed to bind ...")
            raise _Unavailable(f"cannot serve on {address}: {error}") from error
        web = None
        try:
            if args.http:
                web = _start_web(running.service, settings, args.http, fallback=False)
            workers = "" if args.projections else "; read models left to projection workers"
            keys = "API keys required" if settings.require_keys else "no API keys (--no-auth)"
            tls = ", TLS" if settings.tls_cert else ""
            print(
                f"{PROG}: serving on {running.address}{tls}, database "
                f"{_safe_url(settings.db_url)}, {keys}{workers} (stop with Ctrl-C or SIGTERM)",
                flush=True,
            )
            if web is not None:
                print(f"{PROG}: web UI on {web.url}/", flush=True)
            while not stopping.wait(0.5):
                pass
            print(
                f"{PROG}: stopping (requests in flight get a few seconds to finish)",
                file=sys.stderr,
                flush=True,
            )
        finally:
            if web is not None:
                web.stop()
            running.stop()
    print(f"{PROG}: stopped", file=sys.stderr)
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from runhistory.service.runs import RunService

    settings = _settings(args.db)
    with _until_signalled() as stopping:
        with _opening(settings):
            service = RunService(settings, projections=False)
        service.runner.page_size = max(1, args.page_size)
        try:
            print(
                f"{PROG}: projecting {_safe_url(settings.db_url)} from position "
                f"{service.runner.position()} (stop with Ctrl-C or SIGTERM)",
                flush=True,
            )
            service.runner.run_until(stopping, args.interval)
            stopped_at = service.runner.position()
        finally:
            service.close()
    print(f"{PROG}: stopped at position {stopped_at}", file=sys.stderr)
    return 0


class _Unavailable(RunHistoryError):
    code = "UNAVAILABLE"


def cmd_keys(args: argparse.Namespace) -> int:
    from runhistory.projections.database import Database
    from runhistory.service.auth import KeyStore, Role

    settings = _settings(args.db)
    with _opening(settings):
        db = Database(settings.db_url)
        try:
            store = KeyStore(db)
            if args.keys_command == "create":
                record, key = store.create(args.entity, Role.parse(args.role), args.label)
                print(
                    f"created API key {record.key_id} for entity {record.entity!r} "
                    f"({record.role.label}) in {_safe_url(settings.db_url)}; it is shown "
                    "only this once:"
                )
                print(key)
            elif args.keys_command == "list":
                _print_keys(store.list(args.entity), args.json)
            else:
                record = store.revoke(args.key_id)
                print(
                    f"revoked API key {record.key_id} of entity {record.entity!r} "
                    f"({record.role.label}): every server refuses it from now on"
                )
        finally:
            db.dispose()
    return 0


def _print_keys(records: Sequence[Any], as_json: bool) -> None:
    if as_json:
        _print_json(
            [
                {
                    "key_id": r.key_id,
                    "entity": r.entity,
                    "role": r.role.label,
                    "label": r.label,
                    "created_at": r.created_at,
                    "revoked_at": r.revoked_at,
                }
                for r in records
            ]
        )
        return
    if not records:
        print("no API keys; create one with `runhistory keys create --entity ENTITY`")
        return
    rows = [
        [r.key_id, r.entity, r.role.label, r.label, _time(r.created_at), _time(r.revoked_at)]
        for r in records
    ]
    _print_table(["key id", "entity", "role", "label", "created", "revoked"], rows)


def _start_web(service: Any, settings: Any, address: str, fallback: bool) -> Any:
    """The web UI over the server's own RunService, with its keys and TLS; with `fallback`,
    a free port on the same host when `address` is taken (the demo runs if 8080 is busy)."""
    from runhistory.service.web.server import parse_http_address, start_web, web_access

    access, tls = web_access(service, settings)
    try:
        return start_web(service, address, access, tls)
    except OSError as error:
        if not fallback:
            raise _Unavailable(f"cannot serve the web UI on {address}: {error}") from error
        host, _port = parse_http_address(address)
        try:
            return start_web(service, f"{host}:0", access, tls)
        except OSError as again:
            raise _Unavailable(f"cannot serve the web UI on {host}: {again}") from again


def _settings(db: str | None, **options: Any) -> Any:
    """Settings with the database given, else $RUNHISTORY_DB or runhistory.db."""
    from pydantic import ValidationError

    from runhistory.service.settings import Settings

    given = {name: value for name, value in options.items() if value is not None}
    try:
        return Settings(db=db, **given) if db is not None else Settings(**given)
    except ValidationError as error:
        problem = error.errors()[0]
        reason = problem["msg"].removeprefix("Value error, ")
        if problem["loc"] == ("db",):
            raise InvalidArgument(f"invalid database {db!r}: {reason}") from None
        raise InvalidArgument(reason) from None


@contextmanager
def _opening(settings: Any) -> Iterator[None]:
    """A database that cannot be opened is one line, not a traceback."""
    from eventsourcing.persistence import PersistenceError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (PersistenceError, SQLAlchemyError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise _Unavailable(
            f"cannot open the database {_safe_url(settings.db_url)}: {reason}"
        ) from error


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


# ---- client commands ---------------------------------------------------------------------


# A person at a terminal would rather hear that the server is down than wait the SDK's
# 30 s of retries, which are there to ride out a server restart under a training job.
CLI_RETRY_SECONDS = "3"


def _api(args: argparse.Namespace) -> Any:
    """The command's one SDK reader; `main` closes it."""
    if getattr(args, "api", None) is None:
        os.environ.setdefault("RUNHISTORY_RETRY_SECONDS", CLI_RETRY_SECONDS)
        args.api = runhistory.Api(address=args.address)
    return args.api


def _run(args: argparse.Namespace) -> Any:
    return _api(args).run(args.run)


def cmd_runs(args: argparse.Namespace) -> int:
    found = _api(args).runs(args.project)
    if args.json:
        _print_json([_run_record(run) for run in found])
        return 0
    if not found:
        print(f"no runs in {args.project}")
        return 0
    rows = [
        [
            run.id,
            run.name,
            run.state,
            run.version,
            run.last_step,
            _time(run.created_at),
            _time(run.updated_at),
            ", ".join(run.tags),
        ]
        for run in found
    ]
    headers = ["run", "name", "state", "version", "last step", "created", "updated", "tags"]
    _print_table(headers, rows)
    return 0


def _run_record(run: Any) -> dict[str, Any]:
    return {
        "path": run.path,
        "id": run.id,
        "entity": run.entity,
        "project": run.project,
        "name": run.name,
        "tags": list(run.tags),
        "state": run.state,
        "version": run.version,
        "last_step": run.last_step,
        "created_at": run.created_at,
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
    rows = _run(args).scan_history(**_history_options(args), version=args.version)
    if args.json:
        _print_json_lines_array(rows)
        return 0
    _print_rows(list(rows), args.keys)
    return 0


def _print_rows(rows: list[dict[str, Any]], keys: list[str] | None) -> None:
    if not rows:
        print("no rows")
        return
    if keys is None:
        keys = sorted({key for row in rows for key in row if not key.startswith("_")})
    _print_table(["_step", *keys], [[row["_step"], *(row.get(k) for k in keys)] for row in rows])
    print(f"({_count(len(rows), 'row')}, {_steps([row['_step'] for row in rows])})")


def _version_record(run: Any, version: int) -> dict[str, Any]:
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
        _print_json(document)
    else:
        _print_mapping(document, f"empty {name}", flatten=flatten)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    return _print_document(args, "summary", flatten=False)


def cmd_config(args: argparse.Namespace) -> int:
    return _print_document(args, "config", flatten=True)


def cmd_versions(args: argparse.Namespace) -> int:
    found = _run(args).versions()
    if args.json:
        _print_json(found)
        return 0
    rows = [
        [
            f"v{v['version']}",
            "archived" if v["archived"] else "live",
            v["rewound_to_step"],
            v["state"],
            v["last_step"],
            v["rows"],
            _time(v["started_at"]),
            _time(v["archived_at"]),
            _inline(v["summary"]),
        ]
        for v in found
    ]
    headers = [
        "version", "status", "rewound to", "state", "last step", "rows", "started", "archived",
        "summary",
    ]  # fmt: skip
    _print_table(headers, rows)
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    tree = _run(args).lineage()
    if args.json:
        _print_json(tree)
    else:
        for line in lineage_lines(tree):
            print(line)
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    source = _run(args) if args.run else _api(args)
    stream = source.events(start=args.start, follow=args.follow)
    names = _RunNames(args.run)
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


class _RunNames:
    """Shows runs by path: learnt from their creation events, else a short UUID."""

    def __init__(self, path: str | None) -> None:
        self.names: dict[str, str] = {}
        if path is not None:
            self.names[str(RunPath.parse(path).aggregate_id)] = path

    def line(self, event: Mapping[str, Any]) -> str:
        payload = event.get("payload") or {}
        uuid = str(event["run_uuid"])
        if event["type"] == "Created" and {"entity", "project", "run_id"} <= payload.keys():
            self.names[uuid] = f"{payload['entity']}/{payload['project']}/{payload['run_id']}"
        run = self.names.get(uuid, uuid[:8])
        return (
            f"{event['position']:>7}  {_time(event['timestamp'])}  {run:<28}  "
            f"{event['type']:<16}  {_describe_payload(payload)}"
        ).rstrip()


def _describe_payload(payload: Mapping[str, Any], width: int = 100) -> str:
    shown: dict[str, Any] = {}
    for key, value in payload.items():
        if key in ("writer", "seq") or value in (None, [], {}):
            continue
        if key == "rows" and isinstance(value, list):
            steps = [row[0] for row in value if isinstance(row, list | tuple) and row]
            span = f", {_steps(steps)}" if steps else ""
            shown[key] = f"<{_count(len(value), 'row')}{span}>"
        else:
            shown[key] = value
    text = " ".join(
        f"{key}={_compact(value) if isinstance(value, Mapping | list) else _cell(value)}"
        for key, value in shown.items()
    )
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_as_of(args: argparse.Namespace) -> int:
    at = {"position": args.position} if args.position is not None else {"time": args.time}
    snapshot = _run(args).as_of(**at, **_history_options(args))
    if args.json:
        _print_json(snapshot)
        return 0
    point = f"position {args.position}" if args.position is not None else _time(args.time)
    print(f"{args.run} as of {point}\n")
    print("history")
    _print_rows(snapshot["rows"], args.keys)
    print("\nsummary")
    _print_mapping(snapshot["summary"], "empty summary", flatten=False)
    print("\nconfig")
    _print_mapping(snapshot["config"], "empty config", flatten=True)
    return 0


# ---- rebuild -----------------------------------------------------------------------------


def cmd_rebuild(args: argparse.Namespace) -> int:
    bar = _ProgressBar("rebuilding")
    try:
        if args.db is not None:
            result = _rebuild_offline(args.db, bar)
        else:
            result = {}
            for update in _api(args).rebuild():
                bar.show(update["applied"], update["position"], update["target"])
                if update.get("done"):
                    result = dict(update)
            if not result:
                raise _Unavailable("the server ended the rebuild without reporting its result")
    finally:
        bar.finish()  # ends the bar's line, before a result or an error
    result.pop("done", None)
    if args.json:
        _print_json(result)
    else:
        same = "equal to" if result["equal_to_live"] else "DIFFERENT from"
        print(
            f"replayed {_count(result['applied'], 'event')}; "
            f"the rebuilt read models are {same} the live ones"
        )
        width = max((len(name) for name in result["checksums"]), default=0)
        for name, digest in sorted(result["checksums"].items()):
            print(f"  {name:<{width}}  {digest[:16]}")
    return 0 if result["equal_to_live"] else 1


def _rebuild_offline(db: str, bar: _ProgressBar) -> dict[str, Any]:
    from runhistory.projections.runner import Progress
    from runhistory.service.runs import RunService

    settings = _settings(db)
    url = settings.db_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        # Opening would create an empty database and "rebuild" nothing: a typo, most likely.
        raise NotFound(f"there is no database file {url.removeprefix('sqlite:///')}")
    with _opening(settings):
        service = RunService(settings)
    with service:
        # The live read models first catch up with the log (their writer may have stopped
        # before applying its last events), so that they are comparable with a replay.
        service.runner.catch_up()
        before = service.checksums()
        last = Progress(0, 0, 0)

        def progress(update: Progress) -> None:
            nonlocal last
            last = update
            bar.show(update.applied, update.position, update.target)

        applied = service.rebuild(progress)
        after = service.checksums()
    return {
        "applied": applied,
        "position": last.position,
        "target": last.target,
        "checksums": after,
        "equal_to_live": after == before,
    }


class _ProgressBar:
    """`label [#####-----] position/target` on stderr, redrawn at most 10 times a second."""

    def __init__(self, label: str, width: int = 30) -> None:
        self.label = label
        self.width = width
        self.drawn = 0.0
        self.pending: tuple[int, int] | None = None
        self.last: tuple[int, int] | None = None

    def show(self, applied: int, position: int, target: int) -> None:
        if (position, target) == self.last:
            return
        self.pending = (position, target)
        now = time.monotonic()
        if now - self.drawn >= 0.1 or position >= target:
            self._draw()
            self.drawn = now

    def _draw(self) -> None:
        if self.pending is None:
            return
        position, target = self.pending
        done = min(position / target, 1.0) if target else 1.0
        bar = "#" * int(done * self.width)
        sys.stderr.write(
            f"\r{self.label} [{bar:<{self.width}}] {position:,}/{target:,} ({done:.0%})"
        )
        sys.stderr.flush()
        self.last = self.pending
        self.pending = None

    def finish(self) -> None:
        self._draw()
        if self.last is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()


# ---- demo --------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from runhistory.service.auth import KeyStore, Role
    from runhistory.service.grpc_server import start_server

    with tempfile.TemporaryDirectory(prefix="runhistory-demo-") as tmp:
        settings = _settings(args.db or str(Path(tmp) / "demo.db"))
        with _opening(settings):
            running = start_server(settings, "127.0.0.1:0")
        web = None
        try:
            # The demo server wants keys like any other: the demo makes its own.
            keys = KeyStore(running.service.db)
            _, key = keys.create("demo", Role.WRITER, "runhistory demo")
            if args.http:
                web = _start_web(running.service, settings, args.http, fallback=True)
            paths = _demo(running.address, key)
            if web is not None:
                _, web_key = keys.create("demo", Role.READER, "runhistory demo: web UI")
                print(f"\nweb UI: {web.url}/demo/rewind  (sign in with the key {web_key})")
                for label, path in paths.items():
                    entity, project, run_id = path.split("/")
                    print(f"  {label:<8} {web.url}/{entity}/{project}/runs/{run_id}")
            if web is not None and not args.keep:
                print(f"(the demo stops now; `{PROG} demo --keep` keeps it serving)")
            if args.keep:
                print(f"{PROG}: serving until Ctrl-C (gRPC on {running.address})", flush=True)
                with _until_signalled() as stopping:
                    while not stopping.wait(0.5):
                        pass
        finally:
            if web is not None:
                web.stop()
            running.stop()
    return 0


def _demo(address: str, api_key: str) -> dict[str, str]:
    """The W&B "rewind a run" page's scripts, through the SDK and the server. Returns the
    paths of the runs it made."""
    connect = {"address": address, "api_key": api_key}
    run1 = runhistory.init(entity="demo", project="rewind", config={"lr": 0.01}, **connect)
    for i in range(300):
        run1.log({"metric": i})
    run1.finish()
    path = f"demo/rewind/{run1.id}"
    print(f"run {path}: logged metric=i for steps 0..299 and finished")

    run2 = runhistory.init(
        entity="demo", project="rewind", resume_from=f"{run1.id}?_step=200", **connect
    )
    for i in range(200, 300):
        if i < 250:
            run2.log({"metric": i, "step": i})
        else:  # the W&B example's subtle spikes from step 250 on
            run2.log({"metric": round(i + 2 * math.sin(i / 3.0), 3), "step": i})
        run2.log({"additional_metric": round(i * 1.1, 3), "step": i})
    run2.finish()

    with runhistory.Api(**connect) as api:
        rewound = api.run(path)
        print(
            f"rewound {path} to step 200 (now version {rewound.version}; version 1 is "
            "archived) and logged 200 more rows"
        )

        fork = runhistory.init(
            entity="demo", project="rewind", fork_from=f"{run1.id}?_step=300", **connect
        )
        for i in range(301, 311):
            fork.log({"metric": i * 3})
        fork.finish()
        forked = api.run(f"demo/rewind/{fork.id}")
        print(f"forked {forked.path} from {path}?_step=300 and logged 10 rows\n")
        _demo_show(rewound, forked)
    return {"rewound": path, "fork": str(forked.path)}


def _demo_show(rewound: Any, forked: Any) -> None:
    _show_history(rewound.history(), "history of the rewound run")
    _show_history(rewound.history(version=1), "archived version 1")
    _show_history(forked.history(), "history of the fork (inherited rows first)")

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


# ---- lineage tree ------------------------------------------------------------------------


def lineage_lines(tree: Mapping[str, Any]) -> list[str]:
    """Ancestors from the root down, the run with its versions, each version's forks (and
    their forks) below it."""
    lines: list[str] = []
    indent = ""
    chain = list(reversed(tree["ancestors"]))  # root first
    if chain:
        lines.append(chain[0]["run"])
        for index, link in enumerate(chain):
            child = chain[index + 1]["run"] if index + 1 < len(chain) else tree["run"]
            mark = "  (this run)" if index + 1 == len(chain) else ""
            lines.append(
                f"{indent}└─ fork at step {link['step']} of v{link['version']}: {child}{mark}"
            )
            indent += "   "
    else:
        lines.append(f"{tree['run']}  (this run)")

    by_version: dict[int, list[Mapping[str, Any]]] = {}
    for child in tree["descendants"]:
        by_version.setdefault(child["source_version"], []).append(child)
    known = {v["version"] for v in tree["versions"]}
    strays = [c for c in tree["descendants"] if c["source_version"] not in known]

    branches: list[tuple[str, list[Mapping[str, Any]]]] = []
    for v in tree["versions"]:
        status = f"archived, rewound to step {v['rewound_to_step']}" if v["archived"] else "live"
        branches.append((f"v{v['version']}  {status}", by_version.get(v["version"], [])))
    branches += [(_fork_label(child, True), child["descendants"]) for child in strays]

    for index, (label, children) in enumerate(branches):
        last = index == len(branches) - 1
        lines.append(f"{indent}{'└─' if last else '├─'} {label}")
        _descend(lines, children, indent + ("   " if last else "│  "), with_version=False)
    return lines


def _descend(
    lines: list[str], children: list[Mapping[str, Any]], indent: str, with_version: bool
) -> None:
    for index, child in enumerate(children):
        last = index == len(children) - 1
        lines.append(f"{indent}{'└─' if last else '├─'} {_fork_label(child, with_version)}")
        _descend(lines, child["descendants"], indent + ("   " if last else "│  "), True)


def _fork_label(child: Mapping[str, Any], with_version: bool) -> str:
    source = f" of v{child['source_version']}" if with_version else ""
    return f"fork {child['run']} at step {child['step']}{source}"


# ---- output helpers ----------------------------------------------------------------------


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, default=str))


def _print_json_lines_array(rows: Iterable[Any]) -> None:
    """A JSON array with one element per line, written as the elements arrive."""
    first = True
    for row in rows:
        sys.stdout.write(("[\n" if first else ",\n") + json.dumps(row, default=str))
        first = False
    sys.stdout.write("[]\n" if first else "\n]\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return format(value, ".10g") if math.isfinite(value) else json.dumps(value)
    if isinstance(value, Mapping):
        return _inline(value)
    return json.dumps(value, default=str)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _inline(mapping: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={_cell(value)}" for key, value in mapping.items())


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(value) for value in row] for row in rows]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(headers))]
    widths = [
        max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(padded).rstrip()

    print(line(headers))
    print(line(["─" * width for width in widths]))
    for row in cells:
        print(line(row))


def _is_number(value: Any) -> bool:
    """Right-aligned in tables; blanks (None) go with either."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _print_mapping(mapping: Mapping[str, Any], empty: str, flatten: bool) -> None:
    items = list(_flatten(mapping) if flatten else mapping.items())
    if not items:
        print(empty)
        return
    width = max(len(key) for key, _ in items)
    for key, value in sorted(items):
        print(f"{key:<{width}}  {_cell(value)}")


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def _steps(steps: Sequence[int]) -> str:
    return f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}..{steps[-1]}"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


if __name__ == "__main__":
    raise SystemExit(main())
