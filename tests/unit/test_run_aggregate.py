"""Unit tests of the Run aggregate's rules (runhistory.domain.run).

Every test drives the real aggregate; "nothing recorded" means `collect_events()` returns no
event and the aggregate's state is unchanged.
"""

from __future__ import annotations

import math
import re

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import DomainEvent
from eventsourcing.utils import get_topic, resolve_topic

from runhistory.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    OutOfRange,
    ResourceExhausted,
    RunNotRunning,
    Superseded,
)
from runhistory.domain.identity import RunPath
from runhistory.domain.rules import parse_summary_choice
from runhistory.domain.run import (
    CRASHED,
    EVENT_CLASSES,
    FINISHED,
    RUNNING,
    Run,
    event_types,
)
from runhistory.domain.summary import SummaryState, render
from runhistory.domain.values import Limits, LogCall

PATH = RunPath("ent", "proj", "run1")
FORK_PATH = RunPath("ent", "proj", "fork1")
T0 = 1000.0


# ---- helpers -------------------------------------------------------------------------------


def new_run(path: RunPath = PATH, writer: str = "w1", started_at: float = T0, **kwargs) -> Run:
    run = Run.start(path, writer, started_at, **kwargs)
    run.collect_events()
    return run


def call(data, ts: float = T0 + 1, step=None, commit=None) -> LogCall:
    return LogCall(data=data, timestamp=ts, step=step, commit=commit)


def log_steps(run: Run, count: int, writer: str | None = "w1") -> None:
    """Commit rows at steps next_step .. next_step + count - 1, one `log(data)` each."""
    run.log(
        [call({"loss": float(i)}, ts=T0 + 1 + i) for i in range(count)],
        writer=writer,
    )


def state(run: Run) -> str:
    """The aggregate's whole state, NaN-safe and order-independent, for equality checks."""
    return repr(sorted((k, v) for k, v in vars(run).items() if k != "_pending_events"))


def assert_refused(run: Run, error: type[Exception], action, match: str | None = None):
    """`action()` raises `error`, records no event and leaves the aggregate unchanged."""
    run.collect_events()
    before = state(run)
    with pytest.raises(error, match=match) as info:
        action()
    assert run.collect_events() == []
    assert state(run) == before
    return info.value


def rows_of(events) -> list:
    return [row for event in events for row in getattr(event, "rows", [])]


# ---- creation ------------------------------------------------------------------------------


def test_start_creates_a_running_run_with_nothing_logged():
    run = Run.start(PATH, "w1", T0, config={"lr": 0.1})
    events = run.collect_events()
    assert [type(e) for e in events] == [Run.Created]
    assert run.id == PATH.aggregate_id
    assert run.path == PATH
    assert run.state == RUNNING
    assert run.exit_code is None
    assert run.run_version == 1
    assert run.next_step == 0
    assert run.last_step is None
    assert run.pending is None
    assert run.config == {"lr": 0.1}
    assert run.metrics == {}
    assert run.forked_from is None
    assert run.name == "run1"  # the name defaults to the run ID


def test_start_refuses_bad_config_name_and_tags():
    with pytest.raises(InvalidArgument):
        Run.start(PATH, "w1", T0, config={"": 1})
    with pytest.raises(InvalidArgument):
        Run.start(PATH, "w1", T0, config={"a": object()})
    with pytest.raises(InvalidArgument):
        Run.start(PATH, "w1", T0, name="x" * 129)
    with pytest.raises(InvalidArgument):
        Run.start(PATH, "w1", T0, tags=["ok", ""])


# ---- steps and commits ---------------------------------------------------------------------


def test_log_without_step_commits_and_advances_by_one():
    run = new_run()
    outcome = run.log([call({"a": 1}, ts=T0 + 1), call({"a": 2}, ts=T0 + 2)])
    assert [row[0] for row in outcome.rows] == [0, 1]
    assert [row[3] for row in outcome.rows] == [{"a": 1}, {"a": 2}]
    assert outcome.next_step == 2
    assert outcome.warnings == []
    assert run.next_step == 2
    assert run.last_step == 1
    assert run.pending is None
    # the next batch continues where the last one stopped
    outcome = run.log([call({"a": 3})])
    assert [row[0] for row in outcome.rows] == [2]
    assert run.next_step == 3


def test_log_records_one_event_per_batch_holding_the_committed_rows():
    run = new_run()
    outcome = run.log([call({"a": 1}), call({"a": 2}), call({"a": 3})])
    events = run.collect_events()
    assert [type(e) for e in events] == [Run.RowsLogged]
    assert events[0].rows == outcome.rows
    assert events[0].next_step == 3


def test_higher_step_commits_the_pending_row_and_moves_to_it():
    run = new_run()
    run.log([call({"a": 1}, commit=False)])
    assert run.pending is not None and run.pending["step"] == 0
    outcome = run.log([call({"b": 2}, step=5)])
    assert [(row[0], row[3]) for row in outcome.rows] == [(0, {"a": 1})]
    assert run.last_step == 0
    assert run.next_step == 5
    assert run.pending["step"] == 5
    assert run.pending["values"] == {"b": 2}
    # a later log() without a step merges into step 5 and commits it
    outcome = run.log([call({"c": 3})])
    assert [(row[0], row[3]) for row in outcome.rows] == [(5, {"b": 2, "c": 3})]
    assert run.next_step == 6
    assert run.last_step == 5


def test_higher_step_without_a_pending_row_commits_nothing():
    run = new_run()
    log_steps(run, 2)
    outcome = run.log([call({"b": 2}, step=10)])
    assert outcome.rows == []
    assert outcome.next_step == 10
    assert run.last_step == 1
    assert run.pending["step"] == 10


