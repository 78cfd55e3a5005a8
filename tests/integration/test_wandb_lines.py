"""Rows numbered by line, as W&B's file_stream sends them, and a client's whole summary:
the domain commands (`Run.start_lines`, `Run.log_lines`) and the service methods over them
(`start_lines`, `log_lines`, `report_summary`), on every backend."""

from __future__ import annotations

import math

import pytest

from runhistory.domain.errors import FailedPrecondition, InvalidArgument, Superseded
from runhistory.domain.identity import BranchPoint, RunPath
from runhistory.domain.run import Run
from runhistory.domain.values import Limits, LogCall
from runhistory.service.runs import RunService

PATH = RunPath("ent", "proj", "run1")
T0 = 1000.0


def lines(*steps: int, key: str = "a") -> list[LogCall]:
    return [LogCall({key: float(step)}, T0 + step, step, commit=True) for step in steps]


def new_run(rows: int = 0) -> Run:
    run = Run.start(PATH, "w1", T0)
    if rows:
        run.log(lines(*range(rows)), writer="w1")
    run.collect_events()
    return run


def state(run: Run) -> str:
    return repr(sorted((k, v) for k, v in vars(run).items() if k != "_pending_events"))


def refused(run: Run, error: type[Exception], action, match: str) -> None:
    before = state(run)
    with pytest.raises(error, match=match):
        action()
    assert run.collect_events() == []
    assert state(run) == before


# ---- the aggregate ---------------------------------------------------------------------------


def test_lines_continue_from_the_rows_the_version_holds():
    run = new_run(rows=3)
    run.start_lines(3, "w1")
    events = run.collect_events()
    assert [type(e) for e in events] == [Run.RowsLogged]
    assert events[0].rows == [] and events[0].seq == 3
    outcome = run.log_lines(3, lines(3, 4), "w1")
    assert [row[0] for row in outcome.rows] == [3, 4]
    assert run.writer_seq == 5 and run.next_step == 5 and run.last_step == 4


def test_a_retried_post_applies_nothing_and_an_overlapping_one_only_its_new_lines():
    run = new_run()
    run.start_lines(0, "w1")
    assert run.collect_events() == []  # nothing to record from line 0
    run.log_lines(0, lines(0, 1, 2), "w1")
    run.collect_events()
    before = state(run)
    again = run.log_lines(0, lines(0, 1, 2), "w1")
    assert again.duplicate and again.rows == []
    assert run.collect_events() == [] and state(run) == before
    overlap = run.log_lines(1, lines(1, 2, 3, 4), "w1")
    assert [row[0] for row in overlap.rows] == [3, 4]
    assert run.writer_seq == 5


def test_every_line_commits_a_row_whatever_its_commit_says():
    run = new_run()
    outcome = run.log_lines(0, lines(0, 5, 9), "w1")
    assert [row[0] for row in outcome.rows] == [0, 5, 9]
    held = [LogCall({"a": 1}, T0, 10, commit=False), LogCall({"a": 2}, T0, 11, commit=None)]
    assert [row[0] for row in run.log_lines(3, held, "w1").rows] == [10, 11]
    assert run.pending is None


def test_a_post_that_leaves_lines_out_is_refused():
    run = new_run()
    run.log_lines(0, lines(0, 1), "w1")
    run.collect_events()
    refused(run, FailedPrecondition, lambda: run.log_lines(3, lines(3), "w1"), "lines 2 to 2")


def test_lines_that_go_back_in_steps_are_refused_whole():
    run = new_run()
    run.log_lines(0, lines(0, 1, 2), "w1")
    run.collect_events()
    refused(run, FailedPrecondition, lambda: run.log_lines(3, lines(2), "w1"), "step 2")
    refused(run, FailedPrecondition, lambda: run.log_lines(3, lines(5, 4), "w1"), "step 4")
    no_step = [LogCall({"a": 1}, T0, None, commit=True)]
    refused(run, InvalidArgument, lambda: run.log_lines(3, no_step, "w1"), "has no step")


def test_a_superseded_session_cannot_log_lines():
    run = new_run(rows=2)
    run.rewind(0, "w2", T0 + 5)
    run.collect_events()
    refused(run, Superseded, lambda: run.log_lines(2, lines(2), "w1"), "superseded")
    refused(run, Superseded, lambda: run.start_lines(0, "w1"), "superseded")


def test_line_numbers_start_once_per_session_and_are_whole_numbers():
    run = new_run(rows=2)
    run.start_lines(2, "w1")
    run.collect_events()
    refused(run, InvalidArgument, lambda: run.start_lines(2, "w1"), "start once")
    refused(run, InvalidArgument, lambda: run.log_lines(-1, lines(2), "w1"), "integer >= 0")
    fresh = new_run()
    refused(fresh, InvalidArgument, lambda: fresh.start_lines(-1, "w1"), "integer >= 0")


def test_a_refused_row_refuses_the_whole_post():
    run = new_run()
    big = [LogCall({"a": 1, "b": 2}, T0, 0, commit=True), LogCall({"c": 1}, T0, 1, commit=True)]
    limits = Limits(max_keys_per_row=1)
    with pytest.raises(Exception, match="keys"):
        run.log_lines(0, big, "w1", limits)
    assert run.collect_events() == [] and run.writer_seq == 0


