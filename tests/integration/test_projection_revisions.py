"""A projection whose revision is raised replays the log on the next start, in any
combination: every read afterwards equals a full rebuild's, on a database holding rewinds,
forks of forks, archived versions, artifacts, config changes, explicit summaries and metric
definitions."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from conftest import SHARED, exact
from sqlalchemy import select

from runhistory.domain.identity import RunPath
from runhistory.domain.values import LogCall
from runhistory.projections.base import Projection
from runhistory.projections.history import SEAL_ROWS
from runhistory.projections.runner import ALL_PROJECTIONS, ProjectionRunner, connected
from runhistory.projections.schema import tracking
from runhistory.projections.summary import CHECKPOINT_EVERY, SummaryProjection
from runhistory.service.runs import RunService
from runhistory.service.settings import Settings

E, P = "ent", "proj"
T0 = 1_700_000_000.0


def rows(start: int, count: int, scale: float = 1.0) -> list[LogCall]:
    """`count` log calls from step `start` on: dense keys, a sparse one, a NaN."""
    calls = []
    for step in range(start, start + count):
        data: dict[str, Any] = {"loss": scale / (1 + step), "acc": step % 7}
        if step % 10 == 0:
            data["eval"] = {"score": step * scale}
        if step % 97 == 0:
            data["loss"] = math.nan
        calls.append(LogCall(data, T0 + step, step=step))
    return calls


def log(service: RunService, session: Any, calls: list[LogCall], batch: int) -> None:
    for i in range(0, len(calls), batch):
        service.log(session.path, calls[i : i + batch], writer=session.writer)


def write_lineage(service: RunService) -> None:
    """Rewinds, forks of forks (one of an archived version), archived versions, artifacts,
    config changes, explicit summaries and metric definitions; rows sealed in blocks and
    rows in the tail, past summary checkpoints."""
    assert SEAL_ROWS < 3 * 100 and CHECKPOINT_EVERY < 150
    a = service.init(E, P, "a", config={"lr": 0.1}, started_at=T0)
    service.define_metric(a.path, "loss", "min,max,mean", writer=a.writer)
    log(service, a, rows(0, 300), batch=100)
    service.set_summary(a.path, {"best": 1, "nested": {"x": 2.5}}, writer=a.writer)
    service.update_config(a.path, {"bs": 32, "layers": [64, 64]}, writer=a.writer)
    service.record_artifact(a.path, "produced", "ckpt-a1", "model", "d1", 10, writer=a.writer)
    log(service, a, rows(300, 5), batch=1)

    f1 = service.init(E, P, "f1", fork_from="a?_step=150", config={"lr": 0.2}, started_at=T0)
    service.define_metric(f1.path, "acc", "max", writer=f1.writer)
    service.record_artifact(f1.path, "used", "ckpt-a1", "model", "d1", 10, writer=f1.writer)
    log(service, f1, rows(151, 200, scale=2.0), batch=200)

    # f1 now forks from an archived version of a.
    a2 = service.init(E, P, "a", resume_from="a?_step=200", config={"lr": 0.05}, started_at=T0)
    log(service, a2, rows(201, 50, scale=3.0), batch=7)
    service.record_artifact(a2.path, "produced", "ckpt-a2", "model", "d2", 20, writer=a2.writer)
    service.set_summary(a2.path, {"note": "second"}, writer=a2.writer)

    f2 = service.init(E, P, "f2", fork_from="f1?_step=250", started_at=T0)
    log(service, f2, rows(251, 20, scale=4.0), batch=20)
    f2b = service.init(E, P, "f2", resume_from="f2?_step=260", started_at=T0)
    log(service, f2b, rows(261, 10, scale=5.0), batch=1)
    service.update_config(f2b.path, {"tail": True}, writer=f2b.writer)
    service.finish(f2b.path, writer=f2b.writer)

    a3 = service.init(E, P, "a", resume_from="a?_step=100", started_at=T0)
    log(service, a3, rows(101, 10, scale=6.0), batch=1)
    service.finish(a3.path, 1, writer=a3.writer)
    f3 = service.init(E, P, "f3", fork_from="f2?_step=265", started_at=T0)
    log(service, f3, rows(266, 3, scale=7.0), batch=3)
    a4 = service.init(E, P, "a", resume="must", started_at=T0)
    log(service, a4, rows(111, 2, scale=8.0), batch=2)
    service.finish(a4.path, writer=a4.writer)


def read_everything(service: RunService) -> Any:
    """Every read of every run and version, and the read models' checksums."""
    found: dict[str, Any] = {"runs": service.runs(E, P), "checksums": service.checksums()}
    for record in found["runs"]:
        path = RunPath.parse(record.path)
        versions = service.versions(path)
        found[str(path)] = {
            "run": service.run(path),
            "history": service.history(path),
            "history keys": service.history(path, keys=["eval.score", "acc"]),
            "history own": service.history(path, own_only=True),
            "history steps": service.history(path, keys=["loss"], min_step=90, max_step=260),
            "summary": service.summary(path),
            "config": service.config(path),
            "versions": versions,
            "lineage": service.lineage(path),
            "artifacts": service.artifacts(path),
            "by version": {
                v.version: {
                    "history": service.history(path, version=v.version),
                    "history keys": service.history(path, keys=["loss"], version=v.version),
                    "summary": service.summary(path, version=v.version),
                    "config": service.config(path, version=v.version),
                    "artifacts": service.artifacts(path, version=v.version),
                }
                for v in versions
            },
        }
    return exact(_plain(found))


def _plain(value: Any) -> Any:
    """Records as dicts, so `exact` compares every field."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def tracking_keys(service: RunService) -> set[str]:
    with service.db.read() as conn:
        return set(conn.execute(select(tracking.c.projection)).scalars())


@pytest.mark.backends(*SHARED)
@pytest.mark.parametrize("projection", ALL_PROJECTIONS, ids=[p.name for p in ALL_PROJECTIONS])
def test_a_raised_revision_replays_to_what_a_rebuild_makes(
    projection: type[Projection], database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RunService(Settings(db=database)) as service:
        write_lineage(service)
        live = read_everything(service)
        assert len(live) == 2 + 4  # the runs a, f1, f2 and f3
        assert {v.version for v in service.versions(RunPath(E, P, "a"))} == {1, 2, 3}

    monkeypatch.setattr(projection, "revision", projection.revision + 1)
    with RunService(Settings(db=database)) as service:
        assert projection.tracking_key() in tracking_keys(service)
        replayed = read_everything(service)
        service.rebuild()
        rebuilt = read_everything(service)
    assert replayed == rebuilt
    assert rebuilt == live


def test_the_summary_replays_with_the_history_it_reads() -> None:
    names = connected(ALL_PROJECTIONS, {"summary"})
    assert names == {"summary", "history"}
    assert connected(ALL_PROJECTIONS, {"history"}) == names
    assert connected(ALL_PROJECTIONS, {"runs"}) == {"runs"}


def test_projections_apply_each_event_after_those_they_read(tmp_path: Any) -> None:
    """Whatever order they are given in; a projection without the one it reads is refused."""
    reordered = (*ALL_PROJECTIONS[1:], ALL_PROJECTIONS[0])
    with RunService(Settings(db=str(tmp_path / "a.db"))) as service:
        runner = ProjectionRunner(service.store, service.db, reordered)
        names = [p.name for p in runner.projections]
        assert names.index("history") < names.index("summary")
        with pytest.raises(ValueError, match="the summary projection reads the history"):
            ProjectionRunner(service.store, service.db, (SummaryProjection,))
