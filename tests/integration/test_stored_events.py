"""Events already stored in users' databases keep decoding.

`fixtures/run_events_f0de3c4.json` holds stored event records (eventsourcing's JSON mapper)
written at commit f0de3c4, when the Run's event classes were made implicitly by
`@event("Name", topic=...)`, by `old_scenario()` below: a run through every command, a
snapshot of it, and a fork of it. A renamed topic, a renamed, added or dropped field, or a
change to what the aggregate keeps in a snapshot fails here instead of stranding them.

An event class added later gets a fixture of its own, written by the code that added it and
never regenerated: `fixtures/run_events_crash_detection.json` (CrashDetected, Revived) by
`crash_scenario()`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from conftest import exact
from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from runhistory.domain.identity import RunPath
from runhistory.domain.run import EVENT_CLASSES, Run
from runhistory.domain.values import LogCall
from runhistory.projections import archive, history, runs, summary
from runhistory.projections.database import Database
from runhistory.projections.runner import ProjectionRunner

FIXTURE = Path(__file__).parent / "fixtures" / "run_events_f0de3c4.json"
CRASH_FIXTURE = Path(__file__).parent / "fixtures" / "run_events_crash_detection.json"
RUN = RunPath("ent", "proj", "run1")
FORK = RunPath("ent", "proj", "fork1")
T0 = 1000.0


def call(data: dict[str, Any], ts: float, step: int | None = None, commit: bool | None = None):
    return LogCall(data=data, timestamp=ts, step=step, commit=commit)


def old_scenario() -> list[Any]:
    """The commands the fixture's events were written by; returns the events, the snapshot
    between the run's and the fork's, in the fixture's order."""
    run = Run.start(RUN, "w1", T0, name="demo", tags=["a", "b"], config={"lr": 0.1})
    run.log(
        [
            call({"loss": 1.0, "nested": {"x": 1}}, T0 + 1),
            call({"loss": math.nan, "inf": math.inf, "flag": True, "text": "s"}, T0 + 2),
            call({"pending": -math.inf}, T0 + 3, step=5),
        ],
        writer="w1",
        seq=1,
    )
    run.update_config({"bs": 64, "layers": [1, 2, {"k": None}]}, writer="w1", seq=2)
    run.set_summary({"best": 0.5}, writer="w1", seq=3)
    run.define_metric("loss", "min,mean", writer="w1", seq=4)
    run.record_artifact("produced", "ckpt", "model", "d1", 5, "file:///c", writer="w1", seq=5)
    run.rewind(1, writer="w2", started_at=T0 + 100, config={"lr": 0.01})
    run.log([call({"loss": 0.5}, T0 + 101)], writer="w2", seq=1)
    run.finish(3, writer="w2", seq=2)
    run.resume("w3", started_at=T0 + 200)
    run.log([call({"loss": 0.4}, T0 + 201, commit=False)], writer="w3", seq=1)
    events = run.collect_events()
    snapshot = Run.Snapshot.take(run)
    fork = Run.fork(run, 2, FORK, "w4", T0 + 300, config={"extra": 1})
    fork.log([call({"loss": 0.3}, T0 + 301)], writer="w4", seq=1)
    return [*events, snapshot, *fork.collect_events()]


def crash_scenario() -> list[Any]:
    """The commands `CRASH_FIXTURE`'s events were written by: a run whose writer falls
    silent, is crashed, comes back (revived by its next rows), falls silent again and is
    resumed by a new session."""
    run = Run.start(RUN, "w1", T0)
    run.log([call({"loss": 1.0}, T0 + 1)], writer="w1", seq=1)
    # Heard from last at CRASH_HEARD, after the events' own clock readings: the payload
    # depends on the given times only.
    run.detect_crash(CRASH_HEARD, CRASH_HEARD + 300.0, 300.0)
    run.log([call({"loss": 0.5}, T0 + 2)], writer="w1", seq=2)
    run.detect_crash(CRASH_HEARD + 1000.0, CRASH_HEARD + 1400.0, 300.0)
    run.resume("w2", started_at=T0 + 300)
    return run.collect_events()


