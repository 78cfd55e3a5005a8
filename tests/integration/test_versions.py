"""Immutable version IDs and forks from exact versions, through the run service and its
read models, on every backend."""

from __future__ import annotations

import pytest

from runhistory.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from runhistory.domain.identity import RunPath, VersionRef, version_id
from runhistory.domain.values import LogCall
from runhistory.service.records import ForkedFrom
from runhistory.service.runs import RunService

T0 = 1_700_000_000.0


def log(service: RunService, session, first: int, last: int, scale: float = 1.0, **kw) -> None:
    calls = [
        LogCall({"m": s * scale, **kw}, timestamp=T0 + s, step=s, commit=True)
        for s in range(first, last + 1)
    ]
    service.log(session.path, calls, writer=session.writer)


def values(rows: list[dict]) -> list[tuple[int, float]]:
    return [(row["_step"], row["m"]) for row in rows]


def event_count(service: RunService) -> int:
    return len(service.events(0, limit=100_000))


def rewound_source(service: RunService):
    """A run of 20 rows (m = step) with config lr=1, rewound to step 5 with lr=2 and logged
    again at steps 6..9 (m = -step): version 1 archived, version 2 live."""
    v1 = service.init("ent", "proj", "src", config={"lr": 1}, started_at=T0)
    log(service, v1, 0, 19)
    service.set_summary(v1.path, {"best": 7}, writer=v1.writer)
    v2 = service.init("ent", "proj", resume_from="src?_step=5", config={"lr": 2})
    log(service, v2, 6, 9, scale=-1.0)
    return v1, v2


def test_each_version_keeps_its_immutable_id_through_rewinds(service: RunService) -> None:
    v1, v2 = rewound_source(service)
    path = v1.path
    assert v1.immutable_id == version_id(path.aggregate_id, 1)
    assert v2.immutable_id == version_id(path.aggregate_id, 2) != v1.immutable_id
    versions = service.versions(path)
    assert [v.immutable_id for v in versions] == [v1.immutable_id, v2.immutable_id]
    assert service.run(path).immutable_id == v2.immutable_id
    lineage = service.lineage(path)
    assert lineage.immutable_id == v2.immutable_id
    assert [v.immutable_id for v in lineage.versions] == [v1.immutable_id, v2.immutable_id]
    # A third version: the first two keep theirs.
    v3 = service.init("ent", "proj", resume_from="src?_step=2")
    ids = [v.immutable_id for v in service.versions(path)]
    assert ids == [v1.immutable_id, v2.immutable_id, v3.immutable_id]
    assert len(set(ids)) == 3
    for number, immutable_id in enumerate(ids, 1):
        assert service.resolve_version(VersionRef(immutable_id)) == (path, number)


def test_a_version_read_by_its_id_is_as_it_was(service: RunService) -> None:
    v1, _v2 = rewound_source(service)
    path, named = service.resolve_version(VersionRef(v1.immutable_id, "ent", "proj"))
    assert named == 1
    record = service.run(path, version=named)
    assert record.archived and record.version == 1 and record.last_step == 19
    assert record.immutable_id == v1.immutable_id
    live = service.run(path)
    assert not live.archived and live.last_step == 9
    assert values(service.history(path, version=1)) == [(s, float(s)) for s in range(20)]
    assert service.config(path, version=1) == {"lr": 1}
    with pytest.raises(NotFound, match="no version 3"):
        service.run(path, version=3)


def test_an_unknown_or_misplaced_version_id_is_not_found(service: RunService) -> None:
    v1, _v2 = rewound_source(service)
    unknown = version_id(RunPath("ent", "proj", "nobody").aggregate_id, 1)
    with pytest.raises(NotFound, match=unknown):
        service.resolve_version(VersionRef(unknown))
    with pytest.raises(NotFound, match="in project ent/other"):
        service.resolve_version(VersionRef(v1.immutable_id, "ent", "other"))
    with pytest.raises(NotFound, match="among the runs of entity 'someone'"):
        service.resolve_version(VersionRef(v1.immutable_id), within_entity="someone")
    with pytest.raises(NotFound):
        service.init("ent", "proj", fork_from=f"{unknown}?_step=1")


def test_fork_from_an_archived_version_by_its_id(service: RunService) -> None:
    v1, v2 = rewound_source(service)
    fork = service.init("ent", "proj", "fork", fork_from=f"{v1.immutable_id}?_step=15")
    # Version 1's rows, config and summary, though the run now stands at version 2.
    assert values(service.history(fork.path)) == [(s, float(s)) for s in range(16)]
    assert fork.config == {"lr": 1}
    assert service.config(fork.path) == {"lr": 1}
    assert service.summary(fork.path) == {"m": 15.0}
    assert fork.next_step == 16
    expected = ForkedFrom(run="ent/proj/src", step=15, version=1, immutable_id=v1.immutable_id)
    assert fork.forked_from == expected
    assert service.run(fork.path).forked_from == expected
    (ancestor,) = service.lineage(fork.path).ancestors
    assert (ancestor.run, ancestor.version, ancestor.step) == ("ent/proj/src", 1, 15)
    assert ancestor.immutable_id == v1.immutable_id
    descendants = service.lineage(v1.path).descendants
    assert [(d.run, d.source_version, d.step) for d in descendants] == [("ent/proj/fork", 1, 15)]
    # The live version's ID forks the live version, under entity/project as well.
    live = service.init("ent", "proj", "fork2", fork_from=f"ent/proj/{v2.immutable_id}?_step=7")
    assert values(service.history(live.path)) == [
        *((s, float(s)) for s in range(6)),
        (6, -6.0),
        (7, -7.0),
    ]
    assert live.config == {"lr": 2}
    assert live.forked_from.version == 2
    # Past the archived version's last step: OUT_OF_RANGE naming it.
    with pytest.raises(Exception, match="last committed step is 19"):
        service.init("ent", "proj", fork_from=f"{v1.immutable_id}?_step=20")


