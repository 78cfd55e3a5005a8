"""The `runhistory` command: `parser` (its arguments), `read_commands` (the client
commands, over the SDK), `server_commands` (serve, project, keys, rebuild, the demo's
server), `demo` (the demo's script) and `render` (what it prints).

Only the server commands import the server side, when they run: the client commands work
on a client-only install. Errors print one line; see `parser` for the exit codes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from runhistory.domain.errors import RunHistoryError
from runhistory.service.cli.parser import Handler, build_parser
from runhistory.service.cli.render import PROG


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        handler: Handler = args.handler
        return handler(args)
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