def test_lines_replay_to_the_same_state():
    run = Run.start(PATH, "w1", T0)
    run.log(lines(0, 1), writer="w1")
    run.start_lines(2, "w1")
    run.log_lines(2, lines(2, 3), "w1")
    run.log_lines(3, lines(3, 4), "w1")
    replayed = None
    for event in run.collect_events():
        replayed = event.mutate(replayed)
    assert replayed is not None and state(replayed) == state(run)
    assert replayed.writer_seq == 5 and replayed.next_step == 5


# ---- the service, on every backend ----------------------------------------------------------


def test_the_line_count_of_a_rewind_and_a_fork(service: RunService):
    session = service.create(PATH, writer="w1")
    assert service.start_lines(PATH, writer="w1") == 0
    service.log_lines(PATH, 0, lines(*range(10)), writer=session.writer)
    rewound = service.rewind(BranchPoint(PATH, 4), writer="w2")
    assert service.start_lines(PATH, writer=rewound.writer) == 5
    ack = service.log_lines(PATH, 5, lines(5, 6), writer="w2")
    assert ack.rows == 2 and ack.applied
    assert service.log_lines(PATH, 5, lines(5, 6), writer="w2").applied is False
    fork = RunPath("ent", "proj", "fork1")
    service.fork(BranchPoint(PATH, 6), fork, writer="w3")
    assert service.start_lines(fork, writer="w3") == 7
    service.log_lines(fork, 7, lines(7), writer="w3")
    assert [row["_step"] for row in service.history(fork)] == list(range(8))
    assert service.line_count(fork) == 8


def test_posts_over_the_batch_limit_are_split_and_stay_idempotent(database: str):
    from runhistory.service.settings import Settings

    with RunService(Settings(db=database, max_calls_per_batch=4)) as service:
        service.create(PATH, writer="w1")
        ack = service.log_lines(PATH, 0, lines(*range(10)), writer="w1")
        assert ack.rows == 10
        again = service.log_lines(PATH, 0, lines(*range(12)), writer="w1")
        assert again.rows == 2
        assert [row["_step"] for row in service.history(PATH)] == list(range(12))


def test_a_reported_summary_keeps_what_differs_as_explicit_values(service: RunService):
    service.create(PATH, writer="w1")
    service.log_lines(PATH, 0, lines(0, 1, 2, key="loss"), writer="w1")
    derived = service.summary(PATH)
    assert derived == {"loss": 2.0}
    # the client's own view: the last loss, and a value set with run.summary["best"] = ...
    ack = service.report_summary(PATH, {"loss": 2.0, "best": 0.5, "nan": math.nan}, writer="w1")
    assert ack.applied
    events = service.events(path=PATH)
    assert events[-1].type == "SummarySet"
    assert set(events[-1].payload["values"]) == {"best", "nan"}  # "loss" stays derived
    # the same summary again is no change at all, NaN included
    before = len(service.events(path=PATH))
    again = service.report_summary(PATH, {"loss": 2.0, "best": 0.5, "nan": math.nan})
    assert again.applied is False
    assert len(service.events(path=PATH)) == before
    # a derived value follows the history; an explicit one holds until its key is logged
    service.log_lines(PATH, 3, [LogCall({"loss": 0.1}, T0, 3, commit=True)], writer="w1")
    summary = service.summary(PATH)
    assert summary["loss"] == 0.1 and summary["best"] == 0.5 and math.isnan(summary["nan"])
    # a rewind recomputes the derived values and drops the explicit ones
    service.rewind(BranchPoint(PATH, 1), writer="w2")
    assert service.summary(PATH) == {"loss": 1.0}


def test_a_summary_sent_ahead_of_its_rows_or_behind_them_is_not_compared(service: RunService):
    service.create(PATH, writer="w1")
    service.log_lines(PATH, 0, lines(0, 1, key="loss"), writer="w1")

    def report(summary: dict, **taken_at: object) -> bool:
        return service.report_summary(PATH, summary, taken_at=taken_at, writer="w1").applied

    # the SDK's summary of rows 0..3, before lines 2 and 3 arrived: "loss" is no explicit value
    assert report({"loss": 3.0}, _step=3) is False
    assert report({"loss": 3.0}, _timestamp=T0 + 3) is False  # interim ones have no _step
    service.log_lines(PATH, 2, lines(2, 3, key="loss"), writer="w1")
    assert report({"loss": 2.0}, _step=2, _timestamp=T0 + 2) is False  # behind them
    assert report({"loss": 2.0}, _timestamp=T0 + 2) is False
    assert report({"loss": 3.0}, _step=3, _timestamp=T0 + 3) is False  # derived: no change
    assert service.summary(PATH) == {"loss": 3.0}
    assert report({"loss": 3.0, "best": 1.0}, _timestamp=T0 + 3) is True
    assert service.summary(PATH) == {"loss": 3.0, "best": 1.0}
    assert [e.type for e in service.events(path=PATH)].count("SummarySet") == 1


def test_a_reported_summary_is_checked_like_logged_values(service: RunService):
    service.create(PATH, writer="w1")
    with pytest.raises(InvalidArgument):
        service.report_summary(PATH, {"_step": 1}, writer="w1")
    with pytest.raises(InvalidArgument):
        service.report_summary(PATH, {"x": [1, 2]}, writer="w1")
    assert [e.type for e in service.events(path=PATH)] == ["Created"]
