"""Unit tests of immutable version IDs and of branching from versions: the ID rules
(runhistory.domain.identity) and what the Run aggregate does with them."""

from __future__ import annotations

import copy
import re
from uuid import uuid4

import pytest

from runhistory.domain.errors import FailedPrecondition, InvalidArgument, OutOfRange
from runhistory.domain.identity import (
    BranchPoint,
    RunPath,
    VersionRef,
    check_new_run_id,
    is_version_id,
    parse_run_or_version,
    version_id,
)
from runhistory.domain.run import Run
from runhistory.domain.values import LogCall

PATH = RunPath("ent", "proj", "run1")
FORK_PATH = RunPath("ent", "proj", "fork1")
T0 = 1000.0


def new_run(path: RunPath = PATH, **kwargs) -> Run:
    run = Run.start(path, "w1", T0, **kwargs)
    run.collect_events()
    return run


def log_steps(run: Run, first: int, last: int, writer: str = "w1", **values: float) -> None:
    run.log(
        [LogCall({"m": float(s), **values}, T0 + 1 + s, s, None) for s in range(first, last + 1)],
        writer=writer,
    )


# ---- the IDs ---------------------------------------------------------------------------------


def test_version_ids_are_letters_and_digits_of_the_reserved_form():
    run_uuid = uuid4()
    ids = [version_id(run_uuid, v) for v in range(1, 200)]
    assert all(re.fullmatch(r"[a-z0-9]+", i) and len(i) == 26 for i in ids)
    assert all(is_version_id(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_version_id_is_derived_from_the_run_and_version_only():
    run_uuid = PATH.aggregate_id
    assert version_id(run_uuid, 1) == version_id(str(run_uuid), 1)
    assert version_id(run_uuid, 1) != version_id(run_uuid, 2)
    assert version_id(run_uuid, 1) != version_id(RunPath("ent", "proj", "run2").aggregate_id, 1)
    # Pinned: a rebuild, another server or a later release must derive the same ID.
    assert version_id("145057be-60ee-56c8-8bd2-00eeebc525f7", 1) == "vf3m83cbeo5v5drln1c7ensrp4"


@pytest.mark.parametrize(
    "text",
    ["run1", "v" * 25, "v" + "a" * 26, "V" + "a" * 25, "va" + "A" * 24, "x" + "a" * 25, "", None],
)
def test_other_names_are_not_version_ids(text):
    assert not is_version_id(text)


def test_a_new_run_may_not_take_an_id_of_the_reserved_form():
    reserved = version_id(uuid4(), 1)
    with pytest.raises(InvalidArgument, match="reserved for the immutable IDs"):
        check_new_run_id(reserved)
    with pytest.raises(InvalidArgument, match="reserved"):
        Run.start(RunPath("ent", "proj", reserved), "w1", T0)
    source = new_run()
    log_steps(source, 0, 3)
    with pytest.raises(InvalidArgument, match="reserved"):
        Run.fork(source, 1, RunPath("ent", "proj", reserved), "w9", T0)
    assert check_new_run_id("v" + "a" * 24) == "v" + "a" * 24  # one shorter: an ordinary ID


def test_a_name_of_the_reserved_form_is_read_as_a_version():
    vid = version_id(PATH.aggregate_id, 2)
    assert parse_run_or_version(vid) == VersionRef(vid)
    assert parse_run_or_version(f"ent/proj/{vid}") == VersionRef(vid, "ent", "proj")
    assert parse_run_or_version("ent/proj/run1") == PATH
    assert parse_run_or_version("run1", "ent", "proj") == PATH
    with pytest.raises(InvalidArgument):
        parse_run_or_version(f"bad entity/proj/{vid}")
    assert str(VersionRef(vid, "ent", "proj")) == f"ent/proj/{vid}"
    assert VersionRef(vid).holds(RunPath("other", "x", "r"))
    assert not VersionRef(vid, "ent", "proj").holds(RunPath("ent", "other", "r"))


def test_branch_points_take_a_version_id_bare_or_under_a_project():
    vid = version_id(PATH.aggregate_id, 1)
    assert BranchPoint.parse(f"{vid}?_step=5", "e", "p") == BranchPoint(VersionRef(vid), 5)
    assert BranchPoint.parse(f"ent/proj/{vid}?_step=0", "e", "p") == BranchPoint(
        VersionRef(vid, "ent", "proj"), 0
    )


# ---- forking a version -----------------------------------------------------------------------


def test_fork_of_an_archived_version_counts_the_row_its_rewind_committed():
    source = new_run(config={"lr": 1})
    log_steps(source, 0, 9)
    source.log([LogCall({"m": 10.0}, T0 + 20, 10, False)], writer="w1")  # pending at 10
    snapshot = copy.deepcopy(source)
    source.rewind(3, "w2", T0 + 50, config={"lr": 2})
    # The version as it was archived: the run just before the rewind.
    fork = Run.fork(snapshot, 10, FORK_PATH, "w9", T0 + 60, archived=True)
    assert fork.forked_from["version"] == 1
    assert fork.forked_from["step"] == 10
    assert fork.config == {"lr": 1}  # the archived version's config, not the rewind's
    assert fork.next_step == 11
    # As the live version, its pending row is not committed: step 10 is past its last step.
    with pytest.raises(OutOfRange, match=r"last committed step is 9\b"):
        Run.fork(snapshot, 10, RunPath("ent", "proj", "f2"), "w9", T0 + 60)


# ---- rewinding by version ID -----------------------------------------------------------------


def test_rewind_naming_an_archived_version_is_refused_saying_what_to_do():
    run = new_run()
    log_steps(run, 0, 5)
    run.rewind(2, "w2", T0 + 50)
    run.collect_events()
    archived = version_id(run.id, 1)
    with pytest.raises(FailedPrecondition) as info:
        run.rewind(1, "w3", T0 + 60, version=1)
    assert run.collect_events() == []
    assert run.run_version == 2
    message = info.value.message
    assert archived in message
    assert "resume_from='run1?_step=N'" in message
    assert f"fork_from='{archived}?_step=N'" in message


def test_rewind_naming_the_live_version_rewinds_the_run():
    run = new_run()
    log_steps(run, 0, 5)
    assert run.immutable_id == version_id(run.id, 1)
    run.rewind(2, "w2", T0 + 50, version=1)
    assert run.run_version == 2
    assert run.immutable_id == version_id(run.id, 2)


def test_rewind_to_the_step_of_an_acknowledged_pending_row_commits_it_first():
    run = new_run()
    log_steps(run, 0, 9)
    run.log([LogCall({"m": 10.0}, T0 + 20, 10, False)], writer="w1")  # pending at step 10
    assert run.last_step == 9
    run.collect_events()
    run.rewind(10, "w2", T0 + 50)
    (event,) = run.collect_events()
    assert event.rows == [[10, T0 + 20, 20.0, {"m": 10.0}]]
    assert event.step == 10
    assert run.last_step == 10
    assert run.next_step == 11


def test_a_fork_rewound_into_its_inherited_range_stands_on_the_lower_step():
    source = new_run()
    log_steps(source, 0, 20)
    fork = Run.fork(source, 15, FORK_PATH, "w9", T0 + 100)
    log_steps(fork, 16, 18, writer="w9")
    fork.rewind(17, "w10", T0 + 200)  # above the fork step: still stands on 15
    assert fork.forked_from["step"] == 15
    fork.rewind(5, "w11", T0 + 300)
    assert fork.forked_from["step"] == 5
    assert fork.forked_from["version"] == 1
    fork.rewind(3, "w12", T0 + 400)
    assert fork.forked_from["step"] == 3
    # The replayed events give the same: the step is derived from the Rewound events.
    replayed = None
    for event in fork.collect_events():
        replayed = event.mutate(replayed)
    assert replayed is not None and replayed.forked_from["step"] == 3
