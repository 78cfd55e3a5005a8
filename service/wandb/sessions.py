"""The operations `wandb.init` sends: UpsertBucket, RunResumeStatus and RewindRun.

Each session the SDK starts (a new run, a resume, a rewind, a fork) is a runhistory session
with a writer of its own, whose ID the SDK gets back as the run's storage ID. UpsertBucket
is W&B's one "create or update" call; what it means here is decided from the run as the
event store holds it and from the storage ID the SDK sends:

| the run | storage ID sent | meaning |
|---|---|---|
| absent | any | create it, or fork it when `_wandb.branch_point` names another run |
| exists | the run's (from RunResumeStatus) | resume: a new session |
| exists | none, with `host` or `program` (a first call) | refused: it exists already |
| held by this key's session | that session's, or none (a later call) | update the config |
| exists, otherwise | any other | refused: the session was superseded |

The run's details (`displayName`, `tags`, `notes`, `groupName`, `jobType`) are given with
a creation, a fork, a resume or a rewind as with runhistory's own `init`: those sent replace
the run's, the rest stay. The SDK sends `tags: []` when a resume names none, so an empty
list from a session leaves the tags as they are; the public API's `Run.update()`, which
sends every detail back, can clear them.

A session numbers its rows by line (`RunService.start_lines`), from the rows its version
holds: the `historyLineCount` the answers carry, where the SDK's first history line goes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runhistory.domain.errors import AlreadyExists, InvalidArgument, NotFound, Superseded
from runhistory.domain.identity import BranchPoint, RunPath
from runhistory.protos.codec import dumps
from runhistory.service.runs import Details, RunService
from runhistory.service.wandb.caller import READ, WRITE, Caller
from runhistory.service.wandb.protocol import (
    WandbConfig,
    config_changes,
    holds,
    new_writer,
    parse_json,
    read_config,
    run_of_storage_id,
    run_storage_id,
    user_values,
    whole_number,
    wrap_config,
)
from runhistory.service.wandb.reading import RunViews, project_node

Variables = Mapping[str, Any]


class Sessions:
    """One resolver per operation that starts or changes a session, `(caller, vars) -> data`."""

    def __init__(self, service: RunService) -> None:
        self.service = service
        self.views = RunViews(service)

    # ---- UpsertBucket ----------------------------------------------------------------------

    def upsert_bucket(self, caller: Caller, v: Variables) -> dict[str, Any]:
        storage_id = _text(v, "id")
        config = read_config(_text(v, "config"))
        if v.get("name") is None and storage_id is not None:
            # The public API's Run.update() and summary writes name the run by its ID only.
            return self._update_from_api(caller, storage_id, config, v)
        path = caller.run(v.get("entity"), v.get("project"), v.get("name"), WRITE)
        try:
            writer = self.service.current_writer(path)
        except NotFound:
            return self._insert(caller, path, config, v)
        if storage_id == run_storage_id(path):
            session = new_writer(caller.key_id)
            changes = config_changes(self.service.config(path), config.values)
            self.service.resume(path, config=changes, writer=session, details=_details(v))
            self.service.start_lines(path, writer=session)
            return _upserted(self.views.bucket(path, session), inserted=False)
        if storage_id is None and (v.get("host") or v.get("program")):
            # Only the first UpsertBucket of a session sends these without an ID.
            raise AlreadyExists(
                f"run {path} already exists; to continue it pass resume='allow' or "
                f"resume='must' to wandb.init, to rewind it resume_from='{path.run_id}?_step=N',"
                f" or fork it with fork_from='{path.run_id}?_step=N' and another id"
            )
        if holds(caller.key_id, writer) and storage_id in (writer, None):
            changes = config_changes(self.service.config(path), config.values)
            if changes:
                self.service.update_config(path, changes, writer=writer)
            details = _details(v)
            if details != Details():
                self.service.update_details(path, details, writer=writer)
            return _upserted(self.views.bucket(path, writer), inserted=False)
        raise Superseded(
            f"the session that sent this no longer writes {path}: a rewind or a resume "
            "took the run over, so its changes are refused"
        )

    def _insert(
        self, caller: Caller, path: RunPath, config: WandbConfig, v: Variables
    ) -> dict[str, Any]:
        session = new_writer(caller.key_id)
        details = _details(v)
        point = config.branch_point
        if point is None:
            self.service.create(path, config=config.values, writer=session, details=details)
        elif point[0] == path.run_id:
            # A rewind's UpsertBucket follows its RewindRun, which found the run.
            raise NotFound(f"run {path} does not exist, so it cannot be rewound")
        else:
            source = RunPath(path.entity, path.project, point[0])
            caller.allow(source.entity, READ)
            branch = BranchPoint(source, point[1])
            self.service.fork(branch, path, config=config.values, writer=session, details=details)
        self.service.start_lines(path, writer=session)
        return _upserted(self.views.bucket(path, session), inserted=True)

    def _update_from_api(
        self, caller: Caller, storage_id: str, config: WandbConfig, v: Variables
    ) -> dict[str, Any]:
        """`Run.update()` and `run.summary.update()` of the public API: new config values,
        details and the summary, outside any session (as runhistory's own API writes)."""
        found = run_of_storage_id(storage_id)
        if found is None:
            raise InvalidArgument(f"no run has the storage ID {storage_id[:80]!r}")
        path = caller.run(found.entity, found.project, found.run_id, WRITE)
        changes = config_changes(self.service.config(path), config.values)
        if changes:
            self.service.update_config(path, changes)
        details = _details(v, empty_tags_clear=True)
        if details != Details():
            self.service.update_details(path, details)
        summary = _text(v, "summaryMetrics")
        if summary is not None:
            reported = parse_json(summary, "summaryMetrics")
            if not isinstance(reported, dict):
                raise InvalidArgument("summaryMetrics is a JSON object")
            self.service.report_summary(path, user_values(reported))
        return _upserted(self.views.bucket(path, storage_id), inserted=False)

    # ---- RunResumeStatus -------------------------------------------------------------------

    def run_resume_status(self, caller: Caller, v: Variables) -> dict[str, Any]:
        """The run as it stands, for `resume=`: every field well-formed, or the SDK fails."""
        path = caller.run(v.get("entity"), v.get("project"), v.get("name"), WRITE)
        model = project_node(path.entity, path.project)
        try:
            record = self.service.run(path)
        except NotFound:
            return {"model": {**model, "bucket": None}}
        last_step = record.last_step
        bucket = {
            "id": run_storage_id(path),
            "name": path.run_id,
            "displayName": record.name,
            "summaryMetrics": dumps(self.views.summary(path, last_step)),
            "logLineCount": 0,
            "historyLineCount": self.service.line_count(path),
            "eventsLineCount": 0,
            "historyTail": dumps(self.views.last_row(path, last_step)),
            "eventsTail": "[]",
            "config": wrap_config(self.service.config(path)),
            "tags": record.tags,
            "notes": record.notes or None,
            # The SDK takes a run without "t" (W&B's telemetry) for one never started, and
            # would write over it from line 0; every runhistory run has started.
            "wandbConfig": dumps({"t": {}}),
        }
        return {"model": {**model, "bucket": bucket}}

    # ---- RewindRun -------------------------------------------------------------------------

    def rewind_run(self, caller: Caller, v: Variables) -> dict[str, Any]:
        """`resume_from="RUN?_step=N"`: the rewind command, in a new session."""
        if v.get("metricName") != "_step":
            raise InvalidArgument(
                f"cannot rewind by {v.get('metricName')!r}: runhistory rewinds by _step only, "
                "resume_from='<run_id>?_step=<N>'"
            )
        step = whole_number(v.get("metricValue"), "the step to rewind to")
        path = caller.run(v.get("entity"), v.get("project"), v.get("runName"), WRITE)
        session = new_writer(caller.key_id)
        self.service.rewind(BranchPoint(path, step), writer=session)
        self.service.start_lines(path, writer=session)
        return {"rewindRun": {"rewoundRun": self.views.bucket(path, session)}}


def _upserted(bucket: dict[str, Any], inserted: bool) -> dict[str, Any]:
    return {"upsertBucket": {"bucket": bucket, "inserted": inserted}}


def _text(v: Variables, name: str) -> str | None:
    value = v.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(f"{name} is a string, got {type(value).__name__}")
    return value


def _details(v: Variables, empty_tags_clear: bool = False) -> Details:
    """The run details UpsertBucket sends; None for those it leaves out. `Run.update()`
    of the public API names the display name `display_name`."""
    tags = v.get("tags")
    if tags is not None and not isinstance(tags, list):
        raise InvalidArgument("tags is a list of strings")
    return Details(
        name=_text(v, "displayName") or _text(v, "display_name"),
        tags=tags if tags or (tags is not None and empty_tags_clear) else None,
        notes=_text(v, "notes"),
        group=_text(v, "groupName"),
        job_type=_text(v, "jobType"),
    )