def test_same_step_merges_into_the_pending_row():
    run = new_run()
    outcome = run.log(
        [
            call({"a": 1, "x": 1}, step=3),
            call({"b": 2}, step=3),
            call({"x": 9}, step=3),  # the later value of a key wins
        ]
    )
    assert outcome.rows == []
    assert run.pending["step"] == 3
    assert run.pending["values"] == {"a": 1, "b": 2, "x": 9}
    outcome = run.log([call({"c": 3}, step=4)])
    assert [(row[0], row[3]) for row in outcome.rows] == [(3, {"a": 1, "x": 9, "b": 2})]


def test_lower_step_is_ignored_with_a_warning_naming_both_steps():
    run = new_run()
    log_steps(run, 7)  # steps 0..6 committed, current step 7
    outcome = run.log(
        [
            call({"before": 1}, commit=False),  # pending at step 7
            call({"ignored": 1}, step=3),
            call({"after": 2}),  # merges into step 7 and commits
        ]
    )
    assert len(outcome.warnings) == 1
    warning = outcome.warnings[0]
    assert re.search(r"\b3\b", warning) and re.search(r"\b7\b", warning)
    assert "ignored" in warning
    # nothing else in the batch is affected
    assert [(row[0], row[3]) for row in outcome.rows] == [(7, {"before": 1, "after": 2})]
    assert run.next_step == 8
    assert run.last_step == 7


def test_a_batch_of_only_lower_steps_changes_nothing_but_warns():
    run = new_run()
    log_steps(run, 3)
    run.log([call({"p": 1}, commit=False)])
    run.collect_events()
    before = state(run)
    outcome = run.log([call({"x": 1}, step=0), call({"y": 1}, step=2)])
    assert len(outcome.warnings) == 2
    assert outcome.rows == []
    assert outcome.next_step == 3
    assert state(run) == before
    assert run.pending["values"] == {"p": 1}


def test_commit_false_merges_without_committing():
    run = new_run()
    outcome = run.log([call({"a": 1}, commit=False), call({"b": 2}, commit=False)])
    assert outcome.rows == []
    assert outcome.next_step == 0
    assert run.last_step is None
    assert run.pending["step"] == 0
    assert run.pending["values"] == {"a": 1, "b": 2}
    outcome = run.log([call({"c": 3})])
    assert [(row[0], row[3]) for row in outcome.rows] == [(0, {"a": 1, "b": 2, "c": 3})]
    assert run.next_step == 1


def test_commit_false_with_an_explicit_step_does_not_commit():
    run = new_run()
    outcome = run.log([call({"a": 1}, step=2, commit=False)])
    assert outcome.rows == []
    assert run.pending["step"] == 2
    assert run.next_step == 2


def test_explicit_step_without_commit_waits_for_a_later_commit():
    run = new_run()
    outcome = run.log([call({"a": 1}, step=4)])
    assert outcome.rows == []
    assert run.pending == {"step": 4, "timestamp": T0 + 1, "values": {"a": 1}}
    assert run.last_step is None


def test_commit_true_with_an_explicit_step_commits_it():
    run = new_run()
    outcome = run.log([call({"a": 1}, step=4, commit=True)])
    assert [(row[0], row[3]) for row in outcome.rows] == [(4, {"a": 1})]
    assert outcome.next_step == 5
    assert run.last_step == 4
    assert run.next_step == 5
    assert run.pending is None


def test_a_logged_key_named_step_is_an_ordinary_metric():
    run = new_run()
    outcome = run.log([call({"step": 100}), call({"step": 3})])
    assert [(row[0], row[3]) for row in outcome.rows] == [(0, {"step": 100}), (1, {"step": 3})]
    assert outcome.warnings == []
    assert run.next_step == 2


@pytest.mark.parametrize("bad_step", [-1, 1.5, True, "3"])
def test_invalid_explicit_step_is_refused(bad_step):
    run = new_run()
    assert_refused(
        run, InvalidArgument, lambda: run.log([call({"a": 1}), call({"b": 1}, step=bad_step)])
    )


# ---- timestamps and runtime ----------------------------------------------------------------


def test_row_carries_timestamp_and_runtime_since_session_start():
    run = new_run(started_at=T0)
    outcome = run.log([call({"a": 1}, ts=T0 + 12.5), call({"a": 2}, ts=T0 + 20)])
    assert outcome.rows[0][:3] == [0, T0 + 12.5, 12.5]
    assert outcome.rows[1][:3] == [1, T0 + 20, 20.0]
    assert isinstance(outcome.rows[0][1], float)


def test_runtime_restarts_with_the_segment_after_a_rewind():
    run = new_run(started_at=T0)
    log_steps(run, 3)
    run.rewind(1, writer="w2", started_at=T0 + 500)
    outcome = run.log([call({"a": 1}, ts=T0 + 510)], writer="w2")
    assert outcome.rows[0][:3] == [2, T0 + 510, 10.0]


def test_runtime_restarts_with_the_segment_after_a_resume():
    run = new_run(started_at=T0)
    log_steps(run, 2)
    run.finish()
    run.resume("w2", started_at=T0 + 300)
    outcome = run.log([call({"a": 1}, ts=T0 + 301.5)], writer="w2")
    assert outcome.rows[0][:3] == [2, T0 + 301.5, 1.5]


# ---- values --------------------------------------------------------------------------------


def test_nested_dicts_are_flattened_to_dotted_keys():
    run = new_run()
    outcome = run.log([call({"a": {"b": 1, "c": {"d": 2.5}}, "e": "x"})])
    assert outcome.rows[0][3] == {"a.b": 1, "a.c.d": 2.5, "e": "x"}


