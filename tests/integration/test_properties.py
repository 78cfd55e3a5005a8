"""Property: the run service agrees with a plain reference model of the run-semantics contract.

Hypothesis draws random command sequences - log batches (explicit steps below, at and above
the current step, `commit=False`, nested dicts, NaN/Inf, strings, bools), bursts of single-row
requests, `update_config`, `set_summary`, `define_metric`, `finish`, rewinds (`resume_from`,
valid and out of range), forks (of roots, of forks, of rewound runs, out of range), plain
resumes and creations - and applies each to the real `RunService` and to `Reference`, a model
written from /work/shared/reference/run-semantics.md in plain Python: it uses nothing from
`runhistory.domain` or `runhistory.projections`.

Each command must have the same outcome on both: accepted (with the same next step, one
warning per ignored call naming both steps, and one event), or refused with the same status
code and no event written; the run it touched must then read back as the reference says
(history and summary), so a failure names the first command that diverged. After the
sequence, for every run: the history (also own rows
only), summary, config, overview, archive view and lineage, and every archived version's
history, summary and config, must match the reference; so must an as-of query at a point in
the middle of the sequence. Then the read models are rebuilt from the event log: their
checksums must not change and everything must still match.

A failure prints the drawn commands ("command 3: init(resume_from='r0?_step=2', ...)") and
the first mismatch.
"""

from __future__ import annotations

import copy
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from conftest import service_on
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from runhistory.domain.errors import RunHistoryError
from runhistory.domain.identity import RunPath, version_id
from runhistory.domain.values import LogCall
from runhistory.service.runs import RunService

