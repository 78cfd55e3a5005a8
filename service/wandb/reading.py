"""The read operations of `wandb.Api()`: a run, its sampled history, its history by pages.

Every one asks `project(name, entityName) { run(name) { ... } }`; an unknown run is
`run: null`, which the SDK reports as "could not find run". A fork's history includes its
inherited rows, as runhistory's own reads do. Rows inside JSON strings (`history`) keep
NaN and infinities as bare words, which the SDK reads; rows as JSON objects
(`sampledHistory`) must be strict JSON for wandb-core, so those become strings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from runhistory.domain.errors import InvalidArgument, NotFound
from runhistory.domain.identity import RunPath
from runhistory.domain.series import sample
from runhistory.protos.codec import dumps
from runhistory.service.runs import RunService
from runhistory.service.wandb.caller import READ, Caller
from runhistory.service.wandb.protocol import (
    parse_json,
    project_id,
    run_storage_id,
    timestamp_text,
    whole_number,
    wrap_config,
)

Variables = Mapping[str, Any]
# W&B's own default for `history(samples=...)`, used when a query leaves it out.
DEFAULT_SAMPLES = 500


def project_node(entity: str, project: str) -> dict[str, Any]:
    return {
        "id": str(project_id(entity, project)),
        "name": project,
        "entity": {"id": entity, "name": entity},
    }


class RunViews:
    """A run as the W&B API shows it, from the run service's queries."""

    def __init__(self, service: RunService) -> None:
        self.service = service

    def bucket(self, path: RunPath, storage_id: str) -> dict[str, Any]:
        """What UpsertBucket and RewindRun answer: the fields the SDK reads back."""
        record = self.service.run(path)
        return {
            "id": storage_id,
            "name": path.run_id,
            "displayName": record.name,
            "description": None,
            "config": wrap_config(self.service.config(path)),
            "sweepName": None,
            "project": project_node(path.entity, path.project),
            "historyLineCount": self.service.line_count(path),
        }

    def summary(self, path: RunPath, last_step: int | None) -> dict[str, Any]:
        """The summary with W&B's `_step`, `_runtime` and `_timestamp` of the last row,
        which the SDK reads to continue a resumed run."""
        summary = dict(self.service.summary(path))
        if last_step is not None:
            for row in self.service.scan_history(path, min_step=last_step, max_step=last_step):
                summary.update(
                    _step=row["_step"], _runtime=row["_runtime"], _timestamp=row["_timestamp"]
                )
        return summary

    def last_row(self, path: RunPath, last_step: int | None) -> list[str]:
        if last_step is None:
            return []
        return list(
            self.service.scan_history(path, min_step=last_step, max_step=last_step, as_json=True)
        )

    def history_keys(self, summary: Mapping[str, Any], last_step: int | None) -> dict[str, Any]:
        keys = {
            key: {"typeCounts": [{"type": _type_name(value), "count": 1}]}
            for key, value in summary.items()
            if not key.startswith("_")
        }
        return {"keys": keys, "lastStep": -1 if last_step is None else last_step}


