"""The SQL database that holds the read models, behind two context managers:
`write()` for a transaction that changes rows and `read()` for a consistent snapshot.

On a SQLite file, every writer of this process (the event store's inserts, the read
models' transactions, API keys) first takes the file's `WriteTurn`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.pool import StaticPool

from runhistory.domain.errors import ServerBusy
from runhistory.projections.schema import metadata

# The first key of the advisory lock for making tables (the second is the schema's).
SCHEMA_LOCK_KEY = 0x52554E48  # "RUNH"

# How long a writer waits for its turn before its request is refused as busy (UNAVAILABLE,
# which clients retry). Turns last one insert or one page of read-model changes.
TURN_TIMEOUT = 30.0


class WriteTurn:
    """The order in which this process's threads write to one SQLite file: first come,
    first served, and a thread may take its turn again while it holds it.

    SQLite lets one writer in at a time; the others poll for its lock, sleeping up to
    100 ms between tries, so a thread that writes transaction after transaction (the
    read models catching up) can keep them out for as long as it has work, while each
    waiting thread holds whatever it took before (the event store's single writer
    connection, which every other request then queues behind). Waiting here instead
    holds nothing and hands the lock over at once; SQLite's own lock is left to
    arbitrate between processes.
    """

    def __init__(self, timeout: float = TURN_TIMEOUT) -> None:
        self.timeout = timeout
        self._guard = threading.Lock()
        self._owner: int | None = None
        self._depth = 0
        self._waiting: deque[tuple[int, threading.Event]] = deque()

    def acquire(self, timeout: float | None = None) -> bool:
        me = threading.get_ident()
        with self._guard:
            if self._owner == me:
                self._depth += 1
                return True
            if self._owner is None and not self._waiting:
                self._owner, self._depth = me, 1
                return True
            ticket = threading.Event()
            self._waiting.append((me, ticket))
        if ticket.wait(self.timeout if timeout is None else timeout):
            return True  # `release` made this thread the owner
        with self._guard:
            if ticket.is_set():  # handed over just as the wait timed out
                return True
            self._waiting.remove((me, ticket))
            return False

    def release(self) -> None:
        with self._guard:
            if self._owner != threading.get_ident():
                raise RuntimeError("a write turn released by a thread that does not hold it")
            self._depth -= 1
            if self._depth:
                return
            if self._waiting:
                owner, ticket = self._waiting.popleft()
                self._owner, self._depth = owner, 1
                ticket.set()
            else:
                self._owner = None

    @contextmanager
    def taken(self) -> Iterator[None]:
        """Hold the turn for the block; refused as busy after `timeout` seconds."""
        if not self.acquire():
            raise ServerBusy(
                f"the server is busy: this request waited {self.timeout:g} s for its turn to "
                "write to the database, behind other writers; it changed nothing, retry it"
            )
        try:
            yield
        finally:
            self.release()


_turns: dict[str, WriteTurn] = {}
_turns_guard = threading.Lock()


def write_turn(sqlite_file: str) -> WriteTurn:
    """The one `WriteTurn` of this process for a SQLite file, however it is named."""
    key = os.path.realpath(sqlite_file)
    with _turns_guard:
        return _turns.setdefault(key, WriteTurn())


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.in_memory = self.is_sqlite and (url in ("sqlite://", "sqlite:///:memory:"))
        if self.in_memory:
            # One shared connection; a lock stands in for SQLite's file locking.
            self.engine = create_engine(
                "sqlite://",
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
            )
            self._lock: threading.RLock | None = threading.RLock()
        else:
            self.engine = create_engine(url, pool_pre_ping=not self.is_sqlite)
            self._lock = None
        self._turn = (
            write_turn(self.engine.url.database or "")
            if self.is_sqlite and not self.in_memory
            else None
        )
        if self.is_sqlite:
            _use_explicit_sqlite_transactions(self.engine)
        with self.making_tables():
            metadata.create_all(self.engine)

    @contextmanager
    def making_tables(self) -> Iterator[None]:
        """Hold this schema's lock for making tables, on PostgreSQL: processes started at
        the same moment on an empty database make them one after another. (Two that race
        both see a table missing and both create it; one fails, with a UniqueViolation on
        pg_type_typname_nsp_index.) SQLite's own write lock does this for a file.

        The lock is a session advisory lock keyed by the schema's name, on a connection of
        its own, held until the block ends."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        key = {"app": SCHEMA_LOCK_KEY}
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:app, hashtext(current_schema()))"), key)
            conn.commit()
            try:
                yield
            finally:
                conn.execute(
                    text("SELECT pg_advisory_unlock(:app, hashtext(current_schema()))"), key
                )
                conn.commit()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        turn = self._turn.taken() if self._turn is not None else nullcontext()
        with turn, self._locked(), self.engine.connect() as conn:
            if self.is_sqlite:
                # Take the write lock up front: a deferred transaction that reads and then
                # writes can fail with "database is locked" instead of waiting its turn.
                conn.info["begin"] = "BEGIN IMMEDIATE"
            with conn.begin():
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._locked(), self.engine.connect() as conn, conn.begin():
            yield conn

    def _locked(self) -> threading.RLock | nullcontext[None]:
        return self._lock if self._lock is not None else nullcontext()

    def dispose(self) -> None:
        self.engine.dispose()


def _use_explicit_sqlite_transactions(engine: Engine) -> None:
    """pysqlite's own transaction handling does not BEGIN before SELECTs; take it over so
    a read sees one snapshot and a write can ask for BEGIN IMMEDIATE."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.info.pop("begin", "BEGIN"))