@pytest.mark.parametrize("key", ["_step", "_timestamp", "_runtime", "_mine"])
def test_reserved_underscore_keys_are_refused_whole_batch(key):
    run = new_run()
    log_steps(run, 1)
    error = assert_refused(
        run, InvalidArgument, lambda: run.log([call({"ok": 1}), call({key: 1, "fine": 2})])
    )
    assert key in error.message
    assert "reserved" in error.message


@pytest.mark.parametrize("value", [[1, 2], {1, 2}, b"bytes", object()])
def test_unsupported_values_are_refused(value):
    run = new_run()
    assert_refused(run, InvalidArgument, lambda: run.log([call({"v": value})]))


def test_none_is_logged_as_null_and_summarised_as_a_value():
    run = new_run()
    outcome = run.log([call({"v": 1.0, "w": None}), call({"v": None})])
    assert [row[3] for row in outcome.rows] == [{"v": 1.0, "w": None}, {"v": None}]
    state = SummaryState()
    state.fold_all([row[3] for row in outcome.rows])
    assert render(state, {"v": ["min", "last"]}, {}) == {"v": {"min": 1.0, "last": None}, "w": None}


def test_nan_and_infinities_and_value_types_are_preserved():
    run = new_run()
    outcome = run.log(
        [
            call(
                {
                    "nan": float("nan"),
                    "pinf": float("inf"),
                    "ninf": float("-inf"),
                    "flag": True,
                    "count": 3,
                    "ratio": 0.5,
                    "text": "hi",
                }
            )
        ]
    )
    values = outcome.rows[0][3]
    assert math.isnan(values["nan"])
    assert values["pinf"] == math.inf
    assert values["ninf"] == -math.inf
    assert values["flag"] is True
    assert type(values["count"]) is int
    assert values["ratio"] == 0.5
    assert values["text"] == "hi"


# ---- size limits ---------------------------------------------------------------------------


def test_oversize_committed_row_is_refused_whole_and_nothing_is_recorded():
    run = new_run()
    log_steps(run, 1)
    limits = Limits(max_row_bytes=100)
    error = assert_refused(
        run,
        ResourceExhausted,
        lambda: run.log([call({"small": 1}), call({"big": "x" * 200})], limits=limits),
    )
    assert "100" in error.message
    assert run.next_step == 1


def test_oversize_pending_row_is_refused():
    run = new_run()
    limits = Limits(max_row_bytes=100)
    assert_refused(
        run,
        ResourceExhausted,
        lambda: run.log([call({"big": "x" * 200}, commit=False)], limits=limits),
    )
    assert run.pending is None


def test_row_grown_oversize_across_batches_is_refused_and_pending_kept():
    run = new_run()
    limits = Limits(max_row_bytes=100)
    run.log([call({"a": "x" * 60}, commit=False)], limits=limits)
    assert_refused(
        run,
        ResourceExhausted,
        lambda: run.log([call({"b": "y" * 60}, commit=False)], limits=limits),
    )
    assert run.pending["values"] == {"a": "x" * 60}


def test_oversize_request_is_refused():
    run = new_run()
    limits = Limits(max_request_bytes=100)
    assert_refused(
        run,
        ResourceExhausted,
        lambda: run.log([call({"k": "x" * 30}) for _ in range(5)], limits=limits),
    )


def test_too_many_keys_in_one_call_is_refused():
    run = new_run()
    limits = Limits(max_keys_per_row=2)
    assert_refused(
        run, ResourceExhausted, lambda: run.log([call({"a": 1, "b": 2, "c": 3})], limits=limits)
    )


def test_too_many_keys_merged_into_one_row_is_refused():
    run = new_run()
    limits = Limits(max_keys_per_row=2)
    assert_refused(
        run,
        ResourceExhausted,
        lambda: run.log(
            [call({"a": 1}, commit=False), call({"b": 2}, commit=False), call({"c": 3})],
            limits=limits,
        ),
    )


def test_too_long_key_is_refused():
    run = new_run()
    limits = Limits(max_key_length=5)
    assert_refused(
        run, ResourceExhausted, lambda: run.log([call({"ab": {"cdef": 1}})], limits=limits)
    )


def test_drop_refused_drops_only_the_refused_calls_data_and_keeps_its_step():
    """What the SDK asks for: the batch applies, each refused call's data dropped with a
    warning, its step and commit counted as `run.step` counted them."""
    limits = Limits(max_keys_per_row=3, max_key_length=5)
    batch = [
        call({"a": 1}),  # step 0
        call({"x": object()}),  # step 1: a type runhistory does not store
        call({"toolongkey": 1}),  # step 2: a key over the length limit
        call({"b": 1, "c": 2}, commit=False),  # step 3, merging
        call({"d": 3, "e": 4}),  # merges to 4 keys: dropped, the row keeps b and c
        call({"f": 5}),  # step 4
    ]
    run = new_run()
    assert_refused(run, InvalidArgument, lambda: run.log(batch, limits=limits))
    outcome = run.log(batch, limits=limits, drop_refused=True)
    assert [row[0] for row in outcome.rows] == [0, 1, 2, 3, 4]
    assert [row[3] for row in outcome.rows] == [{"a": 1}, {}, {}, {"b": 1, "c": 2}, {"f": 5}]
    assert run.next_step == 5
    assert len(outcome.warnings) == 3
    assert outcome.warnings[0].startswith("the data of a log call at step 1 was dropped: ")
    assert "toolongkey" in outcome.warnings[1] and "step 2" in outcome.warnings[1]
    assert "at step 3" in outcome.warnings[2] and "at most 3 keys" in outcome.warnings[2]