CRASH_HEARD = 4.0e9


def stored_records(fixture: Path = FIXTURE) -> list[StoredEvent]:
    records = json.loads(fixture.read_text())["records"]
    return [
        StoredEvent(
            originator_id=UUID(record["originator_id"]),
            originator_version=record["originator_version"],
            topic=record["topic"],
            state=record["state"].encode(),
        )
        for record in records
    ]


def decoded() -> list[Any]:
    mapper = Application().mapper
    return [mapper.to_domain_event(record) for record in stored_records()]


def run_events(events: Sequence[Any]) -> list[Any]:
    return [e for e in events if not isinstance(e, Run.Snapshot)]


# Event classes added after the fixtures were written: they add to the stream, so nothing
# stored before them changes.
ADDED_SINCE_FIXTURE = (Run.DetailsUpdated,)


def test_every_event_class_is_in_the_fixtures() -> None:
    topics = {r.topic for fixture in (FIXTURE, CRASH_FIXTURE) for r in stored_records(fixture)}
    fixture_classes = [cls for cls in EVENT_CLASSES if cls not in ADDED_SINCE_FIXTURE]
    assert topics == {get_topic(cls) for cls in fixture_classes} | {get_topic(Run.Snapshot)}


@pytest.mark.parametrize("fixture", [FIXTURE, CRASH_FIXTURE], ids=lambda f: f.stem)
def test_stored_events_decode_into_the_event_classes_with_their_fields(fixture: Path) -> None:
    by_topic = {get_topic(cls): cls for cls in (*EVENT_CLASSES, Run.Snapshot)}
    mapper = Application().mapper
    for record in stored_records(fixture):
        event = mapper.to_domain_event(record)
        assert type(event) is by_topic[record.topic]
        # The fields the class declares are exactly those stored: none renamed or missing.
        declared = {field.name for field in dataclasses.fields(event)}
        assert declared == set(vars(event)), record.topic
        # Encoded again by today's code, the event is what was stored.
        assert mapper.to_stored_event(event).state == record.state, record.topic


def test_stored_events_replay_into_the_run() -> None:
    app = Application()
    snapshot_topic = get_topic(Run.Snapshot)
    app.recorder.insert_events([r for r in stored_records() if r.topic != snapshot_topic])
    run = app.repository.get(RUN.aggregate_id)
    assert isinstance(run, Run)
    assert (run.run_version, run.state, run.exit_code, run.writer) == (2, "running", None, "w3")
    assert (run.last_step, run.next_step) == (2, 3)
    assert run.pending == {"step": 3, "timestamp": T0 + 201, "values": {"loss": 0.4}}
    assert run.config == {"lr": 0.01, "bs": 64, "layers": [1, 2, {"k": None}]}
    assert run.metrics == {"loss": ["min", "mean"]}

    snapshot = next(e for e in decoded() if isinstance(e, Run.Snapshot))
    from_snapshot = snapshot.mutate(None)
    assert vars(from_snapshot) == vars(run)

    fork = app.repository.get(FORK.aggregate_id)
    assert fork.forked_from == {
        "run": str(RUN),
        "run_uuid": str(RUN.aggregate_id),
        "version": 2,
        "step": 2,
    }
    assert (fork.last_step, fork.next_step, fork.run_version) == (3, 4, 1)


class FixtureEvents:
    """The fixture's run events as the projections' event source."""

    def __init__(self, events: Sequence[Any]) -> None:
        self.events = list(enumerate(run_events(events), start=1))

    def read(self, after: int, limit: int) -> list[tuple[int, Any]]:
        return self.events[after : after + limit]

    def last_position(self) -> int:
        return len(self.events)