ENTITY, PROJECT = "ent", "proj"
MAX_COMMANDS = 25
# One bulk request crosses several summary checkpoints (every 128 rows); one burst crosses
# several aggregate snapshots (every 20 events).
BULK_ROWS = (510, 530)
BURST_REQUESTS = (100, 104)
MEMORY_EXAMPLES = int(os.environ.get("RUNHISTORY_PROPERTY_EXAMPLES", "100"))
SQLITE_FILE_EXAMPLES = max(1, MEMORY_EXAMPLES // 5)
POSTGRES_EXAMPLES = max(1, MEMORY_EXAMPLES // 5)


# ============================================================================================
# The reference model: plain Python, from the contract alone.
# ============================================================================================

AGGREGATES = ("min", "max", "mean", "first", "last")


class ModelError(Exception):
    """The reference refuses the command: `code` is the contract's status code."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class Readable:
    """Hypothesis prints drawn values with this repr, not field by field."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


@dataclass(frozen=True)
class Call(Readable):
    """One `run.log(data, step=..., commit=...)` call."""

    data: dict[str, Any]
    step: int | None = None
    commit: bool | None = None

    def __repr__(self) -> str:
        text = repr(self.data)
        if self.step is not None:
            text += f" step={self.step}"
        if self.commit is not None:
            text += f" commit={self.commit}"
        return text


class Row(NamedTuple):
    step: int
    values: dict[str, Any]
    origin: str  # the run that logged it (a fork inherits rows of other runs)


@dataclass
class Version:
    """One version of a run, as a reader sees it."""

    rows: list[Row]  # visible rows in step order, inherited ones included
    config: dict[str, Any]
    metrics: dict[str, list[str]]  # define_metric choices; [] hides the key
    explicit: dict[str, Any] = field(default_factory=dict)  # run.summary[key] = v
    rewound_to: int | None = None  # set when a rewind archives this version
    # A fork's version: the step of its source it stands on (the fork step, or lower once a
    # rewind went below it).
    stands_on: int | None = None


@dataclass
class RefRun:
    run_id: str
    versions: list[Version]
    next_step: int = 0
    last_step: int | None = None  # the last committed step
    pending: tuple[int, dict[str, Any]] | None = None  # (step, values) not committed yet
    state: str = "running"
    forked_from: dict[str, Any] | None = None  # {"run": path, "step": N, "version": v}

    def link(self, version: int) -> dict[str, Any] | None:
        """Where `version` (1, 2, ...) of this run stands, as the service's ForkedFrom."""
        if self.forked_from is None:
            return None
        source = RunPath.parse(self.forked_from["run"])
        return {
            **self.forked_from,
            "step": self.versions[version - 1].stands_on,
            "immutable_id": version_id(source.aggregate_id, self.forked_from["version"]),
        }

    writer: str = ""  # the service's token of the current session (opaque here)
    old_writers: list[str] = field(default_factory=list)  # fenced sessions

    @property
    def current(self) -> Version:
        return self.versions[-1]


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys; keys are non-empty, top-level keys not `_...`."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if not key or (not prefix and key.startswith("_")):
            raise ModelError("INVALID_ARGUMENT", f"invalid key {key!r}")
        if isinstance(value, dict):
            flat.update(flatten(value, prefix + key + "."))
        else:
            flat[prefix + key] = value
    return flat


def parse_choice(choice: str) -> list[str]:
    parts = [part.strip() for part in choice.split(",") if part.strip()]
    if parts == ["none"]:
        return []
    if not parts or any(part not in AGGREGATES for part in parts):
        raise ModelError("INVALID_ARGUMENT", f"invalid summary choice {choice!r}")
    return sorted(set(parts))


def is_number(value: Any) -> bool:
    """What min/max/mean aggregate: ints and floats, not NaN, not bools, not strings."""
    return type(value) in (int, float) and not math.isnan(value)


def aggregate(values: list[Any], name: str) -> Any:
    if name == "first":
        return values[0]
    if name == "last":
        return values[-1]
    numbers = [v for v in values if is_number(v)]
    if not numbers:
        return None
    if name == "min":
        return min(numbers)
    if name == "max":
        return max(numbers)
    total = numbers[0]
    for value in numbers[1:]:
        total += value
    return total / len(numbers)


def summary_of(version: Version) -> dict[str, Any]:
    logged: dict[str, list[Any]] = {}
    for row in version.rows:
        for key, value in row.values.items():
            logged.setdefault(key, []).append(value)
    summary: dict[str, Any] = {}
    for key in set(logged) | set(version.explicit):
        if key in version.explicit:
            summary[key] = version.explicit[key]
            continue
        chosen = version.metrics.get(key)
        if chosen is None:
            summary[key] = logged[key][-1]
        elif chosen:
            summary[key] = {name: aggregate(logged[key], name) for name in chosen}
    return summary


class Reference:
    def __init__(self) -> None:
        self.runs: dict[str, RefRun] = {}

    def new_id(self) -> str:
        return f"r{len(self.runs)}"

    def _run(self, run_id: str) -> RefRun:
        if run_id not in self.runs:
            raise ModelError("NOT_FOUND", f"run {run_id} does not exist")
        return self.runs[run_id]

    # ---- sessions --------------------------------------------------------------------------

    def create(self, run_id: str, config: dict[str, Any] | None) -> RefRun:
        if run_id in self.runs:
            raise ModelError("ALREADY_EXISTS", f"run {run_id} exists")
        run = RefRun(run_id, [Version([], dict(config or {}), {})])
        self.runs[run_id] = run
        return run

    @staticmethod
    def _check_branch(run: RefRun, step: int, last_step: int | None) -> None:
        if last_step is None or step > last_step:
            raise ModelError("OUT_OF_RANGE", f"step {step} > last step {last_step}")

    def rewind(self, run_id: str, step: int, config: dict[str, Any] | None) -> RefRun:
        run = self._run(run_id)
        # The rewind commits the pending row first: its step may be rewound to.
        self._check_branch(run, step, run.last_step if run.pending is None else run.pending[0])
        self._close_pending(run)  # it was acknowledged: it closes the archived version
        old = run.current
        old.rewound_to = step
        run.versions.append(
            Version(
                rows=[row for row in old.rows if row.step <= step],
                config={**old.config, **(config or {})},
                metrics=dict(old.metrics),
                stands_on=None if old.stands_on is None else min(old.stands_on, step),
            )
        )
        run.next_step, run.last_step, run.state = step + 1, step, "running"
        run.old_writers.append(run.writer)
        return run

    def fork(self, source_id: str, step: int, run_id: str, config: dict[str, Any] | None) -> RefRun:
        source = self._run(source_id)
        if run_id == source_id:
            raise ModelError("INVALID_ARGUMENT", "a fork needs an ID other than its source's")
        self._check_branch(source, step, source.last_step)
        if run_id in self.runs:
            raise ModelError("ALREADY_EXISTS", f"run {run_id} exists")
        run = RefRun(
            run_id,
            [
                Version(
                    rows=[row for row in source.current.rows if row.step <= step],
                    config={**source.current.config, **(config or {})},
                    metrics=dict(source.current.metrics),
                    stands_on=step,
                )
            ],
            next_step=step + 1,
            last_step=step,
            forked_from={
                "run": f"{ENTITY}/{PROJECT}/{source_id}",
                "step": step,
                "version": len(source.versions),
            },
        )
        self.runs[run_id] = run
        return run

    def resume(self, run_id: str, config: dict[str, Any] | None) -> RefRun:
        run = self._run(run_id)
        self._close_pending(run)
        run.next_step = 0 if run.last_step is None else run.last_step + 1
        run.current.config.update(config or {})
        run.state = "running"
        run.old_writers.append(run.writer)
        return run

    # ---- writes ----------------------------------------------------------------------------

    @staticmethod
    def _check_writer(run: RefRun, writer: str | None) -> None:
        if writer is not None and writer != run.writer:
            raise ModelError("FAILED_PRECONDITION", "superseded")

    @staticmethod
    def _commit(run: RefRun, step: int, values: dict[str, Any]) -> None:
        run.current.rows.append(Row(step, values, run.run_id))
        run.last_step = step
        for key in values:
            run.current.explicit.pop(key, None)  # logged again: the explicit value ends

    def _close_pending(self, run: RefRun) -> None:
        if run.pending is not None:
            self._commit(run, *run.pending)
            run.pending = None
            run.next_step = run.last_step + 1  # type: ignore[operator]

    def log(self, run_id: str, calls: list[Call], writer: str | None) -> list[tuple[int, int]]:
        """W&B's step rules. Returns (ignored step, current step) for each ignored call."""
        run = self.runs[run_id]
        self._check_writer(run, writer)
        if run.state != "running":
            raise ModelError("FAILED_PRECONDITION", "not running")
        flats = [flatten(call.data) for call in calls]  # one bad call refuses the batch
        ignored = []
        for call, data in zip(calls, flats, strict=True):
            target = run.next_step if call.step is None else call.step
            if target < run.next_step:
                ignored.append((target, run.next_step))
                continue
            if target > run.next_step:
                if run.pending is not None:
                    self._commit(run, *run.pending)
                    run.pending = None
                run.next_step = target
            if run.pending is None:
                run.pending = (run.next_step, {})
            run.pending[1].update(data)
            commit = call.commit is True if call.step is not None else call.commit is not False
            if commit:
                self._commit(run, *run.pending)
                run.pending = None
                run.next_step += 1
        return ignored

    def finish(self, run_id: str, exit_code: int, writer: str | None) -> None:
        run = self.runs[run_id]
        self._check_writer(run, writer)
        if run.state != "running":
            raise ModelError("FAILED_PRECONDITION", "not running")
        self._close_pending(run)
        run.state = "finished" if exit_code == 0 else "crashed"

    def update_config(self, run_id: str, changes: dict[str, Any], writer: str | None) -> None:
        run = self.runs[run_id]
        self._check_writer(run, writer)
        run.current.config.update(changes)

    def set_summary(self, run_id: str, values: dict[str, Any], writer: str | None) -> None:
        run = self.runs[run_id]
        self._check_writer(run, writer)
        run.current.explicit.update(flatten(values))

    def define_metric(self, run_id: str, key: str, choice: str, writer: str | None) -> None:
        run = self.runs[run_id]
        self._check_writer(run, writer)
        run.current.metrics[key] = parse_choice(choice)

    # ---- derived views ---------------------------------------------------------------------

    def ancestors(self, run_id: str) -> list[dict[str, Any]]:
        found = []
        run = self.runs[run_id]
        link = run.link(len(run.versions))
        while link is not None:
            found.append(link)
            run = self.runs[link["run"].rsplit("/", 1)[1]]
            link = run.link(link["version"])  # the source's version the fork passed through
        return found

    def descendants(self, run_id: str) -> list[dict[str, Any]]:
        path = f"{ENTITY}/{PROJECT}/{run_id}"
        return sorted(
            (
                {
                    "run": f"{ENTITY}/{PROJECT}/{child.run_id}",
                    "source_version": child.forked_from["version"],
                    "step": child.current.stands_on,
                    "descendants": self.descendants(child.run_id),
                }
                for child in self.runs.values()
                if child.forked_from is not None and child.forked_from["run"] == path
            ),
            key=lambda d: d["run"],
        )


# ============================================================================================
# Commands: each is applied to the service and to the reference.
# ============================================================================================


def path_of(run_id: str) -> RunPath:
    return RunPath(ENTITY, PROJECT, run_id)


def branch(run_id: str, step: int, full_path: bool) -> str:
    return f"{ENTITY}/{PROJECT}/{run_id}?_step={step}" if full_path else f"{run_id}?_step={step}"


def admin_or_session(run: RefRun) -> str | None:
    # A finished run is edited through the API (no session), as W&B's public API allows.
    return run.writer if run.state == "running" else None


@dataclass(frozen=True)
class Create(Readable):
    run_id: str
    config: dict[str, Any] | None
    resume_allow: bool = False  # init(id, resume="allow") of an absent run creates it

    def __repr__(self) -> str:
        allow = ", resume='allow'" if self.resume_allow else ""
        return f"init({self.run_id!r}{allow}, config={self.config})"

    def on_service(self, service: RunService, ref: Reference) -> Any:
        resume = "allow" if self.resume_allow else None
        return service.init(ENTITY, PROJECT, self.run_id, resume=resume, config=self.config)

    def on_reference(self, ref: Reference) -> Any:
        return ref.create(self.run_id, self.config)


@dataclass(frozen=True)
class Log(Readable):
    run_id: str
    calls: tuple[Call, ...]
    stale_writer: int | None = None  # index into the run's fenced sessions

    def __repr__(self) -> str:
        who = "" if self.stale_writer is None else f" (fenced session #{self.stale_writer})"
        return f"log {self.run_id}{who} {list(self.calls)}"

    def writer(self, ref: Reference) -> str:
        run = ref.runs[self.run_id]
        return run.writer if self.stale_writer is None else run.old_writers[self.stale_writer]

    def on_service(self, service: RunService, ref: Reference) -> Any:
        calls = [
            LogCall(call.data, 1_700_000_000.0 + i, call.step, call.commit)
            for i, call in enumerate(self.calls)
        ]
        return service.log(path_of(self.run_id), calls, writer=self.writer(ref))

    def on_reference(self, ref: Reference) -> Any:
        return ref.log(self.run_id, list(self.calls), self.writer(ref))


@dataclass(frozen=True)
class BulkLog(Log):
    """One request of 510-530 rows."""

    def __repr__(self) -> str:
        return (
            f"log {self.run_id} [{{'x': i, 'y': i / 7 or NaN}} for i in range({len(self.calls)})]"
        )


@dataclass(frozen=True)
class BurstLog(Log):
    """100+ requests of one call each, every third with commit=False."""

    def __repr__(self) -> str:
        return (
            f"{len(self.calls)} requests: log {self.run_id} {{'b': i}} (commit=False if i % 3 == 1)"
        )

    def on_service(self, service: RunService, ref: Reference) -> Any:
        ack = None
        for i, call in enumerate(self.calls):
            ack = service.log(
                path_of(self.run_id),
                [LogCall(call.data, 1_700_000_000.0 + i, call.step, call.commit)],
                writer=self.writer(ref),
            )
        return ack


@dataclass(frozen=True)
class UpdateConfig(Readable):
    run_id: str
    changes: dict[str, Any]

    def __repr__(self) -> str:
        return f"update_config {self.run_id} {self.changes}"

    def on_service(self, service: RunService, ref: Reference) -> Any:
        writer = admin_or_session(ref.runs[self.run_id])
        return service.update_config(path_of(self.run_id), self.changes, writer=writer)

    def on_reference(self, ref: Reference) -> Any:
        writer = admin_or_session(ref.runs[self.run_id])
        return ref.update_config(self.run_id, self.changes, writer)


@dataclass(frozen=True)
class SetSummary(Readable):
    run_id: str
    values: dict[str, Any]

    def __repr__(self) -> str:
        return f"set_summary {self.run_id} {self.values}"

    def on_service(self, service: RunService, ref: Reference) -> Any:
        writer = admin_or_session(ref.runs[self.run_id])
        return service.set_summary(path_of(self.run_id), self.values, writer=writer)

    def on_reference(self, ref: Reference) -> Any:
        writer = admin_or_session(ref.runs[self.run_id])
        return ref.set_summary(self.run_id, self.values, writer)


@dataclass(frozen=True)
class DefineMetric(Readable):
    run_id: str
    key: str
    choice: str

    def __repr__(self) -> str:
        return f"define_metric {self.run_id} {self.key!r} {self.choice!r}"

    def on_service(self, service: RunService, ref: Reference) -> Any:
        writer = admin_or_session(ref.runs[self.run_id])
        return service.define_metric(path_of(self.run_id), self.key, self.choice, writer=writer)

    def on_reference(self, ref: Reference) -> Any:
        writer = admin_or_session(ref.runs[self.run_id])
        return ref.define_metric(self.run_id, self.key, self.choice, writer)


@dataclass(frozen=True)
class Finish(Readable):
    run_id: str
    exit_code: int

    def __repr__(self) -> str:
        return f"finish {self.run_id} exit_code={self.exit_code}"

    def on_service(self, service: RunService, ref: Reference) -> Any:
        writer = ref.runs[self.run_id].writer
        return service.finish(path_of(self.run_id), self.exit_code, writer=writer)

    def on_reference(self, ref: Reference) -> Any:
        return ref.finish(self.run_id, self.exit_code, ref.runs[self.run_id].writer)


@dataclass(frozen=True)
class Rewind(Readable):
    run_id: str
    step: int
    config: dict[str, Any] | None
    full_path: bool = False

    def __repr__(self) -> str:
        resume_from = branch(self.run_id, self.step, self.full_path)
        return f"init(resume_from={resume_from!r}, config={self.config})"

    def on_service(self, service: RunService, ref: Reference) -> Any:
        resume_from = branch(self.run_id, self.step, self.full_path)
        return service.init(ENTITY, PROJECT, resume_from=resume_from, config=self.config)

    def on_reference(self, ref: Reference) -> Any:
        return ref.rewind(self.run_id, self.step, self.config)


@dataclass(frozen=True)
class Fork(Readable):
    source_id: str
    step: int
    run_id: str
    config: dict[str, Any] | None
    full_path: bool = False

    def __repr__(self) -> str:
        fork_from = branch(self.source_id, self.step, self.full_path)
        return f"init({self.run_id!r}, fork_from={fork_from!r}, config={self.config})"

    def on_service(self, service: RunService, ref: Reference) -> Any:
        fork_from = branch(self.source_id, self.step, self.full_path)
        return service.init(ENTITY, PROJECT, self.run_id, fork_from=fork_from, config=self.config)

    def on_reference(self, ref: Reference) -> Any:
        return ref.fork(self.source_id, self.step, self.run_id, self.config)


@dataclass(frozen=True)
class Resume(Readable):
    run_id: str
    config: dict[str, Any] | None

    def __repr__(self) -> str:
        return f"init({self.run_id!r}, resume='must', config={self.config})"

    def on_service(self, service: RunService, ref: Reference) -> Any:
        return service.init(ENTITY, PROJECT, self.run_id, resume="must", config=self.config)

    def on_reference(self, ref: Reference) -> Any:
        return ref.resume(self.run_id, self.config)


Command = Create | Log | UpdateConfig | SetSummary | DefineMetric | Finish | Rewind | Fork | Resume


class Stop(Readable):
    def __repr__(self) -> str:
        return "end of the sequence"


STOP = Stop()


def execute(command: Command, service: RunService, ref: Reference) -> None:
    """Apply the command to the service, then to the reference; the outcomes must agree."""
    before = service.store.last_position()
    result: Any = None
    refused: RunHistoryError | None = None
    try:
        result = command.on_service(service, ref)
    except RunHistoryError as error:
        refused = error
    try:
        expected = command.on_reference(ref)
    except ModelError as error:
        event(f"{type(command).__name__} refused: {error.code}")
        assert refused is not None, (
            f"{command!r}: the service accepted it; the contract refuses it with "
            f"{error.code} ({error.reason})"
        )
        assert refused.code == error.code, (
            f"{command!r}: the service refused it with {refused.code} ({refused.message}); "
            f"the contract says {error.code} ({error.reason})"
        )
        if error.reason == "superseded":
            assert "superseded" in refused.message, refused.message
        assert service.store.last_position() == before, (
            f"{command!r} was refused ({refused.code}) but wrote events"
        )
        return
    event(f"{type(command).__name__} accepted")
    assert refused is None, (
        f"{command!r}: the service refused it with {refused.code}: {refused.message}; "
        "the contract accepts it"
    )
    # Counted, not subtracted: PostgreSQL's positions may skip the numbers that refused
    # writes took from their sequence.
    written = len(
        service.store.recorder.select_notifications(
            start=before, limit=10_000, inclusive_of_start=False
        )
    )
    if isinstance(command, BurstLog):
        assert written == len(command.calls), f"{command!r} wrote {written} events"
    elif isinstance(command, Log):
        assert written <= 1, f"{command!r}: one batch wrote {written} events"
    else:
        assert written == 1, f"{command!r} wrote {written} events, not one"

    if isinstance(command, Log):
        ignored: list[tuple[int, int]] = expected
        run = ref.runs[command.run_id]
        assert result.next_step == run.next_step, (
            f"{command!r}: the service continues at step {result.next_step}, the contract at "
            f"{run.next_step}"
        )
        assert len(result.warnings) == len(ignored), (
            f"{command!r}: warnings {result.warnings}, expected one per ignored call {ignored}"
        )
        for warning, (low, current) in zip(result.warnings, ignored, strict=True):
            for step in (low, current):
                assert re.search(rf"\b{step}\b", warning), (
                    f"{command!r}: the warning {warning!r} does not name step {step}"
                )
    elif isinstance(command, Create | Rewind | Fork | Resume):
        run = expected
        assert result.next_step == run.next_step, (
            f"{command!r}: the session continues at step {result.next_step}, the contract at "
            f"{run.next_step}"
        )
        assert result.version == len(run.versions), (
            f"{command!r}: session version {result.version}, expected {len(run.versions)}"
        )
        run.writer = result.writer


# ============================================================================================
# Comparing the service's read models with the reference.
# ============================================================================================


def same(a: Any, b: Any) -> bool:
    """Equality with NaN == NaN, and without 1 == 1.0 == True."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def assert_same(what: str, got: Any, expected: Any) -> None:
    if same(got, expected):
        return
    detail = ""
    if isinstance(got, list) and isinstance(expected, list):
        for i, (g, e) in enumerate(zip(got, expected, strict=False)):
            if not same(g, e):
                detail = f"\n  first difference at index {i}: service {g!r}, contract {e!r}"
                break
        else:
            detail = f"\n  the service has {len(got)} items, the contract {len(expected)}"
    elif isinstance(got, dict) and isinstance(expected, dict):
        diff = {
            k: (got.get(k, "<missing>"), expected.get(k, "<missing>"))
            for k in sorted(set(got) | set(expected))
            if k not in got or k not in expected or not same(got[k], expected[k])
        }
        detail = f"\n  differing keys (service, contract): {diff}"
    raise AssertionError(f"{what} differs{detail}\n  service:  {got!r}\n  contract: {expected!r}")


def rows_of(history: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Service rows as (step, values), without _timestamp and _runtime."""
    dropped = ("_step", "_timestamp", "_runtime")
    return [(row["_step"], {k: v for k, v in row.items() if k not in dropped}) for row in history]


def expected_rows(rows: list[Row], own_of: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    return [(r.step, r.values) for r in rows if own_of is None or r.origin == own_of]


def check_history_and_summary(service: RunService, run: RefRun, when: str) -> None:
    path = path_of(run.run_id)
    assert_same(
        f"{when}: history of {run.run_id}",
        rows_of(service.history(path)),
        expected_rows(run.current.rows),
    )
    assert_same(f"{when}: summary of {run.run_id}", service.summary(path), summary_of(run.current))


def check_all(service: RunService, ref: Reference, when: str) -> None:
    listed = [record.run_id for record in service.runs(ENTITY, PROJECT)]
    assert_same(f"{when}: the runs", sorted(listed), sorted(ref.runs))
    for run_id, run in ref.runs.items():
        path = path_of(run_id)
        current = run.current
        assert_same(
            f"{when}: history of {run_id}",
            rows_of(service.history(path)),
            expected_rows(current.rows),
        )
        assert_same(
            f"{when}: own rows of {run_id}",
            rows_of(service.history(path, own_only=True)),
            expected_rows(current.rows, own_of=run_id),
        )
        assert_same(f"{when}: summary of {run_id}", service.summary(path), summary_of(current))
        assert_same(f"{when}: config of {run_id}", service.config(path), current.config)
        overview = service.run(path)
        assert_same(
            f"{when}: overview of {run_id} (state, version, last step, forked from)",
            [
                overview.state,
                overview.version,
                overview.last_step,
                overview.forked_from and asdict(overview.forked_from),
            ],
            [run.state, len(run.versions), run.last_step, run.link(len(run.versions))],
        )
        assert_same(
            f"{when}: archive view of {run_id} (version, archived, rewound to, rows, summary, "
            "config)",
            [
                [v.version, v.archived, v.rewound_to_step, v.rows, v.summary, v.config]
                for v in service.versions(path)
            ],
            [
                [n, n < len(run.versions), v.rewound_to, len(v.rows), summary_of(v), v.config]
                for n, v in enumerate(run.versions, 1)
            ],
        )
        lineage = service.lineage(path)
        assert_same(
            f"{when}: ancestors of {run_id}",
            [asdict(a) for a in lineage.ancestors],
            ref.ancestors(run_id),
        )
        assert_same(
            f"{when}: descendants of {run_id}",
            sorted((asdict(d) for d in lineage.descendants), key=lambda d: d["run"]),
            ref.descendants(run_id),
        )
        for n, version in enumerate(run.versions[:-1], 1):
            assert_same(
                f"{when}: history of {run_id} version {n} (archived)",
                rows_of(service.history(path, version=n)),
                expected_rows(version.rows),
            )
            assert_same(
                f"{when}: summary of {run_id} version {n} (archived)",
                service.summary(path, version=n),
                summary_of(version),
            )
            assert_same(
                f"{when}: config of {run_id} version {n} (archived)",
                service.config(path, version=n),
                version.config,
            )
        assert_same(
            f"{when}: own rows of {run_id} version 1",
            rows_of(service.history(path, version=1, own_only=True)),
            expected_rows(run.versions[0].rows, own_of=run_id),
        )


def check_as_of(service: RunService, ref: Reference, position: int, when: str) -> None:
    """Every run as it stood at `position`, replayed from the events."""
    for run_id, run in ref.runs.items():
        as_of = service.as_of(path_of(run_id), position=position)
        try:
            assert_same(
                f"{when}: history of {run_id}",
                rows_of(as_of.history()),
                expected_rows(run.current.rows),
            )
            assert_same(f"{when}: summary of {run_id}", as_of.summary(), summary_of(run.current))
            assert_same(f"{when}: config of {run_id}", as_of.config(), run.current.config)
            for n, version in enumerate(run.versions[:-1], 1):
                assert_same(
                    f"{when}: history of {run_id} version {n}",
                    rows_of(as_of.history(version=n)),
                    expected_rows(version.rows),
                )
        finally:
            as_of.db.dispose()


# ============================================================================================
# Strategies
# ============================================================================================

scalars = st.one_of(
    st.integers(-3, 3),
    st.floats(-10, 10),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, True, False]),
    st.text(max_size=3),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),  # anything: NaN, +/-Inf, subnormals, huge
)
log_keys = st.sampled_from(["loss", "acc", "lr", "opt.lr"])
nested = st.fixed_dictionaries({}, optional={"lr": scalars, "m": scalars})
log_data = st.builds(
    lambda flat, inner: {**flat, "opt": inner} if inner is not None else flat,
    st.dictionaries(log_keys, scalars, max_size=3),
    st.none() | nested,
)
metric_keys = st.sampled_from(["loss", "acc", "lr", "opt.lr", "opt.m"])
metric_choices = st.sampled_from(
    [
        "min,max",
        "mean",
        "none",
        "min,max,mean,first,last",
        "last",
        "first",
        " max , min ",
        "mean,last",
        "median",  # refused
    ]
)
config_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats() | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from("ab"), inner, max_size=2)
    ),
    max_leaves=4,
)
configs = st.dictionaries(st.sampled_from(["lr", "bs", "opt", "seed"]), config_values, max_size=3)
summary_values = st.dictionaries(
    st.sampled_from(["loss", "acc", "opt.lr", "best"]), scalars, min_size=1, max_size=2
) | st.builds(lambda v: {"opt": {"m": v}}, scalars)

