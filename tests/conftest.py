"""Fixtures: the same scenarios run on the in-memory store and on a SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runhistory.service.runs import RunService
from runhistory.service.settings import Settings

BACKENDS = ["memory", "sqlite-file"]


def make_service(backend: str, tmp_path: Path, **settings: object) -> RunService:
    db = "memory" if backend == "memory" else str(tmp_path / "runhistory.db")
    return RunService(Settings(db=db, **settings))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def service(backend: str, tmp_path: Path) -> Iterator[RunService]:
    svc = make_service(backend, tmp_path)
    yield svc
    svc.close()