class Reading:
    """One resolver per read operation, each `(caller, variables) -> data`."""

    def __init__(self, service: RunService) -> None:
        self.service = service
        self.views = RunViews(service)

    def _run(
        self, caller: Caller, v: Variables, name: str, build: Callable[[RunPath], dict[str, Any]]
    ) -> dict[str, Any]:
        path = caller.run(v.get("entity"), v.get("project"), v.get(name), READ)
        try:
            node = build(path)
        except NotFound:
            node = None
        return {"project": {"run": node}}

    # ---- Run, RunState, QueryRunInfo -------------------------------------------------

    def run(self, caller: Caller, v: Variables) -> dict[str, Any]:
        return self._run(caller, v, "name", self._run_node)

    def _run_node(self, path: RunPath) -> dict[str, Any]:
        record = self.service.run(path)
        summary = self.views.summary(path, record.last_step)
        return {
            "projectId": str(project_id(path.entity, path.project)),
            "id": run_storage_id(path),
            "tags": record.tags,
            "name": path.run_id,
            "displayName": record.name,
            "sweepName": None,
            "state": record.state,
            "config": wrap_config(self.service.config(path)),
            "group": record.group or None,
            "jobType": record.job_type or None,
            "commit": None,
            "readOnly": False,
            "createdAt": timestamp_text(record.created_at),
            "heartbeatAt": timestamp_text(record.updated_at),
            "description": None,
            "notes": record.notes or None,
            "systemMetrics": "{}",
            "summaryMetrics": dumps(summary),
            "historyLineCount": self.service.line_count(path),
            "user": {"name": path.entity, "username": path.entity},
            "historyKeys": self.views.history_keys(summary, record.last_step),
        }

    def run_state(self, caller: Caller, v: Variables) -> dict[str, Any]:
        return self._run(
            caller,
            v,
            "run",
            lambda path: {"id": run_storage_id(path), "state": self.service.run(path).state},
        )

    def query_run_info(self, caller: Caller, v: Variables) -> dict[str, Any]:
        def info(path: RunPath) -> dict[str, Any]:
            record = self.service.run(path)
            summary = self.views.summary(path, record.last_step)
            return {"displayName": record.name, "summaryMetrics": dumps(summary)}

        return self._run(caller, v, "run", info)

    # ---- history -------------------------------------------------------------------------

    def run_full_history(self, caller: Caller, v: Variables) -> dict[str, Any]:
        """`run.history()`: every row as JSON text, evenly sampled down to `samples`."""
        samples = _samples(v.get("samples"))
        return self._run(
            caller,
            v,
            "name",
            lambda path: {"history": sample(self.service.history(path, as_json=True), samples)},
        )

    def run_sampled_history(self, caller: Caller, v: Variables) -> dict[str, Any]:
        """`run.history(keys=[...])`: per spec, the rows holding every key, as objects."""
        specs = v.get("specs")
        if not isinstance(specs, list):
            raise InvalidArgument("specs is a list of JSON strings")
        return self._run(
            caller,
            v,
            "name",
            lambda path: {"sampledHistory": [self._sampled(path, spec) for spec in specs]},
        )

    def sampled_history_page(self, caller: Caller, v: Variables) -> dict[str, Any]:
        """A page of `scan_history(keys=[...])`: `minStep` to `maxStep`, both included."""
        return self._run(
            caller,
            v,
            "run",
            lambda path: {"sampledHistory": [self._sampled(path, v.get("spec"))]},
        )

    def _sampled(self, path: RunPath, spec_text: object) -> list[dict[str, Any]]:
        if not isinstance(spec_text, str):
            raise InvalidArgument("a history spec is a JSON string")
        spec = parse_json(spec_text, "the history spec")
        keys = spec.get("keys") if isinstance(spec, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise InvalidArgument(f"the history spec {spec_text[:80]} needs a list of keys")
        wanted = [key for key in dict.fromkeys(keys) if not key.startswith("_")]
        rows = self.service.history(
            path,
            keys=wanted or None,
            min_step=_optional_step(spec, "minStep"),
            max_step=_optional_step(spec, "maxStep"),
        )
        shown = list(dict.fromkeys(keys))
        picked = [
            {key: row[key] for key in shown if key in row}
            for row in rows
            if all(key in row for key in wanted)
        ]
        return sample(picked, _samples(spec.get("samples")))

    def run_history_keys(self, caller: Caller, v: Variables) -> dict[str, Any]:
        """The keys and the last step, which bound `scan_history`."""

        def keys(path: RunPath) -> dict[str, Any]:
            last_step = self.service.run(path).last_step
            return {"historyKeys": self.views.history_keys(self.service.summary(path), last_step)}

        return self._run(caller, v, "name", keys)

    def run_parquet_history(self, caller: Caller, v: Variables) -> dict[str, Any]:
        """No parquet exports: wandb-core then reads the history through `HistoryPage`."""

        def exports(path: RunPath) -> dict[str, Any]:
            self.service.run(path)  # NotFound: `run: null`
            return {"parquetHistory": {"parquetUrls": [], "liveData": []}}

        return self._run(caller, v, "runName", exports)

    def history_page(self, caller: Caller, v: Variables) -> dict[str, Any]:
        """A page of `scan_history()`: rows with `minStep <= _step < maxStep`, as JSON text."""
        low = whole_number(v.get("minStep"), "minStep")
        high = whole_number(v.get("maxStep"), "maxStep")

        def page(path: RunPath) -> dict[str, Any]:
            self.service.run(path)
            if high <= low:
                return {"history": []}
            rows = self.service.history(path, min_step=low, max_step=high - 1, as_json=True)
            return {"history": rows}

        return self._run(caller, v, "run", page)


def _samples(value: object) -> int:
    if value is None:
        return DEFAULT_SAMPLES
    count = whole_number(value, "samples")
    if count < 1:
        raise InvalidArgument("samples is an integer >= 1")
    return count


def _optional_step(spec: Mapping[str, Any], name: str) -> int | None:
    value = spec.get(name)
    return None if value is None else whole_number(value, name)


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "map"