# Weighted command kinds: a kind appears as often as its weight. Shrinking moves to "log".
KINDS = (
    ["log"] * 10
    + ["define_metric"] * 4
    + ["set_summary"] * 2
    + ["rewind"] * 3
    + ["fork"] * 3
    + ["resume"] * 2
    + ["update_config", "finish", "create", "stale_log", "bad_log", "bulk_log"]
    + ["bad_rewind", "bad_fork", "burst_log"]
)


@st.composite
def log_calls(draw: st.DrawFn, start: int) -> tuple[Call, ...]:
    """1-4 calls; explicit steps below, at and above the step each call will meet."""
    calls = []
    step = start
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["auto", "auto", "equal", "above", "lower"]))
        commit = draw(st.sampled_from([None, None, True, False]))
        data = draw(log_data)
        explicit = {
            "auto": None,
            "equal": step,
            "above": step + draw(st.integers(1, 3)),
            "lower": max(0, step - draw(st.integers(1, 3))),
        }[kind]
        calls.append(Call(data, explicit, commit))
        target = step if explicit is None else explicit
        if target >= step:
            step = target
            if (commit is True) if explicit is not None else (commit is not False):
                step += 1
    return tuple(calls)


def branch_step(draw: st.DrawFn, run: RefRun) -> int:
    last = run.last_step
    if last is None:
        return draw(st.integers(0, 2))
    return draw(st.one_of(st.integers(0, last), st.just(last), st.integers(max(0, last - 2), last)))


