"""Scenarios through the run service, each on the in-memory store and on a SQLite file."""

from __future__ import annotations

import math
import threading
import time

import pytest

from runhistory.domain.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    RunNotRunning,
    Superseded,
)
from runhistory.domain.identity import RunPath, version_id
from runhistory.domain.values import LogCall
from runhistory.service import events
from runhistory.service.records import Ancestor, ForkedFrom
from runhistory.service.runs import RunService

T0 = 1_700_000_000.0


def log(service: RunService, session, *datas, step=None, commit=None, seq=None):
    calls = [LogCall(d, timestamp=T0 + i, step=step, commit=commit) for i, d in enumerate(datas)]
    return service.log(session.path, calls, writer=session.writer, seq=seq)


def steps(rows):
    return [row["_step"] for row in rows]


def wandb_rewind_example(service: RunService):
    """The W&B "rewind a run" page's example, as the SDK would send it."""
    run1 = service.init("ent", "proj", started_at=T0)
    log(service, run1, *({"metric": i} for i in range(300)))
    service.finish(run1.path, writer=run1.writer)
    run2 = service.init("ent", "proj", resume_from=f"{run1.path.run_id}?_step=200", started_at=T0)
    calls = []
    for i in range(200, 300):
        calls.append(LogCall({"metric": i, "step": i}, timestamp=T0 + i))
        calls.append(LogCall({"additional_metric": i * 1.1, "step": i}, timestamp=T0 + i))
    service.log(run2.path, calls, writer=run2.writer)
    service.finish(run2.path, writer=run2.writer)
    return run1, run2


def test_wandb_rewind_example(service: RunService) -> None:
    run1, run2 = wandb_rewind_example(service)
    path = run1.path
    assert run2.path == path and run2.version == 2

    rows = service.history(path)
    assert steps(rows) == list(range(401))
    assert [r["metric"] for r in rows[:201]] == list(range(201))
    assert "step" not in rows[200]
    # After the rewind, two log calls per i, each committing its own row.
    assert rows[201] == {**rows[201], "metric": 200, "step": 200}
    assert rows[202]["additional_metric"] == pytest.approx(220.0)
    assert rows[400]["additional_metric"] == pytest.approx(299 * 1.1)

    archived = service.history(path, version=1)
    assert steps(archived) == list(range(300))
    assert [r["metric"] for r in archived] == list(range(300))

    summary = service.summary(path)
    assert summary["metric"] == 299  # last logged "metric" is at step 399
    assert summary["step"] == 299
    assert summary["additional_metric"] == pytest.approx(299 * 1.1)
    assert service.summary(path, version=1) == {"metric": 299}

    versions = service.versions(path)
    assert [(v.version, v.archived, v.rewound_to_step, v.rows) for v in versions] == [
        (1, True, 200, 300),
        (2, False, None, 401),
    ]
    assert versions[0].state == "finished"

    fork = service.init("ent", "proj", fork_from=f"{path.run_id}?_step=300")
    assert steps(service.history(fork.path)) == list(range(301))
    assert service.history(fork.path, own_only=True) == []
    assert fork.next_step == 301
    info = service.run(fork.path)
    assert info.forked_from == ForkedFrom(
        run=str(path), step=300, version=2, immutable_id=version_id(path.aggregate_id, 2)
    )

    with pytest.raises(OutOfRange, match="last committed step is 400"):
        service.init("ent", "proj", fork_from=f"{path.run_id}?_step=500")


def test_fork_is_unchanged_by_a_later_rewind_of_its_source(service: RunService) -> None:
    source = service.init("ent", "proj", "src", started_at=T0)
    log(service, source, *({"x": i} for i in range(10)))
    fork = service.init("ent", "proj", "child", fork_from="src?_step=7")
    log(service, fork, {"x": 100})
    service.init("ent", "proj", resume_from="src?_step=2")
    assert steps(service.history(RunPath("ent", "proj", "src"))) == [0, 1, 2]
    child_rows = service.history(fork.path)
    assert steps(child_rows) == [*range(8), 8]
    assert [r["x"] for r in child_rows] == [*range(8), 100]
    assert service.summary(fork.path) == {"x": 100}


