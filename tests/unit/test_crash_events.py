"""Unit tests of crash detection in the Run aggregate: `detect_crash`, `CrashDetected`, and
the `Revived` event a write (or heartbeat) of the silent writer records when it comes back.

The aggregate decides with the times it is given: when the writer was last heard from, as
the service layer knows it, the run's last event, and `now`.
"""

from __future__ import annotations

import math

import pytest
from eventsourcing.application import Application

from runhistory.domain.errors import InvalidArgument, RunNotRunning, Superseded
from runhistory.domain.identity import RunPath
from runhistory.domain.run import CRASHED, FINISHED, RUNNING, Run
from runhistory.domain.values import LogCall

PATH = RunPath("ent", "proj", "run1")
T0 = 1000.0
TIMEOUT = 60.0


def new_run(writer: str = "w1") -> Run:
    run = Run.start(PATH, writer, T0)
    run.log([LogCall({"loss": 1.0}, T0 + 1, None, None)], writer=writer, seq=1)
    run.collect_events()
    return run


def last_event(run: Run) -> float:
    """When the run's last event was recorded (the event's own clock reading)."""
    return run.modified_on.timestamp()


def crashed(run: Run) -> Run:
    """`run`, crashed by silence, with its events collected."""
    assert run.detect_crash(last_event(run), last_event(run) + TIMEOUT, TIMEOUT)
    run.collect_events()
    return run


