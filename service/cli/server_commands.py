"""The server-side commands: serve, project, keys, the offline rebuild and the demo's server.

They import the server (the service layer, SQLAlchemy, eventsourcing, pydantic) when they
run, never at import time: a client-only install (`pip install runhistory`, without the
`[server]` extra) runs the client commands, and a server command there says in one line
what it lacks (`runhistory.extras.require_server`, first thing in each).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runhistory.domain.errors import InvalidArgument, NotFound, RunHistoryError
from runhistory.extras import require_server
from runhistory.service.addresses import DEFAULT_ADDRESS
from runhistory.service.cli.demo import rewind_and_fork
from runhistory.service.cli.read_commands import reader
from runhistory.service.cli.render import (
    PROG,
    ProgressBar,
    local_time,
    plural,
    print_json,
    print_table,
)
from runhistory.service.limits import SIZE_LIMITS, flag, variable


class Unavailable(RunHistoryError):
    code = "UNAVAILABLE"


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
    require_server("serve")
    settings = _settings(
        args.db,
        require_keys=args.require_keys,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        **{name: getattr(args, name) for name in SIZE_LIMITS},
        crash_after=args.crash_after,
    )
    address = args.address or os.environ.get("RUNHISTORY_ADDRESS") or DEFAULT_ADDRESS
    with _until_signalled() as stopping:
        running = _start(settings, address, args.http, projections=args.projections)
        try:
            workers = "" if args.projections else "; read models left to projection workers"
            keys = "API keys required" if settings.require_keys else "no API keys (--no-auth)"
            tls = ", TLS" if settings.tls_cert else ""
            crashes = (
                f", runs crashed after {settings.crash_after:g} s of silence"
                if settings.crash_after
                else ", crash detection off"
            )
            print(
                f"{PROG}: serving on {running.address}{tls}, database "
                f"{_safe_url(settings.db_url)}, {keys}{crashes}{workers} "
                "(stop with Ctrl-C or SIGTERM)",
                flush=True,
            )
            if running.web is not None:
                print(f"{PROG}: web UI on {running.web.url}/", flush=True)
                url = running.web.url
                print(f"{PROG}: W&B API on {url} (WANDB_BASE_URL={url})", flush=True)
            while not stopping.wait(0.5):
                pass
            print(
                f"{PROG}: stopping (requests in flight get a few seconds to finish)",
                file=sys.stderr,
                flush=True,
            )
        finally:
            running.stop()
    print(f"{PROG}: stopped", file=sys.stderr)
    return 0


def _start(settings: Any, address: str, http: str | None, **options: Any) -> Any:
    """`bootstrap.start`, with a database that cannot be opened or an address that cannot
    be bound as one line."""
    from runhistory.service.bootstrap import start

    try:
        with _opening(settings):
            return start(settings, address, http, **options)
    except OSError as error:
        raise Unavailable(str(error)) from error


def cmd_project(args: argparse.Namespace) -> int:
    require_server("project")
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


def cmd_keys(args: argparse.Namespace) -> int:
    require_server("keys")
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
        print_json(
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
        [
            r.key_id,
            r.entity,
            r.role.label,
            r.label,
            local_time(r.created_at),
            local_time(r.revoked_at),
        ]
        for r in records
    ]
    print_table(["key id", "entity", "role", "label", "created", "revoked"], rows)


# ---- rebuild ---------------------------------------------------------------------------------


def cmd_rebuild(args: argparse.Namespace) -> int:
    bar = ProgressBar("rebuilding")
    try:
        if args.db is not None:
            result = _rebuild_offline(args.db, bar)
        else:
            result = {}
            for update in reader(args).rebuild():
                bar.show(update["applied"], update["position"], update["target"])
                if update.get("done"):
                    result = dict(update)
            if not result:
                raise Unavailable("the server ended the rebuild without reporting its result")
    finally:
        bar.finish()  # ends the bar's line, before a result or an error
    result.pop("done", None)
    if args.json:
        print_json(result)
    else:
        same = "equal to" if result["equal_to_live"] else "DIFFERENT from"
        print(
            f"replayed {plural(result['applied'], 'event')}; "
            f"the rebuilt read models are {same} the live ones"
        )
        width = max((len(name) for name in result["checksums"]), default=0)
        for name, digest in sorted(result["checksums"].items()):
            print(f"  {name:<{width}}  {digest[:16]}")
    return 0 if result["equal_to_live"] else 1


def _rebuild_offline(db: str, bar: ProgressBar) -> dict[str, Any]:
    require_server("rebuild --db")
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


# ---- demo ------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    require_server("demo")
    from runhistory.service.auth import Role

    with tempfile.TemporaryDirectory(prefix="runhistory-demo-") as tmp:
        settings = _settings(args.db or str(Path(tmp) / "demo.db"))
        running = _start(settings, "127.0.0.1:0", args.http, http_fallback=True)
        try:
            # The demo server wants keys like any other: the demo makes its own.
            keys = running.keys
            assert keys is not None, "the demo's settings require keys"
            _, key = keys.create("demo", Role.WRITER, "runhistory demo")
            paths = rewind_and_fork(running.address, key)
            web = running.web
            if web is not None:
                _, web_key = keys.create("demo", Role.READER, "runhistory demo: web UI")
                print(f"\nweb UI: {web.url}/demo/rewind  (sign in with the key {web_key})")
                for label, path in paths.items():
                    entity, project, run_id = path.split("/")
                    print(f"  {label:<8} {web.url}/{entity}/{project}/runs/{run_id}")
                _, wandb_key = keys.create("demo", Role.WRITER, "runhistory demo: wandb SDK")
                print("\nthe wandb SDK logs here unchanged, with these two variables:")
                print(f"  export WANDB_BASE_URL={web.url}")
                print(f"  export WANDB_API_KEY={wandb_key}")
            if web is not None and not args.keep:
                print(f"(the demo stops now; `{PROG} demo --keep` keeps it serving)")
            if args.keep:
                print(f"{PROG}: serving until Ctrl-C (gRPC on {running.address})", flush=True)
                with _until_signalled() as stopping:
                    while not stopping.wait(0.5):
                        pass
        finally:
            running.stop()
    return 0


# ---- settings and the database ---------------------------------------------------------------


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
        if problem["loc"] and problem["loc"][0] in SIZE_LIMITS:
            name = str(problem["loc"][0])
            raise InvalidArgument(
                f"invalid {name} {problem['input']!r} ({flag(name)} or {variable(name)}): {reason}"
            ) from None
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
        raise Unavailable(
            f"cannot open the database {_safe_url(settings.db_url)}: {reason}"
        ) from error


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url