def test_drop_refused_still_refuses_a_batch_over_the_request_limits():
    run = new_run()
    limits = Limits(max_request_bytes=100)
    assert_refused(
        run,
        ResourceExhausted,
        lambda: run.log(
            [call({"k": "x" * 30}) for _ in range(5)], limits=limits, drop_refused=True
        ),
    )


# ---- idempotent sequence numbers -----------------------------------------------------------


def test_retried_log_batch_is_a_duplicate_and_records_nothing():
    run = new_run()
    first = run.log([call({"a": 1})], writer="w1", seq=1)
    assert not first.duplicate
    assert run.writer_seq == 1
    run.collect_events()
    before = state(run)
    again = run.log([call({"a": 1})], writer="w1", seq=1)
    assert again.duplicate is True
    assert again.rows == []
    assert again.next_step == 1
    assert run.collect_events() == []
    assert state(run) == before
    second = run.log([call({"a": 2})], writer="w1", seq=2)
    assert not second.duplicate
    assert [row[0] for row in second.rows] == [1]
    # an older sequence number is a duplicate too
    assert run.log([call({"a": 3})], writer="w1", seq=1).duplicate is True
    assert run.next_step == 2


@pytest.mark.parametrize(
    "command",
    [
        lambda run, seq: run.update_config({"x": 1}, writer="w1", seq=seq),
        lambda run, seq: run.set_summary({"x": 1}, writer="w1", seq=seq),
        lambda run, seq: run.define_metric("x", "max", writer="w1", seq=seq),
        lambda run, seq: run.record_artifact("produced", "m", "model", writer="w1", seq=seq),
        lambda run, seq: run.finish(writer="w1", seq=seq),
    ],
    ids=["config", "summary", "metric", "artifact", "finish"],
)
def test_retried_commands_are_duplicates_and_record_nothing(command):
    run = new_run()
    run.log([call({"a": 1})], writer="w1", seq=1)
    run.collect_events()
    before = state(run)
    assert command(run, 1) is False
    assert run.collect_events() == []
    assert state(run) == before
    assert command(run, 2) is True
    assert len(run.collect_events()) == 1
    assert run.writer_seq == 2


def test_sequence_numbers_are_per_writer():
    run = new_run()
    run.log([call({"a": 1})], writer="w1", seq=5)
    run.resume("w2", started_at=T0 + 10)
    outcome = run.log([call({"a": 2})], writer="w2", seq=1)
    assert not outcome.duplicate
    assert [row[0] for row in outcome.rows] == [1]


def test_invalid_sequence_number_is_refused():
    run = new_run()
    assert_refused(run, InvalidArgument, lambda: run.log([call({"a": 1})], writer="w1", seq=0))


# ---- finish --------------------------------------------------------------------------------


def test_finish_commits_the_pending_row():
    run = new_run()
    log_steps(run, 2)
    run.log([call({"last": 1}, ts=T0 + 50, commit=False)])
    run.collect_events()
    assert run.finish() is True
    events = run.collect_events()
    assert [type(e) for e in events] == [Run.Finished]
    assert events[0].rows == [[2, T0 + 50, 50.0, {"last": 1}]]
    assert run.last_step == 2
    assert run.next_step == 3
    assert run.pending is None
    assert run.state == FINISHED
    assert run.exit_code == 0


def test_finish_without_a_pending_row_commits_nothing():
    run = new_run()
    log_steps(run, 2)
    run.collect_events()
    run.finish()
    (event,) = run.collect_events()
    assert event.rows == []
    assert run.last_step == 1


@pytest.mark.parametrize("exit_code", [1, -9, 137])
def test_nonzero_exit_code_crashes_the_run(exit_code):
    run = new_run()
    run.finish(exit_code)
    assert run.state == CRASHED
    assert run.exit_code == exit_code


@pytest.mark.parametrize("exit_code", [False, "0", 0.0, None])
def test_finish_refuses_a_non_integer_exit_code(exit_code):
    run = new_run()
    assert_refused(run, InvalidArgument, lambda: run.finish(exit_code))


@pytest.mark.parametrize("exit_code", [0, 1])
def test_ended_run_refuses_rows(exit_code):
    run = new_run()
    log_steps(run, 1)
    run.finish(exit_code)
    error = assert_refused(run, RunNotRunning, lambda: run.log([call({"a": 1})]))
    assert isinstance(error, FailedPrecondition)
    assert error.code == "FAILED_PRECONDITION"
    assert run.state in error.message


def test_finishing_twice_is_refused():
    run = new_run()
    run.finish()
    assert_refused(run, RunNotRunning, lambda: run.finish())


# ---- superseded writers --------------------------------------------------------------------


OLD_WRITER_COMMANDS = [
    lambda run: run.log([call({"a": 1})], writer="w1"),
    lambda run: run.update_config({"x": 1}, writer="w1"),
    lambda run: run.finish(writer="w1"),
    lambda run: run.set_summary({"x": 1}, writer="w1"),
    lambda run: run.define_metric("x", "max", writer="w1"),
    lambda run: run.record_artifact("produced", "m", "model", writer="w1"),
]
OLD_WRITER_IDS = ["log", "config", "finish", "summary", "metric", "artifact"]