def test_fork_from_an_archived_version_includes_the_row_its_rewind_committed(
    service: RunService,
) -> None:
    run = service.init("ent", "proj", "src", started_at=T0)
    log(service, run, 0, 9)
    service.log(run.path, [LogCall({"m": 10.0}, T0 + 10, 10, False)], writer=run.writer)
    service.init("ent", "proj", resume_from="src?_step=3")
    fork = service.init("ent", "proj", "fork", fork_from=f"{run.immutable_id}?_step=10")
    assert values(service.history(fork.path)) == [(s, float(s)) for s in range(11)]


def test_resume_from_an_archived_version_id_is_refused(service: RunService) -> None:
    v1, v2 = rewound_source(service)
    before = event_count(service)
    with pytest.raises(FailedPrecondition) as refused:
        service.init("ent", "proj", resume_from=f"{v1.immutable_id}?_step=3")
    message = refused.value.message
    assert "resume_from='src?_step=N'" in message
    assert f"fork_from='{v1.immutable_id}?_step=N'" in message
    assert event_count(service) == before
    assert service.run(v1.path).version == 2
    # The live version's ID rewinds the run, as its run ID does.
    v3 = service.init("ent", "proj", resume_from=f"{v2.immutable_id}?_step=3")
    assert v3.version == 3 and v3.path == v1.path
    assert service.versions(v1.path)[1].rewound_to_step == 3
    with pytest.raises(InvalidArgument, match="resume_from names run src but id is other"):
        service.init("ent", "proj", "other", resume_from=f"{v3.immutable_id}?_step=1")


def test_a_new_run_may_not_take_a_version_id(service: RunService) -> None:
    _v1, _v2 = rewound_source(service)
    taken = version_id(RunPath("ent", "proj", "x").aggregate_id, 1)
    with pytest.raises(InvalidArgument, match="reserved"):
        service.init("ent", "proj", taken)
    with pytest.raises(InvalidArgument, match="reserved"):
        service.init("ent", "proj", taken, fork_from="src?_step=1")


def test_a_fork_rewound_into_its_inherited_range_stands_on_the_lower_step(
    service: RunService,
) -> None:
    source = service.init("ent", "proj", "src", started_at=T0)
    log(service, source, 0, 19)
    fork = service.init("ent", "proj", "fork", fork_from="src?_step=15")
    log(service, fork, 16, 18, scale=10.0)
    rewound = service.init("ent", "proj", resume_from="fork?_step=5")
    assert rewound.forked_from.step == 5
    record = service.run(fork.path)
    assert record.forked_from.step == 5
    assert record.forked_from.version == 1
    (ancestor,) = service.lineage(fork.path).ancestors
    assert ancestor.step == 5
    assert [d.step for d in service.lineage(source.path).descendants] == [5]
    # The archived version stood on step 15, and still says so.
    assert service.run(fork.path, version=1).forked_from.step == 15
    assert values(service.history(fork.path)) == [(s, float(s)) for s in range(6)]
    # A rewind above the step it stands on changes nothing.
    log(service, rewound, 6, 8, scale=100.0)
    service.init("ent", "proj", resume_from="fork?_step=7")
    assert service.run(fork.path).forked_from.step == 5


def test_rewind_to_the_step_of_an_acknowledged_pending_row(service: RunService) -> None:
    run = service.init("ent", "proj", "src", started_at=T0)
    log(service, run, 0, 9)
    service.log(run.path, [LogCall({"m": 10.0}, T0 + 10, 10, False)], writer=run.writer)
    assert service.run(run.path).last_step == 9
    rewound = service.init("ent", "proj", resume_from="src?_step=10")
    assert rewound.version == 2 and rewound.next_step == 11
    archived = service.versions(run.path)[0]
    assert (archived.last_step, archived.rows, archived.rewound_to_step) == (10, 11, 10)
    assert values(service.history(run.path, version=1))[-1] == (10, 10.0)
    assert values(service.history(run.path)) == [(s, float(s)) for s in range(11)]
    assert service.run(run.path).last_step == 10


def test_a_rebuild_reproduces_the_ids_and_the_forks_of_versions(service: RunService) -> None:
    v1, _v2 = rewound_source(service)
    fork = service.init("ent", "proj", "fork", fork_from=f"{v1.immutable_id}?_step=12")
    service.init("ent", "proj", resume_from="fork?_step=4")
    before = {
        "versions": [v.immutable_id for v in service.versions(v1.path)],
        "fork": [v.immutable_id for v in service.versions(fork.path)],
        "history": service.history(fork.path),
        "forked_from": service.run(fork.path).forked_from,
    }
    checksums = service.checksums()
    service.rebuild()
    assert service.checksums() == checksums
    assert [v.immutable_id for v in service.versions(v1.path)] == before["versions"]
    assert [v.immutable_id for v in service.versions(fork.path)] == before["fork"]
    assert service.history(fork.path) == before["history"]
    assert service.run(fork.path).forked_from == before["forked_from"]
    assert service.resolve_version(VersionRef(v1.immutable_id)) == (v1.path, 1)