def test_forks_of_forks_and_of_rewound_runs(service: RunService) -> None:
    a = service.init("ent", "proj", "a", started_at=T0)
    log(service, a, *({"v": i} for i in range(20)))
    b = service.init("ent", "proj", "b", fork_from="a?_step=15")
    log(service, b, {"v": 1000}, {"v": 1001})  # steps 16, 17
    service.init("ent", "proj", resume_from="b?_step=10")  # b: rewind below its fork point
    b2 = service.init("ent", "proj", "b", resume="must")
    log(service, b2, {"v": -1})  # step 11
    c = service.init("ent", "proj", "c", fork_from="ent/proj/b?_step=11")
    assert steps(service.history(c.path)) == list(range(12))
    assert [r["v"] for r in service.history(c.path)] == [*range(11), -1]
    assert service.history(c.path, own_only=True) == []
    archived_b = service.history(b.path, version=1, min_step=14)
    assert [(r["_step"], r["v"]) for r in archived_b] == [
        (14, 14),
        (15, 15),
        (16, 1000),
        (17, 1001),
    ]
    lineage = service.lineage(c.path)
    # b's version 2 was rewound below b's fork step: it stands on a's rows up to step 10.
    assert lineage.ancestors == [
        Ancestor(
            run="ent/proj/b", version=2, step=11, immutable_id=version_id(b.path.aggregate_id, 2)
        ),
        Ancestor(
            run="ent/proj/a", version=1, step=10, immutable_id=version_id(a.path.aggregate_id, 1)
        ),
    ]
    tree = service.lineage(a.path).descendants
    assert tree[0].run == "ent/proj/b" and tree[0].descendants[0].run == "ent/proj/c"
    summary = service.summary(c.path)
    assert summary == {"v": -1}
    service.define_metric(c.path, "v", "min,max,mean,first,last")
    assert service.summary(c.path)["v"] == {
        "min": -1,
        "max": 10,
        "mean": pytest.approx((sum(range(11)) - 1) / 12),
        "first": 0,
        "last": -1,
    }


def test_history_filters(service: RunService) -> None:
    s = service.init("ent", "proj", "f", started_at=T0)
    log(service, s, *({"a": i, "b": {"c": -i}} if i % 2 else {"a": i} for i in range(10)))
    path = s.path
    assert steps(service.history(path, keys=["b.c"])) == [1, 3, 5, 7, 9]
    assert set(service.history(path, keys=["b.c"])[0]) == {"_step", "_timestamp", "_runtime", "b.c"}
    assert steps(service.history(path, min_step=3, max_step=6)) == [3, 4, 5, 6]
    with pytest.raises(NotFound):
        service.history(path, version=7)
    with pytest.raises(NotFound):
        service.history(RunPath("ent", "proj", "nope"))


def test_special_floats_round_trip(service: RunService) -> None:
    s = service.init("ent", "proj", "nan", started_at=T0)
    log(service, s, {"x": math.nan, "y": math.inf, "z": -math.inf}, {"x": 2.0})
    rows = service.history(s.path)
    assert math.isnan(rows[0]["x"]) and rows[0]["y"] == math.inf and rows[0]["z"] == -math.inf
    service.define_metric(s.path, "x", "min,max,mean")
    assert service.summary(s.path)["x"] == {"min": 2.0, "max": 2.0, "mean": 2.0}


def test_summary_explicit_values_hold_until_logged_again(service: RunService) -> None:
    s = service.init("ent", "proj", "sum", started_at=T0)
    log(service, s, {"acc": 0.5})
    service.set_summary(s.path, {"acc": 0.99, "note": "best"}, writer=s.writer)
    assert service.summary(s.path) == {"acc": 0.99, "note": "best"}
    log(service, s, {"acc": 0.6})
    assert service.summary(s.path) == {"acc": 0.6, "note": "best"}
    service.define_metric(s.path, "acc", "none")
    assert service.summary(s.path) == {"note": "best"}