@pytest.mark.parametrize("command", OLD_WRITER_COMMANDS, ids=OLD_WRITER_IDS)
def test_old_writer_is_superseded_by_a_rewind(command):
    run = new_run()
    log_steps(run, 3)
    run.rewind(1, writer="w2", started_at=T0 + 100)
    error = assert_refused(run, Superseded, lambda: command(run))
    assert isinstance(error, FailedPrecondition)
    assert error.code == "FAILED_PRECONDITION"
    assert "superseded by a rewind" in error.message
    # the new writer writes
    outcome = run.log([call({"b": 1})], writer="w2")
    assert [row[0] for row in outcome.rows] == [2]


@pytest.mark.parametrize("command", OLD_WRITER_COMMANDS, ids=OLD_WRITER_IDS)
def test_old_writer_is_superseded_by_a_resume(command):
    run = new_run()
    log_steps(run, 2)
    run.resume("w2", started_at=T0 + 100)
    error = assert_refused(run, Superseded, lambda: command(run))
    assert "superseded by a resume" in error.message
    assert run.update_config({"y": 2}, writer="w2") is True


def test_administrative_client_is_never_fenced():
    run = new_run()
    log_steps(run, 2)
    run.rewind(0, writer="w2", started_at=T0 + 100)
    assert run.update_config({"x": 1}, writer=None) is True
    assert run.config["x"] == 1


# ---- resume --------------------------------------------------------------------------------


def test_resume_continues_after_the_last_step_in_a_new_session():
    run = new_run(config={"a": 1, "b": 1})
    log_steps(run, 3)
    run.log([call({"p": 1}, ts=T0 + 40, commit=False)])
    run.finish(1)
    run.collect_events()
    run.resume("w2", started_at=T0 + 100, config={"b": 2})
    assert run.state == RUNNING
    assert run.exit_code is None
    assert run.next_step == 4
    assert run.config == {"a": 1, "b": 2}
    assert run.run_version == 1
    assert run.writer == "w2"


def test_resume_of_a_running_run_commits_its_pending_row():
    run = new_run()
    log_steps(run, 2)
    run.log([call({"p": 1}, ts=T0 + 40, commit=False)])
    run.collect_events()
    run.resume("w2", started_at=T0 + 100)
    (event,) = run.collect_events()
    assert event.rows == [[2, T0 + 40, 40.0, {"p": 1}]]
    assert run.last_step == 2
    assert run.next_step == 3


# ---- rewind --------------------------------------------------------------------------------


def test_rewind_beyond_the_last_step_is_out_of_range_naming_it():
    run = new_run()
    log_steps(run, 5)  # last committed step 4
    error = assert_refused(run, OutOfRange, lambda: run.rewind(5, "w2", T0 + 100))
    assert error.code == "OUT_OF_RANGE"
    assert re.search(r"last committed step is 4\b", error.message)


def test_rewind_without_a_committed_step_is_out_of_range():
    run = new_run()
    error = assert_refused(run, OutOfRange, lambda: run.rewind(0, "w2", T0 + 100))
    assert "no committed steps" in error.message


def test_rewind_past_a_pending_row_is_out_of_range_naming_its_step():
    run = new_run()
    run.log([call({"a": 1}, commit=False)])  # pending at step 0: the rewind would commit it
    error = assert_refused(run, OutOfRange, lambda: run.rewind(1, "w2", T0 + 100))
    assert re.search(r"last committed step is 0\b", error.message)


@pytest.mark.parametrize("step", [-1, True, 1.0, "1"])
def test_rewind_to_an_invalid_step_is_refused(step):
    run = new_run()
    log_steps(run, 3)
    assert_refused(run, InvalidArgument, lambda: run.rewind(step, "w2", T0 + 100))


@pytest.mark.parametrize("exit_code", [None, 0, 2], ids=["running", "finished", "crashed"])
def test_rewind_works_in_any_state(exit_code):
    run = new_run()
    log_steps(run, 5)
    if exit_code is not None:
        run.finish(exit_code)
    run.rewind(2, writer="w2", started_at=T0 + 100)
    assert run.state == RUNNING
    assert run.exit_code is None
    assert run.run_version == 2
    assert run.last_step == 2
    assert run.next_step == 3
    assert run.pending is None
    outcome = run.log([call({"again": 1})], writer="w2")
    assert [row[0] for row in outcome.rows] == [3]
    assert run.id == PATH.aggregate_id  # same run


def test_rewind_to_the_last_step_is_allowed():
    run = new_run()
    log_steps(run, 3)
    run.rewind(2, writer="w2", started_at=T0 + 100)
    assert run.next_step == 3


def test_rewinds_repeat_each_adding_a_version():
    run = new_run()
    log_steps(run, 5)
    for expected_version, step in enumerate([3, 1, 0], start=2):
        run.rewind(step, writer=f"w{expected_version}", started_at=T0 + expected_version)
        assert run.run_version == expected_version
        assert run.next_step == step + 1
    assert [e.archived_version for e in run.collect_events() if isinstance(e, Run.Rewound)] == [
        1,
        2,
        3,
    ]


def test_rewind_commits_the_pending_row_into_the_archived_version():
    run = new_run()
    log_steps(run, 5)
    run.log([call({"p": 1}, ts=T0 + 60, commit=False)])  # pending at step 5
    run.collect_events()
    run.rewind(2, writer="w2", started_at=T0 + 100)
    (event,) = run.collect_events()
    assert isinstance(event, Run.Rewound)
    assert event.rows == [[5, T0 + 60, 60.0, {"p": 1}]]
    assert event.step == 2
    assert event.archived_version == 1
    # the row belongs to the archived version, not the new one
    assert run.last_step == 2
    assert run.next_step == 3
    assert run.pending is None


def test_rewind_without_a_pending_row_carries_no_rows():
    run = new_run()
    log_steps(run, 3)
    run.collect_events()
    run.rewind(0, writer="w2", started_at=T0 + 100)
    (event,) = run.collect_events()
    assert event.rows == []