def names(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


def test_a_writer_silent_for_the_timeout_crashes_the_run_as_an_event():
    run = new_run()
    heard = last_event(run) + 5  # a heartbeat after the last event
    assert run.detect_crash(heard, heard + TIMEOUT, TIMEOUT)
    (event,) = run.collect_events()
    assert isinstance(event, Run.CrashDetected)
    assert (event.writer, event.silent_since, event.crash_after) == ("w1", heard, TIMEOUT)
    assert (run.state, run.exit_code, run.silenced) == (CRASHED, None, True)
    assert run.writer == "w1"  # not fenced


def test_a_writer_heard_from_within_the_timeout_is_not_crashed():
    run = new_run()
    heard = last_event(run) + 100
    assert not run.detect_crash(heard, heard + TIMEOUT - 0.001, TIMEOUT)
    assert run.collect_events() == []
    assert run.state == RUNNING


def test_the_last_event_counts_as_hearing_from_the_writer():
    """A heartbeat older than the run's last event does not make it silent: every write is
    a sign of life too."""
    run = new_run()
    logged = last_event(run)
    assert not run.detect_crash(0.0, logged + TIMEOUT - 1, TIMEOUT)
    assert run.collect_events() == []
    assert run.detect_crash(0.0, logged + TIMEOUT, TIMEOUT)
    (event,) = run.collect_events()
    assert event.silent_since == logged


@pytest.mark.parametrize("exit_code", [0, 1])
def test_an_ended_run_is_never_crashed_by_silence(exit_code: int):
    run = new_run()
    run.finish(exit_code, writer="w1", seq=2)
    run.collect_events()
    far = last_event(run) + 10 * TIMEOUT
    assert not run.detect_crash(0.0, far, TIMEOUT)
    assert run.collect_events() == []
    assert not run.silenced  # crashed by its exit code, not by silence


def test_a_crashed_run_is_not_crashed_twice():
    run = crashed(new_run())
    assert not run.detect_crash(0.0, last_event(run) + 10 * TIMEOUT, TIMEOUT)
    assert run.collect_events() == []


@pytest.mark.parametrize(
    "args",
    [
        (math.nan, 2000.0, TIMEOUT),
        (1000.0, math.inf, TIMEOUT),
        (1000.0, 2000.0, 0),
        (1000.0, 2000.0, -1.0),
        (1000.0, 2000.0, math.nan),
        ("1000", 2000.0, TIMEOUT),
    ],
)
def test_detect_crash_refuses_bad_times(args):
    run = new_run()
    with pytest.raises(InvalidArgument):
        run.detect_crash(*args)
    assert run.collect_events() == []


def test_a_log_of_the_silent_writer_revives_the_run_before_its_rows():
    run = crashed(new_run())
    outcome = run.log([LogCall({"loss": 0.5}, T0 + 2, None, None)], writer="w1", seq=2)
    events = run.collect_events()
    assert names(events) == ["Revived", "RowsLogged"]
    assert events[0].writer == "w1"
    assert [row[0] for row in outcome.rows] == [1]
    assert (run.state, run.silenced) == (RUNNING, False)


@pytest.mark.parametrize(
    "write",
    [
        lambda run: run.update_config({"lr": 1}, writer="w1", seq=2),
        lambda run: run.set_summary({"best": 1}, writer="w1", seq=2),
        lambda run: run.define_metric("loss", "min", writer="w1", seq=2),
        lambda run: run.record_artifact("produced", "m", "model", writer="w1", seq=2),
        lambda run: run.log_lines(1, [LogCall({"loss": 2.0}, T0 + 2, 1, None)], "w1"),
    ],
)
def test_any_write_of_the_silent_writer_revives_the_run(write):
    run = crashed(new_run())
    write(run)
    events = run.collect_events()
    assert names(events)[0] == "Revived"
    assert len(events) == 2
    assert run.state == RUNNING


def test_a_finish_of_the_silent_writer_revives_then_finishes():
    run = crashed(new_run())
    run.finish(0, writer="w1", seq=2)
    assert names(run.collect_events()) == ["Revived", "Finished"]
    assert (run.state, run.exit_code) == (FINISHED, 0)


def test_a_heartbeat_of_the_silent_writer_revives_the_run():
    run = crashed(new_run())
    assert run.revive("w1")
    (event,) = run.collect_events()
    assert isinstance(event, Run.Revived)
    assert run.state == RUNNING
    assert not run.revive("w1")  # running: nothing to revive
    assert run.collect_events() == []


def test_a_refused_write_of_the_silent_writer_records_nothing():
    run = crashed(new_run())
    with pytest.raises(InvalidArgument):
        run.log([LogCall({"_bad": 1}, T0 + 2, None, None)], writer="w1", seq=2)
    with pytest.raises(InvalidArgument):
        run.update_config({"": 1}, writer="w1", seq=2)
    assert run.collect_events() == []
    assert run.state == CRASHED


def test_a_retried_write_of_the_silent_writer_records_nothing():
    run = crashed(new_run())
    outcome = run.log([LogCall({"loss": 0.5}, T0 + 2, None, None)], writer="w1", seq=1)
    assert outcome.duplicate
    assert run.collect_events() == []
    assert run.state == CRASHED


def test_other_writers_do_not_revive_a_crashed_run():
    run = crashed(new_run())
    with pytest.raises(Superseded):
        run.revive("w2")
    with pytest.raises(Superseded):
        run.log([LogCall({"loss": 0.5}, T0 + 2, None, None)], writer="w2", seq=1)
    # An administrative client (no writer) is not the writer coming back.
    with pytest.raises(RunNotRunning, match="crashed"):
        run.log([LogCall({"loss": 0.5}, T0 + 2, None, None)])
    with pytest.raises(RunNotRunning, match="crashed"):
        run.finish(0)
    run.set_summary({"note": "x"})
    assert names(run.collect_events()) == ["SummarySet"]
    assert run.state == CRASHED


def test_resume_and_rewind_work_on_a_run_crashed_by_silence():
    run = crashed(new_run())
    run.resume("w2", started_at=T0 + 500)
    assert (run.state, run.writer, run.silenced) == (RUNNING, "w2", False)
    with pytest.raises(Superseded):
        run.log([LogCall({"loss": 0.5}, T0 + 2, None, None)], writer="w1", seq=2)

    again = crashed(new_run())
    again.rewind(0, writer="w3", started_at=T0 + 600)
    assert (again.state, again.writer, again.run_version, again.next_step) == (
        RUNNING,
        "w3",
        2,
        1,
    )
    with pytest.raises(Superseded):
        again.revive("w1")


def test_a_run_crashed_by_its_exit_code_is_not_revived_by_its_writer():
    run = new_run()
    run.finish(1, writer="w1", seq=2)
    run.collect_events()
    assert not run.revive("w1")
    with pytest.raises(RunNotRunning):
        run.log([LogCall({"loss": 0.5}, T0 + 2, None, None)], writer="w1", seq=3)
    assert run.collect_events() == []


def test_crash_and_revival_replay_through_the_event_store():
    run = Run.start(PATH, "w1", T0)
    run.log([LogCall({"loss": 1.0}, T0 + 1, None, None)], writer="w1", seq=1)
    app = Application()
    app.save(run)
    assert run.detect_crash(0.0, last_event(run) + TIMEOUT, TIMEOUT)
    app.save(run)
    assert app.repository.get(run.id).state == CRASHED
    assert app.repository.get(run.id).silenced
    run.log([LogCall({"loss": 0.5}, T0 + 2, None, None)], writer="w1", seq=2)
    app.save(run)
    rebuilt = app.repository.get(run.id)
    assert (rebuilt.state, rebuilt.last_step, rebuilt.writer_seq) == (RUNNING, 1, 2)
    stored = [type(e).__name__ for e in app.repository.event_store.get(run.id)]
    assert stored == ["Created", "RowsLogged", "CrashDetected", "Revived", "RowsLogged"]
