"""The server's size limits as `serve` flags and environment variables.

Standard library only: the command line builds its `serve` flags from this list before it
knows whether the server side is installed. `Settings` holds the defaults and the rules
(each limit is an integer with a lower bound); a flag wins over its variable, a variable
over the default.
"""

from __future__ import annotations

# Each `Settings` field that bounds a request, with what it counts.
SIZE_LIMITS: dict[str, str] = {
    "max_key_length": "characters of a logged key (default 256)",
    "max_keys_per_row": "keys in one history row (default 10000)",
    "max_depth": "levels of nested dicts in logged data (default 32)",
    "max_row_bytes": "bytes of one history row (default 10 MiB)",
    "max_request_bytes": "bytes of rows in one request (default 16 MiB)",
    "max_calls_per_batch": "log calls in one batch (default 10000)",
    "max_stream_batches": "batches in one LogStream (default 100000)",
    "max_open_streams": "follow and log streams open at once (default 8)",
}


def variable(name: str) -> str:
    """`max_row_bytes` -> `RUNHISTORY_MAX_ROW_BYTES`."""
    return f"RUNHISTORY_{name.upper()}"


def flag(name: str) -> str:
    """`max_row_bytes` -> `--max-row-bytes`."""
    return "--" + name.replace("_", "-")