def test_rewind_keeps_the_stored_config_and_merges_the_init_config():
    run = new_run(config={"lr": 0.1, "bs": 32})
    run.update_config({"epochs": 3})
    log_steps(run, 3)
    run.rewind(1, writer="w2", started_at=T0 + 100, config={"lr": 0.01})
    assert run.config == {"lr": 0.01, "bs": 32, "epochs": 3}


def test_rewind_with_bad_config_is_refused():
    run = new_run()
    log_steps(run, 3)
    assert_refused(
        run, InvalidArgument, lambda: run.rewind(1, "w2", T0 + 100, config={"x": object()})
    )


# ---- fork ----------------------------------------------------------------------------------


def test_fork_to_the_same_path_is_refused():
    source = new_run()
    log_steps(source, 3)
    source.collect_events()
    before = state(source)
    with pytest.raises(InvalidArgument, match="different"):
        Run.fork(source, 1, PATH, "w9", T0 + 100)
    assert source.collect_events() == []
    assert state(source) == before


def test_fork_beyond_the_last_step_is_out_of_range_naming_it():
    source = new_run()
    log_steps(source, 4)
    source.collect_events()
    before = state(source)
    with pytest.raises(OutOfRange, match=r"last committed step is 3\b"):
        Run.fork(source, 4, FORK_PATH, "w9", T0 + 100)
    assert source.collect_events() == []
    assert state(source) == before


def test_fork_of_a_run_without_committed_steps_is_out_of_range():
    source = new_run()
    with pytest.raises(OutOfRange):
        Run.fork(source, 0, FORK_PATH, "w9", T0 + 100)


@pytest.mark.parametrize("step", [-1, True, "1"])
def test_fork_at_an_invalid_step_is_refused(step):
    source = new_run()
    log_steps(source, 3)
    with pytest.raises(InvalidArgument):
        Run.fork(source, step, FORK_PATH, "w9", T0 + 100)


def test_fork_is_a_new_run_continuing_after_the_fork_step():
    source = new_run()
    log_steps(source, 10)
    fork = Run.fork(source, 4, FORK_PATH, "w9", T0 + 100)
    events = fork.collect_events()
    assert [type(e) for e in events] == [Run.Created]
    assert fork.id == FORK_PATH.aggregate_id != source.id
    assert fork.path == FORK_PATH
    assert fork.state == RUNNING
    assert fork.run_version == 1
    assert fork.last_step == 4
    assert fork.next_step == 5
    outcome = fork.log([call({"a": 1}, ts=T0 + 103)], writer="w9")
    assert outcome.rows == [[5, T0 + 103, 3.0, {"a": 1}]]


def test_fork_records_where_it_was_forked_from():
    source = new_run()
    log_steps(source, 10)
    fork = Run.fork(source, 4, FORK_PATH, "w9", T0 + 100)
    assert set(fork.forked_from) == {"run", "run_uuid", "version", "step"}
    assert fork.forked_from["run"] == "ent/proj/run1"
    assert fork.forked_from["run_uuid"] == str(source.id)
    assert fork.forked_from["step"] == 4


def test_fork_records_the_run_version_of_its_source():
    source = new_run()
    log_steps(source, 10)
    assert Run.fork(source, 4, FORK_PATH, "w9", T0 + 100).forked_from["version"] == 1
    source.rewind(6, writer="w2", started_at=T0 + 200)
    assert source.run_version == 2
    fork2 = Run.fork(source, 5, RunPath("ent", "proj", "fork2"), "w9", T0 + 300)
    assert fork2.forked_from["version"] == 2


def test_fork_inherits_config_merged_with_init_config_and_metric_definitions():
    source = new_run(config={"lr": 0.1, "bs": 32})
    source.update_config({"epochs": 3})
    source.define_metric("loss", "min")
    log_steps(source, 5)
    fork = Run.fork(source, 2, FORK_PATH, "w9", T0 + 100, config={"lr": 0.5, "new": True})
    assert fork.config == {"lr": 0.5, "bs": 32, "epochs": 3, "new": True}
    assert fork.metrics == {"loss": ["min"]}
    # the Created event carries them, so a replay gets them too
    (created,) = fork.collect_events()
    assert created.config == fork.config
    assert created.metrics == {"loss": ["min"]}
    # later changes to the source do not reach the fork
    source.update_config({"lr": 9.0})
    source.define_metric("loss", "max")
    assert fork.config["lr"] == 0.5
    assert fork.metrics == {"loss": ["min"]}


def test_forks_of_forks_work():
    source = new_run()
    log_steps(source, 10)
    fork = Run.fork(source, 4, FORK_PATH, "w9", T0 + 100)
    log_steps(fork, 3, writer="w9")  # steps 5..7
    grandchild = Run.fork(fork, 6, RunPath("ent", "proj", "gc"), "w8", T0 + 200)
    assert grandchild.forked_from["run"] == "ent/proj/fork1"
    assert grandchild.forked_from["step"] == 6
    assert grandchild.next_step == 7


def test_fork_of_a_finished_run_is_allowed():
    source = new_run()
    log_steps(source, 3)
    source.finish()
    fork = Run.fork(source, 2, FORK_PATH, "w9", T0 + 100)
    assert fork.state == RUNNING
    assert fork.next_step == 3


# ---- config, summary, metric definitions, artifacts -----------------------------------------


def test_update_config_merges_top_level_keys_new_value_wins():
    run = new_run(config={"a": 1, "nested": {"x": 1, "y": 2}})
    run.update_config({"a": 2, "nested": {"x": 5}, "b": [1, 2]})
    assert run.config == {"a": 2, "nested": {"x": 5}, "b": [1, 2]}


