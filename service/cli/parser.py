"""The `runhistory` command line's arguments.

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
import math
from collections.abc import Callable
from datetime import datetime

from runhistory.domain.errors import InvalidArgument, RunHistoryError
from runhistory.domain.identity import check_name, is_version_id, parse_run_or_version
from runhistory.domain.listing import (
    DEFAULT_ORDER,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    ORDERS,
    RUN_STATES,
    check_page_size,
)
from runhistory.service.addresses import DEFAULT_ADDRESS, DEFAULT_HTTP, parse_http_address
from runhistory.service.cli.read_commands import (
    cmd_as_of,
    cmd_config,
    cmd_events,
    cmd_history,
    cmd_lineage,
    cmd_runs,
    cmd_summary,
    cmd_sync,
    cmd_versions,
)
from runhistory.service.cli.render import PROG
from runhistory.service.cli.server_commands import (
    cmd_demo,
    cmd_keys,
    cmd_project,
    cmd_rebuild,
    cmd_serve,
)
from runhistory.service.limits import SIZE_LIMITS, flag, variable

# Runs a command with its parsed arguments; returns the exit code.
Handler = Callable[[argparse.Namespace], int]
# Adds a command: its name, help, parent parsers and handler; returns its parser.
Command = Callable[[str, str, list[argparse.ArgumentParser], Handler], argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
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
        "--address", help=f"server address (default: $RUNHISTORY_ADDRESS or {DEFAULT_ADDRESS})"
    )
    client.add_argument(
        "--json", action="store_true", help="print JSON (NaN and Infinity as bare words)"
    )

    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help: str, parents: list[argparse.ArgumentParser], handler: Handler
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, parents=parents)
        sub.set_defaults(handler=handler)
        return sub

    _server_commands(command, common)
    _read_commands(command, client)
    _rebuild_command(command, common)
    return parser


def _server_commands(command: Command, common: argparse.ArgumentParser) -> None:
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
    for name, counts in SIZE_LIMITS.items():
        serve.add_argument(
            flag(name),
            dest=name,
            type=_limit_arg,
            metavar="N",
            help=f"at most N {counts}; also set by ${variable(name)}",
        )
    serve.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate")
    serve.add_argument("--tls-key", metavar="PEM", help="the TLS certificate's private key")
    serve.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="require client certificates signed by this CA (with --tls-cert)",
    )
    serve.add_argument(
        "--crash-after",
        metavar="SECONDS",
        type=_seconds_arg,
        help="mark a running run crashed when its writer has sent nothing, not even a "
        "heartbeat, for this long (default: $RUNHISTORY_CRASH_AFTER or 300; 0: never)",
    )

    keys = command(
        "keys",
        "API keys: create (printed once), list, revoke; works on the database directly",
        [common],
        cmd_keys,
    )
    db_help = "database: SQLAlchemy URL or SQLite file (default: $RUNHISTORY_DB or runhistory.db)"
    keys.add_argument("--db", help=db_help)
    # `keys create --db X` as well as `keys --db X create`: SUPPRESS keeps the one given
    # before the action when none follows it.
    action_db = argparse.ArgumentParser(add_help=False)
    action_db.add_argument("--db", default=argparse.SUPPRESS, help=db_help)
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = key_commands.add_parser(
        "create",
        help="a new key for an entity; its last line of output is the key",
        parents=[action_db],
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
    listing = key_commands.add_parser(
        "list", help="the keys, revoked ones included", parents=[action_db]
    )
    listing.add_argument("--entity", type=_entity_arg, help="only this entity's keys")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = key_commands.add_parser(
        "revoke", help="revoke a key: refused at once everywhere", parents=[action_db]
    )
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
        default=DEFAULT_HTTP,
        help=f"serve the web UI there (default {DEFAULT_HTTP}; a free port if that one is taken)",
    )
    demo.add_argument("--no-http", dest="http", action="store_const", const=None, help="no web UI")
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep serving (gRPC and the web UI) after the demo until Ctrl-C",
    )


def _read_commands(command: Command, client: argparse.ArgumentParser) -> None:
    runs = command(
        "runs", "list the runs of a project, a page at a time (oldest first)", [client], cmd_runs
    )
    runs.add_argument("project", metavar="ENTITY/PROJECT", type=_project_arg)
    runs.add_argument(
        "--order",
        choices=tuple(ORDERS),
        default=DEFAULT_ORDER,
        help=f"by creation or latest update, ascending (+) or descending (-) "
        f"(default {DEFAULT_ORDER})",
    )
    runs.add_argument(
        "--state", action="append", choices=RUN_STATES, help="only runs in this state (repeatable)"
    )
    runs.add_argument(
        "--tag", action="append", metavar="TAG", help="only runs with this tag (repeatable: any)"
    )
    named = runs.add_mutually_exclusive_group()
    named.add_argument("--name", help="only runs of this name")
    named.add_argument("--name-regex", metavar="REGEX", help="only runs whose name matches")
    runs.add_argument("--id-regex", metavar="REGEX", help="only runs whose ID matches")
    runs.add_argument(
        "--per-page",
        type=_page_size_arg,
        default=DEFAULT_PAGE_SIZE,
        metavar="N",
        help=f"runs per page, 1 to {MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE})",
    )
    paging = runs.add_mutually_exclusive_group()
    paging.add_argument("--cursor", help="the page after this cursor, as a page before printed it")
    paging.add_argument("--all", action="store_true", help="every page")

    history = command("history", "a run's history rows", [client], cmd_history)
    history.add_argument("run", metavar="RUN", type=_run_arg, help=RUN_HELP)
    _history_filters(history)
    history.add_argument(
        "--version", type=_version_arg, metavar="V", help="an archived version (1, 2, ...)"
    )

    for name, handler, what in (
        ("summary", cmd_summary, "a run's summary"),
        ("config", cmd_config, "a run's config"),
    ):
        sub = command(name, what, [client], handler)
        sub.add_argument("run", metavar="RUN", type=_run_arg, help=RUN_HELP)
        sub.add_argument("--version", type=_version_arg, metavar="V", help="a version (1, 2, ...)")

    versions = command(
        "versions", "a run's versions: the archive and the live one", [client], cmd_versions
    )
    versions.add_argument("run", metavar="RUN", type=_run_arg, help=RUN_HELP)

    lineage = command(
        "lineage", "a run's ancestors, versions and descendants, as a tree", [client], cmd_lineage
    )
    lineage.add_argument("run", metavar="RUN", type=_run_arg, help=RUN_HELP)

    events = command(
        "events",
        "the event log, of every run or of one (--json: one JSON object per line)",
        [client],
        cmd_events,
    )
    events.add_argument("run", metavar="RUN", type=_run_arg, nargs="?", help=RUN_HELP)
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
    as_of.add_argument("run", metavar="RUN", type=_run_arg, help=RUN_HELP)
    point = as_of.add_mutually_exclusive_group(required=True)
    point.add_argument("--position", type=_count_arg, metavar="N", help="an event position")
    point.add_argument(
        "--time",
        type=_time_arg,
        metavar="T",
        help="seconds since the epoch, or ISO-8601 (local time unless it has an offset)",
    )
    _history_filters(as_of)

    sync = command(
        "sync",
        "upload spooled runs: offline runs, or runs whose process could not reach the server "
        "(idempotent: nothing is applied twice)",
        [client],
        cmd_sync,
    )
    sync.add_argument(
        "paths",
        metavar="PATH",
        nargs="+",
        help="a run's spool folder (printed by the SDK), or a folder holding several "
        "(e.g. ./runhistory)",
    )


def _rebuild_command(command: Command, common: argparse.ArgumentParser) -> None:
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
        "--address", help=f"the server (default: $RUNHISTORY_ADDRESS or {DEFAULT_ADDRESS})"
    )
    target.add_argument(
        "--db", help="rebuild offline on this database instead, with no server running"
    )


def _history_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keys",
        type=_keys_arg,
        metavar="K1,K2",
        help="only these keys: k1,k2,... (history: the rows that hold every one, as W&B's "
        "scan_history)",
    )
    # Any integer: the bounds are checked by the one rule every surface uses (an
    # INVALID_ARGUMENT, as from the SDK, gRPC and the web API).
    parser.add_argument("--min-step", type=_integer_arg, metavar="N", help="from step N")
    parser.add_argument("--max-step", type=_integer_arg, metavar="N", help="up to step N")
    parser.add_argument(
        "--own-only", action="store_true", help="a fork's own rows, without the inherited ones"
    )


RUN_HELP = "entity/project/run_id, or a version's immutable ID (that version is read)"


def _run_arg(text: str) -> str:
    """entity/project/run_id, or a version's immutable ID (bare or as entity/project/ID)."""
    if text.count("/") != 2 and not is_version_id(text):
        raise argparse.ArgumentTypeError(
            f"invalid run {text!r}: use entity/project/run_id, or a version's immutable ID"
        )
    try:
        return str(parse_run_or_version(text))
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


def _integer_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: an integer") from None


def _page_size_arg(text: str) -> int:
    try:
        return check_page_size(int(text))
    except (ValueError, RunHistoryError):
        raise argparse.ArgumentTypeError(
            f"invalid page size {text!r}: 1 to {MAX_PAGE_SIZE} runs"
        ) from None


def _at_least(low: int, what: str) -> Callable[[str], int]:
    """An argument type: an integer >= `low`, named `what` in its refusal."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: an integer >= {low}")
        return value

    return parse


_count_arg = _at_least(0, "value")
_limit_arg = _at_least(1, "limit")


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
    try:
        parse_http_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: a number of seconds >= 0 (0: never)"
        )
    return value


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
