"""Failures of the database that a client can do something about, as refusals.

A full disk, a read-only database, a database that is unreachable or too busy to answer in
time: each fails the request without writing anything, and a retry succeeds once the
cause is gone. The entrypoints (gRPC, the web API, the W&B API) refuse such a request
with `refusal_for(error)`: `DiskFull` (RESOURCE_EXHAUSTED), `ReadOnlyDatabase` or
`ServerBusy` (UNAVAILABLE), each with a message that says what happened; the SDK retries
all three. Anything else stays an internal error.

The drivers' errors arrive wrapped (by eventsourcing, by SQLAlchemy), so the chain of
causes is searched.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator

from eventsourcing.persistence import ConnectionUnavailableError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from runhistory.domain.errors import (
    DiskFull,
    ReadOnlyDatabase,
    RunHistoryError,
    ServerBusy,
    Unavailable,
)

NOTHING_WRITTEN = "nothing of this request was written"

# SQLite's primary result codes (the low byte of an extended code).
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_FULL = 5, 6, 8, 13
# PostgreSQL's SQLSTATEs.
PG_DISK_FULL = "53100"
PG_READ_ONLY = "25006"  # read_only_sql_transaction: a standby, or default_transaction_read_only
PG_BUSY = ("53300", "57P03", "55P03", "40P01")  # too many connections, starting up, lock, deadlock
PG_CONNECTION = ("08", "57P01", "57P02")  # connection exceptions, shutdown


def refusal_for(error: BaseException) -> RunHistoryError | None:
    """The refusal for a database failure a retry can fix, or None for any other error."""
    for cause in _causes(error):
        found = _classify(cause)
        if found is not None:
            return found
    return None


def disk_full(detail: str) -> DiskFull:
    return DiskFull(
        f"the server's disk is full ({detail}): {NOTHING_WRITTEN}; free space on the "
        "server's disk, then retry"
    )


def read_only(detail: str) -> ReadOnlyDatabase:
    return ReadOnlyDatabase(
        f"the database is read-only ({detail}): the server cannot write to it, so "
        f"{NOTHING_WRITTEN}; make it writable (file permissions, the mount, or a primary "
        "rather than a replica), then retry"
    )


def busy(detail: str) -> ServerBusy:
    return ServerBusy(
        f"the server is busy: this request waited too long for the database ({detail}); "
        "it changed nothing, retry it"
    )


def _classify(cause: BaseException) -> RunHistoryError | None:
    detail = f"{type(cause).__name__}: {cause}".strip()
    if isinstance(cause, ConnectionUnavailableError | PoolTimeout):
        return busy(detail)
    if isinstance(cause, sqlite3.Error):
        code = getattr(cause, "sqlite_errorcode", -1) & 0xFF
        if code == SQLITE_FULL:
            return disk_full(detail)
        if code == SQLITE_READONLY:
            return read_only(detail)
        if code in (SQLITE_BUSY, SQLITE_LOCKED):
            return busy(detail)
        return None
    sqlstate = getattr(cause, "sqlstate", None)  # psycopg's errors
    if isinstance(sqlstate, str):
        if sqlstate == PG_DISK_FULL:
            return disk_full(detail)
        if sqlstate == PG_READ_ONLY:
            return read_only(detail)
        if sqlstate in PG_BUSY:
            return busy(detail)
        if sqlstate.startswith(PG_CONNECTION):
            return Unavailable(
                f"the server lost its connection to the database ({detail}); retry the "
                "request once the database is back"
            )
        return None
    if isinstance(cause, OSError):
        if cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return disk_full(detail)
        if cause.errno == errno.EROFS:
            return read_only(detail)
    return None


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and those it wraps: `__cause__`, `__context__` and SQLAlchemy's `orig`."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        cause = todo.pop(0)
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        yield cause
        orig = getattr(cause, "orig", None)
        todo += [orig if isinstance(orig, BaseException) else None]
        todo += [cause.__cause__, cause.__context__]