def test_update_config_refuses_bad_values():
    run = new_run()
    assert_refused(run, InvalidArgument, lambda: run.update_config({"a": {1, 2}}))


def test_set_summary_uses_the_logged_key_rules():
    run = new_run()
    assert run.set_summary({"acc": {"top1": 0.9}}) is True
    (event,) = run.collect_events()
    assert event.values == {"acc.top1": 0.9}
    assert_refused(run, InvalidArgument, lambda: run.set_summary({"_step": 1}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("min", ["min"]),
        ("min,max,mean,first,last", ["min", "max", "mean", "first", "last"]),
        ("last,first", ["first", "last"]),
        (" max , min ", ["min", "max"]),
        ("max,max", ["max"]),
        ("none", []),
        (" none ", []),
    ],
)
def test_parse_summary_choice(text, expected):
    assert parse_summary_choice(text) == expected


@pytest.mark.parametrize("text", ["", " , ", "avg", "min,avg", "none,min", "MIN", None, 3])
def test_parse_summary_choice_refuses_anything_else(text):
    with pytest.raises(InvalidArgument, match="min,max,mean,first,last"):
        parse_summary_choice(text)


def test_define_metric_records_the_chosen_aggregates():
    run = new_run()
    assert run.define_metric("val.loss", "max,min") is True
    assert run.metrics == {"val.loss": ["min", "max"]}
    run.define_metric("acc", "none")
    run.define_metric("val.loss", "last")  # a later definition replaces the earlier one
    assert run.metrics == {"val.loss": ["last"], "acc": []}
    events = run.collect_events()
    assert [type(e) for e in events] == [Run.MetricDefined] * 3


@pytest.mark.parametrize(
    ("key", "summary"), [("loss", "median"), ("_step", "max"), ("", "max"), (3, "max")]
)
def test_define_metric_refuses_bad_keys_and_summaries(key, summary):
    run = new_run()
    assert_refused(run, InvalidArgument, lambda: run.define_metric(key, summary))


def test_record_artifact_records_its_fields():
    run = new_run()
    assert run.record_artifact("produced", "model", "model", "sha256:ab", 10, "s3://b/m")
    assert run.record_artifact("used", "data", "dataset")
    first, second = run.collect_events()
    assert first.artifact == {
        "direction": "produced",
        "name": "model",
        "type": "model",
        "digest": "sha256:ab",
        "size": 10,
        "uri": "s3://b/m",
        "version": 1,
    }
    assert second.artifact["direction"] == "used"
    assert second.artifact["size"] == 0


def test_artifact_belongs_to_the_run_version_that_recorded_it():
    run = new_run()
    log_steps(run, 3)
    run.record_artifact("produced", "ckpt", "model")
    run.rewind(1, writer="w2", started_at=T0 + 100)
    run.record_artifact("produced", "ckpt", "model", writer="w2")
    artifacts = [e.artifact for e in run.collect_events() if isinstance(e, Run.ArtifactRecorded)]
    assert [a["version"] for a in artifacts] == [1, 2]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"direction": "made"},
        {"name": ""},
        {"name": "   "},
        {"name": "n" * 257},
        {"name": None},
        {"type": ""},
        {"type": "t" * 257},
        {"size": -1},
        {"size": 1.5},
        {"size": "10"},
    ],
)
def test_record_artifact_refuses_bad_fields(kwargs):
    run = new_run()
    args = {"direction": "produced", "name": "model", "type": "model", **kwargs}
    assert_refused(run, InvalidArgument, lambda: run.record_artifact(**args))


def test_record_artifact_accepts_256_character_names():
    run = new_run()
    assert run.record_artifact("produced", "n" * 256, "t" * 256)


# ---- replay --------------------------------------------------------------------------------


def build_eventful_run() -> tuple[Run, list]:
    """A run through every command, with all its events (none collected yet)."""
    run = Run.start(PATH, "w1", T0, name="demo", tags=["a", "b"], config={"lr": 0.1})
    run.log(
        [
            call({"loss": 1.0, "nested": {"x": 1}}, ts=T0 + 1),
            call({"loss": float("nan"), "inf": float("inf")}, ts=T0 + 2),
            call({"pending": -math.inf}, ts=T0 + 3, step=5),
        ],
        writer="w1",
        seq=1,
    )
    run.update_config({"bs": 64, "layers": [1, 2, {"k": None}]}, writer="w1", seq=2)
    run.set_summary({"best": 0.5}, writer="w1", seq=3)
    run.define_metric("loss", "min,mean", writer="w1", seq=4)
    run.record_artifact("produced", "ckpt", "model", "d1", 5, "file:///c", writer="w1", seq=5)
    run.rewind(1, writer="w2", started_at=T0 + 100, config={"lr": 0.01})
    run.log([call({"loss": 0.5}, ts=T0 + 101)], writer="w2", seq=1)
    run.finish(3, writer="w2", seq=2)
    run.resume("w3", started_at=T0 + 200)
    run.log([call({"loss": 0.4}, ts=T0 + 201, commit=False)], writer="w3", seq=1)
    run.update_details(name="renamed", notes="n", group="g", job_type="train")
    return run, run.collect_events()


def test_replaying_the_events_rebuilds_the_same_aggregate():
    run, events = build_eventful_run()
    assert len(events) == 12
    rebuilt = None
    for event in events:
        rebuilt = event.mutate(rebuilt)
    assert isinstance(rebuilt, Run)
    assert state(rebuilt) == state(run)
    assert rebuilt.pending["step"] == 3
    assert rebuilt.run_version == 2
    assert rebuilt.writer == "w3"