def beyond_last_step(draw: st.DrawFn, run: RefRun) -> int:
    return (-1 if run.last_step is None else run.last_step) + draw(st.integers(1, 3))


@st.composite
def commands(draw: st.DrawFn, ref: Reference) -> Command | Stop:
    if not ref.runs:
        return Create(ref.new_id(), draw(st.none() | configs), draw(st.booleans()))
    # The sequence ends here with probability 1/13. Deciding it inside the command's own draw
    # (not with a count drawn first) lets the shrinker delete any command from the middle.
    if draw(st.integers(0, 12)) == 0:
        return STOP
    kind = draw(st.sampled_from(KINDS))
    run_ids = list(ref.runs)
    running = [r for r in run_ids if ref.runs[r].state == "running"]
    if kind in ("finish", "burst_log") and not running:
        kind = "log"
    if kind in ("log", "finish", "burst_log") and running and draw(st.integers(0, 9)):
        run_id = draw(st.sampled_from(running))  # mostly to a running run
    else:
        run_id = draw(st.sampled_from(run_ids))
    run = ref.runs[run_id]
    if kind == "stale_log":
        stale = [r for r in run_ids if ref.runs[r].old_writers]
        if stale:
            run_id = draw(st.sampled_from(stale))
            index = draw(st.integers(0, len(ref.runs[run_id].old_writers) - 1))
            return Log(run_id, draw(log_calls(0)), stale_writer=index)
        kind = "log"
    if kind == "log":
        return Log(run_id, draw(log_calls(run.next_step)))
    if kind == "finish":
        return Finish(run_id, draw(st.sampled_from([0, 0, 1])))
    if kind == "bad_log":
        calls = list(draw(log_calls(run.next_step)))
        calls.insert(draw(st.integers(0, len(calls))), Call({"_reserved": 1}))
        return Log(run_id, tuple(calls))
    if kind == "bulk_log":
        count = draw(st.integers(*BULK_ROWS))
        rows = [Call({"x": i, "y": math.nan if i % 50 == 7 else i / 7}) for i in range(count)]
        return BulkLog(run_id, tuple(rows))
    if kind == "burst_log":
        count = draw(st.integers(*BURST_REQUESTS))
        calls = [Call({"b": i}, commit=False if i % 3 == 1 else None) for i in range(count)]
        return BurstLog(run_id, tuple(calls))
    if kind == "define_metric":
        return DefineMetric(run_id, draw(metric_keys), draw(metric_choices))
    if kind == "set_summary":
        return SetSummary(run_id, draw(summary_values))
    if kind == "update_config":
        return UpdateConfig(run_id, draw(configs))
    if kind == "resume":
        if draw(st.integers(0, 5)) == 0:
            run_id = "absent"  # resume="must" of a run that does not exist
        return Resume(run_id, draw(st.none() | configs))
    if kind == "create":
        if draw(st.integers(0, 3)) == 0:
            return Create(run_id, draw(st.none() | configs))  # exists already
        return Create(ref.new_id(), draw(st.none() | configs), draw(st.booleans()))
    full_path = draw(st.booleans())
    config = draw(st.none() | configs)
    if kind == "rewind":
        return Rewind(run_id, branch_step(draw, run), config, full_path)
    if kind == "bad_rewind":
        if draw(st.integers(0, 3)) == 0:
            return Rewind("absent", 0, config, full_path)
        return Rewind(run_id, beyond_last_step(draw, run), config, full_path)
    if kind == "fork":
        return Fork(run_id, branch_step(draw, run), ref.new_id(), config, full_path)
    if draw(st.integers(0, 4)) == 0:  # an existing ID, the source's own included
        existing = draw(st.sampled_from(run_ids))
        return Fork(run_id, branch_step(draw, run), existing, config, full_path)
    return Fork(run_id, beyond_last_step(draw, run), ref.new_id(), config, full_path)


