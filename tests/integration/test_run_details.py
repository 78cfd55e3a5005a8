"""W&B's run details (name, tags, notes, group, job type) through the run service: given at
creation, replaced by a resume or rewind that names them, and rebuilt from the events."""

from __future__ import annotations

import pytest

from runhistory.domain.errors import InvalidArgument
from runhistory.domain.identity import RunPath
from runhistory.domain.values import LogCall
from runhistory.service.runs import RunService

T0 = 1_700_000_000.0


def details(service: RunService, path: RunPath) -> tuple[object, ...]:
    record = service.run(path)
    return (record.name, record.tags, record.notes, record.group, record.job_type)


def test_details_at_creation_resume_and_rewind_survive_a_rebuild(service: RunService) -> None:
    made = service.init(
        "ent", "proj", "r1", name="first", tags=["a"], notes="why", group="g1", job_type="train"
    )
    assert (made.name, made.tags, made.notes, made.group, made.job_type) == (
        "first",
        ["a"],
        "why",
        "g1",
        "train",
    )
    assert details(service, made.path) == ("first", ["a"], "why", "g1", "train")
    service.finish(made.path, writer=made.writer)

    # A resume that names nothing keeps them; one that names some replaces just those.
    assert not made.resumed
    kept = service.init("ent", "proj", "r1", resume="must")
    assert kept.resumed
    assert (kept.name, kept.notes, kept.group) == ("first", "why", "g1")
    resumed = service.init("ent", "proj", "r1", resume="must", name="second", notes="more")
    assert (resumed.name, resumed.tags, resumed.notes) == ("second", ["a"], "more")
    service.log(made.path, [LogCall({"x": 1}, T0)], writer=resumed.writer)
    rewound = service.init("ent", "proj", resume_from="r1?_step=0", tags=["b"], job_type="eval")
    assert (rewound.name, rewound.tags, rewound.job_type) == ("second", ["b"], "eval")
    assert rewound.resumed
    expected = ("second", ["b"], "more", "g1", "eval")
    assert details(service, made.path) == expected
    (listed,) = service.runs("ent", "proj")
    assert (listed.notes, listed.group, listed.job_type) == ("more", "g1", "eval")

    service.rebuild()
    assert details(service, made.path) == expected


def test_a_fork_takes_its_own_details(service: RunService) -> None:
    source = service.init("ent", "proj", "src", notes="source notes", group="g")
    service.log(source.path, [LogCall({"x": 1}, T0)], writer=source.writer)
    fork = service.init("ent", "proj", "f1", fork_from="src?_step=0", name="child", job_type="ft")
    assert details(service, fork.path) == ("child", [], "", "", "ft")


def test_invalid_details_refuse_the_init_and_create_nothing(service: RunService) -> None:
    with pytest.raises(InvalidArgument, match="group is a string of at most 128"):
        service.init("ent", "proj", "bad", group="g" * 129)
    assert service.runs("ent", "proj") == []