def test_glob_metrics_apply_to_keys_logged_before_and_after_and_after_a_rebuild(
    service: RunService,
) -> None:
    s = service.init("ent", "proj", "glob", started_at=T0)
    log(service, s, {"val/loss": 3.0, "val/acc": 0.1, "train/loss": 5.0})
    service.define_metric(s.path, "val/*", "min", writer=s.writer)
    service.define_metric(s.path, "val/acc", "max", writer=s.writer)  # its own wins
    log(service, s, {"val/loss": 1.0, "val/acc": 0.7, "val/new": 2.0, "train/loss": 4.0})
    log(service, s, {"val/loss": 2.0, "val/new": 1.5})
    expected = {
        "train/loss": 4.0,  # no definition: the last value
        "val/acc": {"max": 0.7},
        "val/loss": {"min": 1.0},
        "val/new": {"min": 1.5},  # first logged after the definition
    }
    assert service.summary(s.path) == expected
    service.define_metric(s.path, "*", "last", writer=s.writer)  # a shorter prefix loses
    assert service.summary(s.path)["val/loss"] == {"min": 1.0}
    assert service.summary(s.path)["train/loss"] == {"last": 4.0}
    service.rebuild()
    assert service.summary(s.path)["val/new"] == {"min": 1.5}
    with pytest.raises(InvalidArgument, match="at the end only"):
        service.define_metric(s.path, "val/*/loss", "min", writer=s.writer)


def test_config_merges_on_update_rewind_and_fork(service: RunService) -> None:
    s = service.init("ent", "proj", "cfg", config={"lr": 0.1, "layers": [1, 2]}, started_at=T0)
    service.update_config(s.path, {"lr": 0.2, "opt": {"name": "adam"}}, writer=s.writer)
    log(service, s, {"x": 1}, {"x": 2})
    r = service.init("ent", "proj", config={"lr": 0.3}, resume_from="cfg?_step=0")
    assert r.config == {"lr": 0.3, "layers": [1, 2], "opt": {"name": "adam"}}
    assert service.config(s.path) == r.config
    assert service.config(s.path, version=1) == {
        "lr": 0.2,
        "layers": [1, 2],
        "opt": {"name": "adam"},
    }
    f = service.init("ent", "proj", fork_from="cfg?_step=0", config={"seed": 7})
    assert service.config(f.path) == {**r.config, "seed": 7}


def test_rewind_in_any_state_fences_the_old_writer(service: RunService) -> None:
    s = service.init("ent", "proj", "w", started_at=T0)
    log(service, s, {"x": 1}, {"x": 2}, {"x": 3})
    log(service, s, {"y": 9}, commit=False)  # pending at step 3, acknowledged
    rewound = service.init("ent", "proj", resume_from="w?_step=1")
    with pytest.raises(Superseded, match="superseded by a rewind"):
        log(service, s, {"x": 4})
    with pytest.raises(Superseded):
        service.finish(s.path, writer=s.writer)
    # The acknowledged pending row was committed into the archived version.
    assert steps(service.history(s.path, version=1)) == [0, 1, 2, 3]
    assert steps(service.history(s.path)) == [0, 1]
    log(service, rewound, {"x": 5})
    assert steps(service.history(s.path)) == [0, 1, 2]
    service.finish(s.path, 1, writer=rewound.writer)
    assert service.run(s.path).state == "crashed"
    with pytest.raises(RunNotRunning):
        log(service, rewound, {"x": 6})
    third = service.init("ent", "proj", resume_from="w?_step=2")
    assert third.version == 3 and service.run(s.path).state == "running"
    assert len(service.versions(s.path)) == 3