def test_replay_after_serialisation_rebuilds_the_same_aggregate():
    """Through eventsourcing's JSON mapper and an in-memory event store."""
    run, events = build_eventful_run()
    app = Application()
    app.save(*events)
    rebuilt = app.repository.get(run.id)
    assert state(rebuilt) == state(run)
    # NaN and infinities in the stored rows survive the round trip
    stored = list(app.repository.event_store.get(run.id))
    rows = rows_of(stored)
    assert math.isnan(rows[1][3]["loss"])
    assert rows[1][3]["inf"] == math.inf
    assert rebuilt.pending["values"] == {"loss": 0.4}


def test_snapshot_rebuilds_the_same_aggregate():
    run, _ = build_eventful_run()
    snapshot = Run.Snapshot.take(run)
    assert type(snapshot).TOPIC == "runhistory:Run.Snapshot"
    assert state(snapshot.mutate(None)) == state(run)


PINNED_TOPICS = {
    "Created": "runhistory:Run.Created",
    "RowsLogged": "runhistory:Run.RowsLogged",
    "ConfigUpdated": "runhistory:Run.ConfigUpdated",
    "SummarySet": "runhistory:Run.SummarySet",
    "MetricDefined": "runhistory:Run.MetricDefined",
    "ArtifactRecorded": "runhistory:Run.ArtifactRecorded",
    "Finished": "runhistory:Run.Finished",
    "Resumed": "runhistory:Run.Resumed",
    "Rewound": "runhistory:Run.Rewound",
    "CrashDetected": "runhistory:Run.CrashDetected",
    "Revived": "runhistory:Run.Revived",
    "DetailsUpdated": "runhistory:Run.DetailsUpdated",
}


def test_every_event_class_has_its_pinned_topic():
    """The topics are what stored events are decoded by: they never change."""
    declared = {
        name: value
        for name, value in vars(Run).items()
        if isinstance(value, type) and issubclass(value, DomainEvent) and value is not Run.Event
    }
    assert {cls.__name__ for cls in EVENT_CLASSES} == set(declared) - {"Snapshot"}
    assert {cls.__name__: get_topic(cls) for cls in EVENT_CLASSES} == PINNED_TOPICS
    assert event_types() == tuple(PINNED_TOPICS)
    for cls in EVENT_CLASSES:
        assert resolve_topic(get_topic(cls)) is cls
    assert get_topic(Run.Snapshot) == "runhistory:Run.Snapshot"
    assert resolve_topic("runhistory:Run.Snapshot") is Run.Snapshot
    assert get_topic(Run) == "runhistory:Run"
    assert resolve_topic("runhistory:Run") is Run


def test_emitted_events_use_the_pinned_topics():
    run, events = build_eventful_run()
    app = Application()
    app.save(*events)
    stored = app.recorder.select_events(run.id)
    assert stored
    for record in stored:
        assert record.topic.startswith("runhistory:Run."), record.topic
    assert events[0].originator_topic == "runhistory:Run"


# ---- details: name, tags, notes, group, job type ------------------------------------------


def test_details_replace_what_is_given_and_keep_the_rest():
    run = Run.start(PATH, "w1", T0, name="first", tags=["a"])
    assert (run.notes, run.group, run.job_type) == ("", "", "")
    assert run.update_details(notes="why", group="sweep-1", job_type="train")
    assert run.update_details(name="second", tags=["b", "c"])
    assert (run.name, run.tags, run.notes, run.group, run.job_type) == (
        "second",
        ["b", "c"],
        "why",
        "sweep-1",
        "train",
    )
    replayed = None
    for event in run.collect_events():  # a read of the stream rebuilds them
        replayed = event.mutate(replayed)
    assert (replayed.name, replayed.tags, replayed.notes) == ("second", ["b", "c"], "why")
    assert (replayed.group, replayed.job_type) == ("sweep-1", "train")


def test_details_that_change_nothing_write_no_event():
    run = Run.start(PATH, "w1", T0, name="same", tags=["a"])
    run.collect_events()
    assert not run.update_details(name="same", tags=["a"])
    assert not run.update_details()
    assert run.collect_events() == []
    assert run.update_details(name="same", notes="new")
    (event,) = run.collect_events()
    assert isinstance(event, Run.DetailsUpdated)
    assert (event.name, event.tags, event.notes) == (None, None, "new")


@pytest.mark.parametrize(
    "details, message",
    [
        ({"notes": 5}, "notes is a string"),
        ({"group": "g" * 129}, "group is a string of at most 128"),
        ({"job_type": "j" * 65}, "job_type is a string of at most 64"),
        ({"tags": "not-a-list"}, "tags is a list"),
        ({"name": "n" * 129}, "run name"),
    ],
)
def test_invalid_details_are_refused_and_change_nothing(details, message):
    run = Run.start(PATH, "w1", T0)
    run.collect_events()
    with pytest.raises(InvalidArgument, match=message):
        run.update_details(**details)
    assert run.collect_events() == []


def test_details_from_a_session_are_fenced_and_applied_once():
    run = Run.start(PATH, "w1", T0, name="first")
    run.collect_events()
    assert run.update_details(name="second", writer="w1", seq=1)
    assert not run.update_details(name="third", writer="w1", seq=1)  # a retry: applied once
    assert run.name == "second" and run.writer_seq == 1
    assert run.update_details(name="second", writer="w1", seq=2)  # no change, seq recorded
    assert run.writer_seq == 2
    with pytest.raises(Superseded):
        run.update_details(name="other", writer="w0", seq=3)
    assert run.name == "second"
