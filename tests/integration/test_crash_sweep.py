"""Crash detection through the run service, on every backend: heartbeats, the sweep that
marks silent runs crashed, revival by the writer, and resume and rewind of a crashed run.

The service's clock is the test's: time moves only when the test says, so a timeout of a
minute takes no time. The events' own timestamps are real: where a test needs the run's
last event to be old, it sets the clock past that event's time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from conftest import SHARED

from runhistory.domain.errors import RunNotRunning, Superseded
from runhistory.domain.identity import BranchPoint, RunPath
from runhistory.domain.values import LogCall
from runhistory.service.runs import RunService, Session
from runhistory.service.settings import Settings

TIMEOUT = 60.0
DUE = TIMEOUT + 0.001  # just past the timeout: sums of float times are not exact


class Clock:
    """A clock that moves only when told. It starts an hour ago: the service was started
    long before the runs of the test (see the restart test for a fresh start)."""

    def __init__(self) -> None:
        self.now = time.time() - 3600

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def open_service(database: str, clock: Clock, crash_after: float = TIMEOUT) -> RunService:
    return RunService(Settings(db=database, crash_after=crash_after), clock=clock)


@pytest.fixture
def service(database: str, clock: Clock) -> Iterator[RunService]:
    with open_service(database, clock) as svc:
        yield svc


def log(service: RunService, session: Session, value: float, seq: int) -> None:
    call = LogCall({"loss": value}, timestamp=time.time(), step=None, commit=None)
    service.log(session.path, [call], writer=session.writer, seq=seq)


def last_event_at(service: RunService, path: RunPath) -> float:
    return service.store.repository.get(path.aggregate_id).modified_on.timestamp()


def types(service: RunService, path: RunPath) -> list[str]:
    return [event.type for event in service.events(path=path)]


def started(service: RunService, run_id: str = "r1") -> Session:
    session = service.init("ent", "proj", run_id)
    log(service, session, 1.0, seq=1)
    return session


def test_a_silent_run_is_crashed_after_the_timeout_as_an_event(
    service: RunService, clock: Clock
) -> None:
    session = started(service)
    finished = service.init("ent", "proj", "done")
    service.finish(finished.path, writer=finished.writer)
    path = session.path
    quiet_since = last_event_at(service, path)

    clock.now = quiet_since + TIMEOUT - 0.5
    assert service.sweep() == []
    assert service.run(path).state == "running"

    clock.now = quiet_since + DUE
    assert service.sweep() == [path]  # the finished run is left alone
    assert service.run(path).state == "crashed"
    assert service.run(path).exit_code is None
    assert service.run(finished.path).state == "finished"
    assert service.versions(path)[-1].state == "crashed"
    crash = service.events(path=path, types=["CrashDetected"])[0]
    assert crash.payload == {
        "writer": session.writer,
        "silent_since": quiet_since,
        "crash_after": TIMEOUT,
    }
    # Swept again, nothing more is written.
    clock.advance(10 * TIMEOUT)
    assert service.sweep() == []
    assert types(service, path) == ["Created", "RowsLogged", "CrashDetected"]


def test_heartbeats_keep_a_run_alive_without_writing_events(
    service: RunService, clock: Clock
) -> None:
    session = started(service)
    path = session.path
    before = service.store.last_position()
    clock.now = last_event_at(service, path)
    for _ in range(10):
        clock.advance(TIMEOUT * 0.9)
        ack = service.heartbeat(path, writer=session.writer)
        assert (ack.state, ack.revived, ack.position) == ("running", False, 0)
        assert service.sweep() == []
    assert service.store.last_position() == before  # heartbeats are not events
    heard = clock.now
    clock.advance(DUE)
    assert service.sweep() == [path]
    crash = service.events(path=path, types=["CrashDetected"])[0]
    assert crash.payload["silent_since"] == heard


def test_every_write_counts_as_hearing_from_the_writer(service: RunService, clock: Clock) -> None:
    session = started(service)
    path = session.path
    created = last_event_at(service, path)
    time.sleep(1.0)  # the next event's real timestamp is a second later
    service.update_config(path, {"lr": 0.1}, writer=session.writer, seq=2)
    written = last_event_at(service, path)
    assert written >= created + 1.0
    clock.now = created + TIMEOUT + 0.5
    assert service.sweep() == []
    clock.now = written + DUE
    assert service.sweep() == [path]


def test_the_writer_back_from_a_partition_revives_the_run(
    service: RunService, clock: Clock
) -> None:
    session = started(service)
    path = session.path
    clock.now = last_event_at(service, path) + DUE
    assert service.sweep() == [path]

    # Another session's heartbeat is refused and changes nothing.
    with pytest.raises(Superseded):
        service.heartbeat(path, writer="someone-else")
    assert service.run(path).state == "crashed"

    ack = service.heartbeat(path, writer=session.writer)
    assert ack.revived and ack.state == "running" and ack.position > 0
    assert service.run(path).state == "running"

    clock.advance(DUE)  # silent again, for as long since that heartbeat
    assert service.sweep() == [path]
    log(service, session, 0.5, seq=2)  # a write revives it too, before its rows
    assert service.run(path).state == "running"
    assert [row["loss"] for row in service.history(path)] == [1.0, 0.5]
    assert types(service, path) == [
        "Created",
        "RowsLogged",
        "CrashDetected",
        "Revived",
        "CrashDetected",
        "Revived",
        "RowsLogged",
    ]
    service.finish(path, writer=session.writer, seq=3)
    assert service.run(path).state == "finished"
    assert not service.heartbeat(path, writer=session.writer).revived


def test_resume_must_and_rewind_work_on_a_crashed_run(service: RunService, clock: Clock) -> None:
    session = started(service)
    path = session.path
    log(service, session, 0.9, seq=2)
    clock.now = last_event_at(service, path) + DUE
    assert service.sweep() == [path]

    resumed = service.init("ent", "proj", path.run_id, resume="must")
    assert resumed.next_step == 2 and service.run(path).state == "running"
    with pytest.raises(Superseded):  # the silent writer lost the run to the resume
        service.heartbeat(path, writer=session.writer)
    log(service, resumed, 0.8, seq=1)

    clock.now = last_event_at(service, path) + DUE
    assert service.sweep() == [path]
    rewound = service.rewind(BranchPoint(path, 1))
    assert (rewound.version, rewound.next_step) == (2, 2)
    assert service.run(path).state == "running"
    assert [row["_step"] for row in service.history(path)] == [0, 1]
    # The archived version kept its crashed state.
    assert [v.state for v in service.versions(path)] == ["crashed", "running"]


def test_only_the_writer_revives_a_crashed_run(service: RunService, clock: Clock) -> None:
    session = started(service)
    path = session.path
    clock.now = last_event_at(service, path) + DUE
    service.sweep()
    # An administrative write (no writer) is not the writer coming back.
    with pytest.raises(RunNotRunning, match="crashed"):
        service.log(path, [LogCall({"x": 1}, time.time(), None, None)])
    service.set_summary(path, {"note": 1})
    assert service.run(path).state == "crashed"


def test_a_rebuild_reproduces_crashed_and_revived_states(service: RunService, clock: Clock) -> None:
    crashed, revived = started(service, "crashed"), started(service, "revived")
    clock.now = max(last_event_at(service, s.path) for s in (crashed, revived)) + DUE
    assert sorted(map(str, service.sweep())) == [str(crashed.path), str(revived.path)]
    service.heartbeat(revived.path, writer=revived.writer)
    before = service.checksums()
    service.rebuild()
    assert service.checksums() == before
    assert service.run(crashed.path).state == "crashed"
    assert service.run(revived.path).state == "running"
    as_of = service.events(path=crashed.path)[-1].position
    assert service.as_of(crashed.path, position=as_of).history()  # replays through the event


def test_crash_detection_is_off_with_a_timeout_of_zero(database: str, clock: Clock) -> None:
    with open_service(database, clock, crash_after=0) as service:
        session = started(service)
        clock.advance(100 * TIMEOUT)
        assert service.sweep() == []
        assert service.heartbeat(session.path, writer=session.writer).state == "running"
        assert service.run(session.path).state == "running"


@pytest.mark.backends(*SHARED)
def test_a_restarted_server_gives_every_writer_the_timeout_again(
    database: str, clock: Clock
) -> None:
    with open_service(database, clock) as service:
        session = started(service)
    clock.advance(100 * TIMEOUT)  # the server was down for a long time
    with open_service(database, clock) as restarted:
        assert restarted.sweep() == []  # not at once: writers reconnect after a restart
        clock.advance(TIMEOUT - 1)
        assert restarted.sweep() == []
        clock.advance(1.001)
        assert restarted.sweep() == [session.path]
        crash = restarted.events(path=session.path, types=["CrashDetected"])[0]
        assert crash.payload["silent_since"] == restarted.started_at


@pytest.mark.backends(*SHARED)
def test_heartbeats_reach_every_server_sharing_the_database(database: str, clock: Clock) -> None:
    with open_service(database, clock) as one, open_service(database, clock) as other:
        session = started(one)
        clock.now = last_event_at(one, session.path)
        for _ in range(5):
            clock.advance(TIMEOUT / 2)
            one.heartbeat(session.path, writer=session.writer)
            assert other.sweep() == []
        clock.advance(DUE)
        assert other.sweep() == [session.path]


@pytest.mark.backends(*SHARED)
def test_servers_sweeping_at_once_record_one_crash_per_run(database: str, clock: Clock) -> None:
    count = 12
    with open_service(database, clock) as one, open_service(database, clock) as other:
        sessions = [started(one, f"r{i}") for i in range(count)]
        clock.now = max(last_event_at(one, s.path) for s in sessions)
        for service in (one, other):  # both hold the runs in their caches
            for session in sessions:
                service.heartbeat(session.path, writer=session.writer)
        clock.advance(DUE)
        barrier = threading.Barrier(2)
        found: dict[str, list[RunPath]] = {}
        failures: list[BaseException] = []

        def sweep(name: str, service: RunService) -> None:
            try:
                barrier.wait()
                found[name] = service.sweep()
            except BaseException as error:
                failures.append(error)

        threads = [
            threading.Thread(target=sweep, args=(name, svc))
            for name, svc in (("one", one), ("other", other))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        marked = sorted(str(p) for p in found["one"] + found["other"])
        assert marked == sorted(str(s.path) for s in sessions)  # each once, by either
        crashes = one.events(types=["CrashDetected"], limit=10_000)
        assert len(crashes) == count
        everything = one.store.last_position()  # read what both servers wrote
        assert {one.run(s.path, everything).state for s in sessions} == {"crashed"}


def test_the_liveness_table_survives_a_rebuild(service: RunService, clock: Clock) -> None:
    session = started(service)
    clock.now = last_event_at(service, session.path) + TIMEOUT / 2
    service.heartbeat(session.path, writer=session.writer)
    service.rebuild()
    clock.advance(TIMEOUT * 0.9)
    assert service.sweep() == []