def test_identity_rules(service: RunService) -> None:
    service.init("ent", "proj", "dup", started_at=T0)
    with pytest.raises(AlreadyExists):
        service.init("ent", "proj", "dup")
    with pytest.raises(NotFound):
        service.init("ent", "proj", "ghost", resume="must")
    created = service.init("ent", "proj", "ghost", resume="allow")
    assert created.version == 1
    with pytest.raises(InvalidArgument, match="_step"):
        service.init("ent", "proj", resume_from="dup?step=3")
    with pytest.raises(InvalidArgument):
        service.init("ent", "proj", "bad id")
    with pytest.raises(OutOfRange, match="no committed steps"):
        service.init("ent", "proj", resume_from="dup?_step=0")
    with pytest.raises(InvalidArgument, match="different from its source"):
        s = service.init("ent", "proj", "src2")
        log(service, s, {"a": 1})
        service.init("ent", "proj", "src2", fork_from="src2?_step=0")
    generated = service.init("ent", "proj")
    assert len(generated.path.run_id) == 8


def test_refused_requests_change_nothing(service: RunService) -> None:
    s = service.init("ent", "proj", "r", started_at=T0)
    log(service, s, {"a": 1})
    before = service.events(0)
    with pytest.raises(InvalidArgument):
        log(service, s, {"ok": 1}, {"_step": 3})
    with pytest.raises(ResourceExhausted):
        log(service, s, {"ok": 2}, {"big": "x" * (11 * 1024 * 1024)})
    with pytest.raises(OutOfRange):
        service.init("ent", "proj", resume_from="r?_step=5")
    assert service.events(0) == before
    assert steps(service.history(s.path)) == [0]


def test_lower_step_is_ignored_with_a_warning(service: RunService) -> None:
    s = service.init("ent", "proj", "low", started_at=T0)
    ack = log(service, s, {"a": 1}, step=5)
    assert ack.warnings == []
    ack = service.log(
        s.path,
        [LogCall({"b": 1}, T0, step=2), LogCall({"c": 1}, T0, step=6)],
        writer=s.writer,
    )
    assert len(ack.warnings) == 1 and "step 2" in ack.warnings[0] and "step 5" in ack.warnings[0]
    service.finish(s.path, writer=s.writer)
    assert [
        (r["_step"], sorted(k for k in r if not k.startswith("_"))) for r in service.history(s.path)
    ] == [
        (5, ["a"]),
        (6, ["c"]),
    ]


def test_idempotent_sequence_numbers(service: RunService) -> None:
    s = service.init("ent", "proj", "idem", started_at=T0)
    first = log(service, s, {"a": 1}, {"a": 2}, seq=1)
    again = log(service, s, {"a": 1}, {"a": 2}, seq=1)
    assert first.applied and not again.applied
    assert steps(service.history(s.path)) == [0, 1]


def test_concurrent_writers_lose_nothing(service: RunService) -> None:
    s = service.init("ent", "proj", "conc", started_at=T0)

    def writer(k: int) -> None:
        for i in range(20):
            service.log(s.path, [LogCall({f"w{k}": i}, T0)])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = service.history(s.path)
    assert steps(rows) == list(range(80))
    for k in range(4):
        assert [r[f"w{k}"] for r in rows if f"w{k}" in r] == list(range(20))


def test_artifacts_stay_with_the_version_that_produced_them(service: RunService) -> None:
    s = service.init("ent", "proj", "art", started_at=T0)
    log(service, s, {"a": 1}, {"a": 2})
    service.record_artifact(
        s.path, "produced", "model", "model", "sha256:1", 10, "file:///m", writer=s.writer
    )
    service.record_artifact(s.path, "used", "data", "dataset", writer=s.writer)
    service.init("ent", "proj", resume_from="art?_step=0")
    found = service.artifacts(s.path)
    assert [(a.name, a.direction, a.version) for a in found] == [
        ("model", "produced", 1),
        ("data", "used", 1),
    ]
    assert service.artifacts(s.path, version=2) == []
    with pytest.raises(InvalidArgument):
        service.record_artifact(s.path, "stolen", "x", "y")