# ============================================================================================
# The properties
# ============================================================================================


def run_scenario(backend: str, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp, service_on(backend, Path(tmp)) as service:
        ref = Reference()
        as_of_after = data.draw(
            st.integers(1, MAX_COMMANDS), label="as-of check after command (or the last)"
        )
        as_of: tuple[int, Reference] | None = None
        for i in range(1, MAX_COMMANDS + 1):
            command = data.draw(commands(ref), label=f"command {i}")
            if isinstance(command, Stop):
                break
            execute(command, service, ref)
            touched = getattr(command, "run_id", None)
            if touched in ref.runs:  # fail at the first command that diverges
                check_history_and_summary(service, ref.runs[touched], f"after command {i}")
            if i == as_of_after:
                as_of = (service.store.last_position(), copy.deepcopy(ref))
        check_all(service, ref, "after the commands")
        position, then = as_of or (service.store.last_position(), ref)
        check_as_of(service, then, position, f"as of position {position}")
        live = service.checksums()
        service.rebuild()
        assert_same("checksums of the read models after a rebuild", service.checksums(), live)
        check_all(service, ref, "after a rebuild")


COMMON = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.slow
@settings(COMMON, max_examples=MEMORY_EXAMPLES)
@given(data=st.data())
def test_service_matches_the_contract_model_memory(data: st.DataObject) -> None:
    run_scenario("memory", data)


@pytest.mark.slow
@settings(COMMON, max_examples=SQLITE_FILE_EXAMPLES)
@given(data=st.data())
def test_service_matches_the_contract_model_sqlite_file(data: st.DataObject) -> None:
    run_scenario("sqlite-file", data)


@pytest.mark.slow
@settings(COMMON, max_examples=POSTGRES_EXAMPLES)
@given(data=st.data())
def test_service_matches_the_contract_model_postgres(data: st.DataObject) -> None:
    run_scenario("postgres", data)


# ============================================================================================
# Own rows after rewinds (a bug this property found), pinned as an example
# ============================================================================================


def test_own_rows_of_a_rewound_run_include_its_rows_before_the_rewind(
    backend: str, tmp_path: Path
) -> None:
    with service_on(backend, tmp_path) as service:
        root = service.init(ENTITY, PROJECT, "root")
        calls = [LogCall({"x": i}, 1_700_000_000.0 + i) for i in range(4)]
        service.log(root.path, calls, writer=root.writer)  # steps 0..3
        fork = service.init(ENTITY, PROJECT, "fork", fork_from="root?_step=1")
        service.log(fork.path, calls[:3], writer=fork.writer)  # its own steps 2..4
        service.init(ENTITY, PROJECT, resume_from="root?_step=2")
        service.init(ENTITY, PROJECT, resume_from="fork?_step=3")
        # A root run inherits nothing: its own rows are its whole history.
        root_own = [row["_step"] for row in service.history(root.path, own_only=True)]
        # The fork's own rows are those after the fork step, from before its rewind too.
        fork_own = [row["_step"] for row in service.history(fork.path, own_only=True)]
        assert (root_own, fork_own) == ([0, 1, 2], [2, 3])
