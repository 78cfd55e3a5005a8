"""`refusal_for`: real failures of SQLite and PostgreSQL, as the drivers and the libraries
that wrap them raise them, become refusals that say what happened; others stay internal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import postgres_schema_url
from eventsourcing.persistence import ConnectionUnavailableError
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from runhistory.domain.errors import DiskFull, ReadOnlyDatabase, ServerBusy
from runhistory.service.database_errors import refusal_for
from runhistory.service.settings import Settings


def sqlite_error(tmp_path: Path, pragma: str, statement: str) -> sqlite3.Error:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS t (x BLOB)")
    conn.execute(pragma)
    try:
        conn.execute(statement)
    except sqlite3.Error as error:
        return error
    finally:
        conn.close()
    raise AssertionError(f"{statement} did not fail after {pragma}")


def test_a_full_sqlite_database_is_disk_full(tmp_path: Path) -> None:
    # max_page_count caps the file as a full disk would: SQLite answers SQLITE_FULL.
    error = sqlite_error(
        tmp_path,
        "PRAGMA max_page_count = 3",
        "INSERT INTO t VALUES (zeroblob(100000))",
    )
    refusal = refusal_for(error)
    assert isinstance(refusal, DiskFull)
    assert refusal.code == "RESOURCE_EXHAUSTED" and refusal.reason == "DISK_FULL"
    assert refusal.message.startswith("the server's disk is full (")
    assert "nothing of this request was written" in refusal.message


def test_a_read_only_sqlite_database_is_unavailable(tmp_path: Path) -> None:
    error = sqlite_error(tmp_path, "PRAGMA query_only = ON", "INSERT INTO t VALUES (1)")
    refusal = refusal_for(error)
    assert isinstance(refusal, ReadOnlyDatabase)
    assert refusal.code == "UNAVAILABLE" and refusal.reason == "DATABASE_READ_ONLY"
    assert refusal.message.startswith("the database is read-only (")


def test_wrapped_errors_are_found_by_their_cause(tmp_path: Path) -> None:
    """eventsourcing re-raises the driver's error `from` it; SQLAlchemy keeps it as `orig`."""
    from eventsourcing.persistence import OperationalError

    full = sqlite_error(
        tmp_path, "PRAGMA max_page_count = 3", "INSERT INTO t VALUES (zeroblob(100000))"
    )
    try:
        raise OperationalError(full) from full
    except OperationalError as wrapped:
        assert isinstance(refusal_for(wrapped), DiskFull)
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(DBAPIError) as raised, engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA query_only = ON")
        conn.execute(text("INSERT INTO t VALUES (1)"))
    engine.dispose()
    assert isinstance(refusal_for(raised.value), ReadOnlyDatabase)


def test_a_pool_that_timed_out_is_busy_and_other_errors_stay_internal(tmp_path: Path) -> None:
    busy = refusal_for(ConnectionUnavailableError("Timed out waiting for return of writer"))
    assert isinstance(busy, ServerBusy) and busy.code == "UNAVAILABLE"
    assert "the server is busy" in busy.message and "retry" in busy.message
    syntax = sqlite_error(tmp_path, "PRAGMA query_only = OFF", "SELECT * FROM no_such_table")
    assert refusal_for(syntax) is None
    assert refusal_for(ValueError("a bug")) is None


def test_a_read_only_postgresql_transaction_is_unavailable() -> None:
    urls = postgres_schema_url()
    url = next(urls)
    try:
        engine = create_engine(Settings(db=url).db_url)
        with pytest.raises(DBAPIError) as raised, engine.begin() as conn:
            conn.execute(text("SET TRANSACTION READ ONLY"))  # as on a standby
            conn.execute(text("CREATE TABLE t (x int)"))
    finally:
        engine.dispose()
        urls.close()
    refusal = refusal_for(raised.value)
    assert isinstance(refusal, ReadOnlyDatabase), raised.value