def test_events_and_as_of_queries(service: RunService) -> None:
    s = service.init("ent", "proj", "audit", config={"lr": 1}, started_at=T0)
    first = log(service, s, *({"x": i} for i in range(5)))
    middle = time.time()
    time.sleep(0.01)
    service.update_config(s.path, {"lr": 2})
    service.init("ent", "proj", resume_from="audit?_step=1")
    events = service.events(0, s.path)
    assert [e.type for e in events] == ["Created", "RowsLogged", "ConfigUpdated", "Rewound"]
    assert [e.position for e in events] == sorted(e.position for e in events)
    assert events[1].payload["rows"][0][3] == {"x": 0}

    then = service.as_of(s.path, position=first.position)
    assert steps(then.history()) == [0, 1, 2, 3, 4]
    assert then.config() == {"lr": 1}
    assert then.summary() == {"x": 4}
    at_time = service.as_of(s.path, at=middle)
    assert steps(at_time.history()) == [0, 1, 2, 3, 4]
    now = service.as_of(s.path, position=events[-1].position)
    assert steps(now.history()) == [0, 1] and now.config() == {"lr": 2}
    with pytest.raises(OutOfRange, match="did not exist yet at position 0: it was created at"):
        service.as_of(s.path, position=0)


def test_the_event_log_by_run_type_position_and_limit(
    service: RunService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "PAGE_SIZE", 2)  # pages end between the events asked for
    a = service.init("ent", "proj", "a", started_at=T0)
    b = service.init("ent", "proj", "b", started_at=T0)
    for i in range(3):
        log(service, a, {"x": i})
        log(service, b, {"y": i})
        service.set_summary(b.path, {"note": i})
    service.finish(a.path, writer=a.writer)
    everything = service.events(0)
    assert len(everything) == 2 + 3 * 3 + 1
    of_a = service.events(0, a.path)
    assert [e.type for e in of_a] == [
        "Created",
        "RowsLogged",
        "RowsLogged",
        "RowsLogged",
        "Finished",
    ]
    assert of_a == [e for e in everything if e.run_uuid == str(a.path.aggregate_id)]

    summaries = service.events(0, b.path, types=["SummarySet"])
    assert [e.payload["values"] for e in summaries] == [{"note": 0}, {"note": 1}, {"note": 2}]
    assert (
        service.events(0, types=["RowsLogged", "Finished"], limit=4)
        == [e for e in everything if e.type in ("RowsLogged", "Finished")][:4]
    )
    assert service.events(everything[4].position, limit=3) == everything[5:8]
    assert service.events(0, a.path, types=["Rewound"]) == []
    assert service.events(everything[-1].position) == []


def test_a_read_naming_an_older_position_still_includes_this_servers_writes(
    service: RunService,
) -> None:
    """A client's remembered position can be older than this server's writes (it wrote
    through another protocol, or another client wrote): reads include both."""
    run = service.init("ent", "proj", started_at=T0)
    first = log(service, run, {"x": 1})
    assert steps(service.history(run.path, min_position=first.position)) == [0]
    log(service, run, {"x": 2})
    assert steps(service.history(run.path, min_position=first.position)) == [0, 1]


def test_rebuild_equals_live(service: RunService) -> None:
    wandb_rewind_example(service)
    live = service.checksums()
    progress = []
    service.rebuild(progress.append)
    assert progress and progress[-1].position == progress[-1].target
    assert service.checksums() == live


def test_own_rows_include_the_runs_rows_from_before_its_rewinds(service: RunService) -> None:
    s = service.init("ent", "proj", "own", started_at=T0)
    log(service, s, *({"x": i} for i in range(10)))
    rewound = service.init("ent", "proj", resume_from="own?_step=5")
    log(service, rewound, {"x": 60}, {"x": 70})
    assert steps(service.history(s.path, own_only=True)) == list(range(8))
    child = service.init("ent", "proj", "own-child", fork_from="own?_step=6")
    log(service, child, {"x": -1})
    assert steps(service.history(child.path, own_only=True)) == [7]
    assert steps(service.history(child.path)) == list(range(8))
