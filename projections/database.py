"""The SQL database that holds the read models, behind two context managers:
`write()` for a transaction that changes rows and `read()` for a consistent snapshot."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import StaticPool

from runhistory.projections.schema import metadata


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
        if self.is_sqlite:
            _use_explicit_sqlite_transactions(self.engine)
        metadata.create_all(self.engine)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self._locked(), self.engine.connect() as conn:
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