def test_stored_events_build_the_read_models() -> None:
    db = Database("sqlite://")
    ProjectionRunner(FixtureEvents(decoded()), db).catch_up()
    with db.read() as conn:
        run = history.segment_of(conn, RUN.aggregate_id, None)
        rows = list(history.read_rows(conn, run))
        assert [row["_step"] for row in rows] == [0, 1, 2]
        assert exact(rows[1]) == exact(
            {
                "_step": 1,
                "_timestamp": T0 + 2,
                "_runtime": 2.0,
                "loss": math.nan,
                "inf": math.inf,
                "flag": True,
                "text": "s",
            }
        )
        archived = history.segment_of(conn, RUN.aggregate_id, 1)
        assert [row["_step"] for row in history.read_rows(conn, archived)] == [0, 1, 5]
        assert summary.read_summary(conn, archived)["best"] == 0.5
        loss = summary.read_summary(conn, run)["loss"]
        assert loss == {"min": 0.5, "mean": 0.75}  # NaN is skipped
        fork = history.segment_of(conn, FORK.aggregate_id, None)
        steps = [[row["_step"], row["loss"]] for row in history.read_rows(conn, fork)]
        assert exact(steps) == exact([[0, 1.0], [1, math.nan], [2, 0.5], [3, 0.3]])


def payload(event: Any) -> dict[str, Any]:
    """What the store keeps of an event, but for the clock's readings."""
    state = json.loads(Application().mapper.to_stored_event(event).state)
    state.pop("timestamp")
    if isinstance(event, Run.Snapshot):
        state["state"].pop("_created_on")
        state["state"].pop("_modified_on")
    return state


@pytest.mark.parametrize("index", range(len(stored_records())))
def test_todays_commands_write_what_was_stored(index: int) -> None:
    """The same commands write the same topics and payloads as at f0de3c4: new events look
    like the stored ones, so one reader serves both."""
    record = stored_records()[index]
    event = old_scenario()[index]
    assert get_topic(type(event)) == record.topic
    stored = payload(Application().mapper.to_domain_event(record))
    assert exact(payload(event)) == exact(stored)


@pytest.mark.parametrize("index", range(len(stored_records(CRASH_FIXTURE))))
def test_todays_commands_write_what_was_stored_for_crash_detection(index: int) -> None:
    record = stored_records(CRASH_FIXTURE)[index]
    event = crash_scenario()[index]
    assert get_topic(type(event)) == record.topic
    stored = payload(Application().mapper.to_domain_event(record))
    assert exact(payload(event)) == exact(stored)


def test_stored_crash_events_replay_into_the_run_and_the_read_models() -> None:
    app = Application()
    app.recorder.insert_events(stored_records(CRASH_FIXTURE))
    run = app.repository.get(RUN.aggregate_id)
    assert (run.state, run.writer, run.last_step) == ("running", "w2", 1)
    mapper = Application().mapper
    events = [mapper.to_domain_event(r) for r in stored_records(CRASH_FIXTURE)]
    assert [type(e).__name__ for e in events] == [
        "Created",
        "RowsLogged",
        "CrashDetected",
        "Revived",
        "RowsLogged",
        "CrashDetected",
        "Resumed",
    ]
    assert (events[2].writer, events[2].silent_since, events[2].crash_after) == (
        "w1",
        CRASH_HEARD,
        300.0,
    )
    # Each prefix of the stream builds the run's state as it stood then.
    for count, expected in ((3, "crashed"), (5, "running"), (6, "crashed"), (7, "running")):
        db = Database("sqlite://")
        ProjectionRunner(FixtureEvents(events[:count]), db).catch_up()
        with db.read() as conn:
            record = runs.find_run(conn, RUN)
            assert (record["state"], record["exit_code"]) == (expected, None), count
            (version,) = archive.list_versions(conn, record["run_uuid"])
            assert version["state"] == expected
