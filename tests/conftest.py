"""Fixtures: the same scenarios on the in-memory store, a SQLite file and PostgreSQL.

PostgreSQL tests use the server on 127.0.0.1:5432 (database `test`, overridable with
RUNHISTORY_TEST_POSTGRES), each test in a schema of its own; they skip with the reason
when no server answers there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from runhistory.service.runs import RunService
from runhistory.service.settings import Settings

BACKENDS = ["memory", "sqlite-file", "postgres"]
POSTGRES = os.environ.get(
    "RUNHISTORY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
_postgres_problem: str | None = None


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or None when it can. Asked once per session."""
    global _postgres_problem
    if _postgres_problem is None:
        try:
            engine = create_engine(POSTGRES, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
            _postgres_problem = ""
        except (OperationalError, ImportError) as error:
            _postgres_problem = f"no PostgreSQL at {POSTGRES}: {str(error).splitlines()[0]}"
    return _postgres_problem or None


def postgres_schema_url() -> Iterator[str]:
    """A fresh schema, as a URL whose connections use it; dropped afterwards."""
    problem = postgres_problem()
    if problem and os.environ.get("RUNHISTORY_REQUIRE_POSTGRES"):
        pytest.fail(problem)  # CI starts PostgreSQL: there, its absence is a failure
    if problem:
        pytest.skip(problem)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    """The `db` setting of a fresh, empty store on the backend."""
    if backend == "memory":
        yield "memory"
    elif backend == "sqlite-file":
        yield str(tmp_path / "runhistory.db")
    else:
        yield from postgres_schema_url()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def service(database: str) -> Iterator[RunService]:
    svc = RunService(Settings(db=database))
    yield svc
    svc.close()


def make_service(backend: str, tmp_path: Path, **settings: object) -> RunService:
    """A service on the in-memory store or a SQLite file in `tmp_path`."""
    db = "memory" if backend == "memory" else str(tmp_path / "runhistory.db")
    return RunService(Settings(db=db, **settings))
