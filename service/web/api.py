"""The JSON endpoints behind the web pages, over the run service's query layer.

Each public method takes the caller's principal, plain path parts and the query string's
parameters, and returns a JSON-ready document; refusals are domain errors (`InvalidArgument`
for a bad parameter, `NotFound` for an unknown run), which the server maps to statuses in
one place. No HTTP here, so the handlers are tested by calling them.

Non-finite floats (NaN, +/-Infinity), which runhistory keeps exactly, are not JSON: `encode`
writes them as the strings "NaN", "Infinity" and "-Infinity".
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

from runhistory.domain.errors import InvalidArgument, NotFound
from runhistory.domain.identity import RunPath, VersionRef, check_name
from runhistory.domain.listing import (
    DEFAULT_ORDER,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    RunFilter,
    check_order,
    check_page_size,
)
from runhistory.domain.rules import check_step_range
from runhistory.domain.run import event_types
from runhistory.domain.series import TIMES, TIMESTAMP
from runhistory.projections.history import SeriesPage
from runhistory.service.auth import Principal
from runhistory.service.records import ArtifactRecord, EventRecord, RunRecord
from runhistory.service.runs import RunService
from runhistory.service.web.access import Access
from runhistory.service.web.downsample import (
    DEFAULT_POINTS,
    MAX_POINTS,
    MIN_POINTS,
    MinMaxReducer,
    numeric,
)

Query = Mapping[str, Sequence[str]]

# What every endpoint returns: a JSON-ready document (`encode` makes it strict JSON).
Document = dict[str, Any]

EVENT_TYPES = event_types()
MAX_SPARKLINE_RUNS = 100  # runs whose sparklines one request draws
# The listing's query parameters, as `Params.listing` reads them.
LISTING_PARAMS = (
    "per_page",
    "cursor",
    "order",
    "state",
    "tags",
    "name",
    "name_regex",
    "run_id",
    "run_id_regex",
)
MAX_KEYS = 50  # series per history request
MAX_EVENTS = 1000
SPARKLINE_POINTS = 60
EVENT_ROWS_SHOWN = 3  # rows of a RowsLogged payload shown in the audit; history has them all
HISTORY_CACHE_SIZE = 64
RUN_FIELDS = (
    "path",
    "entity",
    "project",
    "run_id",
    "name",
    "tags",
    "notes",
    "group",
    "job_type",
    "state",
    "exit_code",
    "version",
    "last_step",
    "created_at",
    "updated_at",
    "forked_from",
    "immutable_id",
)
VERSION_FIELDS = (
    "version",
    "immutable_id",
    "archived",
    "state",
    "rows",
    "last_step",
    "rewound_to_step",
    "started_at",
    "archived_at",
)
ARTIFACT_FIELDS = ("name", "type", "digest", "size", "uri", "version", "recorded_at")


class WebApi:
    def __init__(self, service: RunService, access: Access | None = None) -> None:
        self.service = service
        self.access = access or Access()
        # Downsampled histories by request and by the run's last event position: reading a
        # long run costs seconds, and a finished run's charts are looked at again and again.
        # A new event for the run moves its position, so a stale entry is never served.
        self._histories: OrderedDict[tuple[Hashable, ...], Document] = OrderedDict()
        self._histories_lock = threading.Lock()

    # ---- access: the one call site of `authorize` -----------------------------------------

    def _entity(self, principal: Principal, entity: str) -> None:
        check_name("entity", entity)
        self.access.authorize(principal, entity)

    def _path(self, principal: Principal, entity: str, project: str, run_id: str) -> RunPath:
        self._entity(principal, entity)
        return RunPath(entity, project, run_id)

    # ---- projects ------------------------------------------------------------------------

    def projects(self, principal: Principal, query: Query) -> Document:
        """The projects the caller may read: its key's entity's, or every entity's on a
        server without keys."""
        Params(query, set())
        if principal.entity is not None:
            self._entity(principal, principal.entity)
        found = self.service.projects(principal.entity)
        return {"entity": principal.entity, "projects": [asdict(p) for p in found]}

    def check_page(
        self,
        principal: Principal,
        entity: str,
        project: str,
        run_id: str,
        version: int | None = None,
    ) -> None:
        """NotFound unless the run (and its `version`) exists, for the pages of a run, so
        that an unknown one answers 404 as its JSON does; refusals as the API's."""
        path = self._path(principal, entity, project, run_id)
        record = self.service.run(path)
        if version is not None and not 1 <= version <= record.version:
            raise _no_version(path, version, record.version)

    def version_page(self, principal: Principal, entity: str, project: str, version_id: str) -> str:
        """The page of a version named by its immutable ID: its run's, while the version
        is live; its archived version's (`versions/N`) once a rewind replaced it."""
        self._entity(principal, entity)
        path, version = self.service.resolve_version(VersionRef(version_id, entity, project))
        page = f"/{path.entity}/{path.project}/runs/{path.run_id}"
        if version != self.service.run(path).version:
            page += f"/versions/{version}"
        return page

    # ---- project ---------------------------------------------------------------------

    def runs(self, principal: Principal, entity: str, project: str, query: Query) -> Document:
        """A page of the project's runs with their summaries (see domain/listing.py):
        `per_page` (default 50, at most 1000), `cursor` (the `next_cursor` of the page
        before), `order`, and the filters `state` and `tags` (comma-separated: any of),
        `name`, `name_regex`, `run_id`, `run_id_regex`; `total=1` counts the matching runs.
        `metrics` are the chartable keys of the page's runs. `sparkline=KEY` adds each run's
        downsampled series of KEY (`points`, default 60), for pages of at most
        MAX_SPARKLINE_RUNS runs."""
        params = Params(query, {"sparkline", "points", "total", *LISTING_PARAMS})
        key = params.text("sparkline")
        points = params.integer("points", SPARKLINE_POINTS, MIN_POINTS, 1000)
        with_total = params.integer("total", 0, 0, 1) == 1
        options = params.listing()
        if key and options["page_size"] > MAX_SPARKLINE_RUNS:
            raise InvalidArgument(
                f"sparklines are drawn for at most {MAX_SPARKLINE_RUNS} runs a request: "
                f"ask for per_page <= {MAX_SPARKLINE_RUNS}, or use /sparklines"
            )
        self._entity(principal, entity)
        check_name("project", project)
        page = self.service.runs_page(
            entity, project, with_total=with_total, with_summaries=True, **options
        )
        summaries = page.summaries or {}
        sparklines = {}
        if key:
            paths = [RunPath(entity, project, record.run_id) for record in page.runs]
            sparklines = self._sparklines(paths, key, points)
        found = []
        metrics: set[str] = set()
        for record in page.runs:
            run = _fields(record, RUN_FIELDS)
            run["summary"] = summaries[record.run_id]
            metrics.update(_chartable_keys(run["summary"]))
            if key:
                run["sparkline"] = sparklines[record.run_id]
            found.append(run)
        return {
            "entity": entity,
            "project": project,
            "order": options["order"] or DEFAULT_ORDER,
            "per_page": options["page_size"],
            "metrics": sorted(metrics),
            "runs": found,
            "next_cursor": page.next_cursor,
            "total": page.total,
        }

    def sparklines(self, principal: Principal, entity: str, project: str, query: Query) -> Document:
        """Downsampled series of `key` (`points`, default 60) for the runs named in `runs`
        (comma-separated run IDs, at most MAX_SPARKLINE_RUNS): those of the page shown."""
        params = Params(query, {"key", "runs", "points"})
        key = params.text("key")
        if key is None:
            raise InvalidArgument("give the metric to draw: key=KEY")
        points = params.integer("points", SPARKLINE_POINTS, MIN_POINTS, 1000)
        run_ids = list(dict.fromkeys(r for r in (params.text("runs") or "").split(",") if r))
        if not run_ids or len(run_ids) > MAX_SPARKLINE_RUNS:
            raise InvalidArgument(
                f"give the runs to draw as runs=ID,ID,...: 1 to {MAX_SPARKLINE_RUNS} run IDs "
                f"(got {len(run_ids)})"
            )
        self._entity(principal, entity)
        paths = [RunPath(entity, project, run_id) for run_id in run_ids]
        return {"key": key, "sparklines": self._sparklines(paths, key, points)}

    def _sparklines(self, paths: list[RunPath], key: str, points: int) -> dict[str, Document]:
        """Each run's series of `key`, downsampled, by run ID; read in one transaction."""
        found = {}
        for path, pages in self.service.series_of_runs(paths, [key]).items():
            reducer = MinMaxReducer(max_points=points)
            for page in pages:
                for _key, steps, numbers in _chart_series(page):
                    for step, number in zip(steps, numbers, strict=True):
                        if number is not None:
                            reducer.add(step, number)  # it leaves non-finite ones out
            steps, values = reducer.points()
            found[path.run_id] = {"key": key, "steps": steps, "values": values}
        return found

    # ---- one run ---------------------------------------------------------------------

    def run(
        self, principal: Principal, entity: str, project: str, run_id: str, query: Query
    ) -> Document:
        """The overview: the run, its config and summary, artifacts, where it was forked
        from (or which archived version its last rewind replaced), its versions and forks."""
        Params(query, set())
        path = self._path(principal, entity, project, run_id)
        record = self.service.run(path)
        overview = _fields(record, RUN_FIELDS)
        overview["config"] = self.service.config(path)
        overview["summary"] = self.service.summary(path)
        overview["metrics"] = _chartable_keys(overview["summary"])
        versions = [_fields(v, VERSION_FIELDS) for v in self.service.versions(path)]
        overview["versions"] = versions
        archived = [v for v in versions if v["archived"]]
        overview["rewound_from"] = (
            {"version": archived[-1]["version"], "step": archived[-1]["rewound_to_step"]}
            if archived
            else None
        )
        tree = self.service.lineage(path)
        overview["forks"] = [
            _fields(d, ("run", "source_version", "step")) for d in tree.descendants
        ]
        overview["artifacts"] = _artifacts(self.service.artifacts(path))
        return overview

    def version(
        self,
        principal: Principal,
        entity: str,
        project: str,
        run_id: str,
        version: str,
        query: Query,
    ) -> Document:
        """One version (archived or live) as it was: state, rows, summary, config, artifacts."""
        Params(query, set())
        number = _parse_int("version", version, 1, None)
        path = self._path(principal, entity, project, run_id)
        record = self.service.run(path)
        versions = self.service.versions(path)
        if number > len(versions):
            raise _no_version(path, number, len(versions))
        shown = versions[number - 1]
        found = _fields(shown, (*VERSION_FIELDS, "summary", "config"))
        found["metrics"] = _chartable_keys(shown.summary)
        found["run"] = _fields(record, RUN_FIELDS)
        found["artifacts"] = _artifacts(self.service.artifacts(path, version=number))
        found["replaced_by"] = number + 1 if found["archived"] else None
        return found

    def history(
        self, principal: Principal, entity: str, project: str, run_id: str, query: Query
    ) -> Document:
        """Each key's series over `_step`, downsampled server-side to at most `max_points`
        points per part by keeping each bucket's min and max. A fork's series come in two
        parts, `inherited` (rows up to the fork step, from its source) and `own`; the rewind
        points of the version shown are listed so charts can mark them."""
        params = Params(query, {"keys", "version", "max_points", "min_step", "max_step"})
        keys = params.keys()
        version = params.integer("version", None, 1, None)
        max_points = params.integer("max_points", DEFAULT_POINTS, MIN_POINTS, MAX_POINTS)
        min_step, max_step = check_step_range(
            params.integer("min_step", None, None, None),
            params.integer("max_step", None, None, None),
        )
        path = self._path(principal, entity, project, run_id)
        record = self.service.run(path)
        cache_key = (
            str(path),
            record.updated_position,
            tuple(keys),
            version,
            max_points,
            min_step,
            max_step,
        )
        with self._histories_lock:
            if cache_key in self._histories:
                self._histories.move_to_end(cache_key)
                return self._histories[cache_key]
        document = self._history(path, record, keys, version, max_points, min_step, max_step)
        with self._histories_lock:
            self._histories[cache_key] = document
            if len(self._histories) > HISTORY_CACHE_SIZE:
                self._histories.popitem(last=False)
        return document

    def _history(
        self,
        path: RunPath,
        record: RunRecord,
        keys: list[str],
        version: int | None,
        max_points: int,
        min_step: int | None,
        max_step: int | None,
    ) -> Document:
        tree = self.service.lineage(path)
        shown = version or record.version
        if shown > len(tree.versions):
            raise _no_version(path, shown, len(tree.versions))
        # An archived version reports its own state and last step, as it was archived.
        state, last_step = record.state, record.last_step
        if shown != record.version:
            archived = self.service.versions(path)[shown - 1]
            state, last_step = archived.state, archived.last_step
        if not keys:
            keys = _chartable_keys(self.service.summary(path, version=version))[:MAX_KEYS]

        # Rewinds before the version shown cut its history at their steps; the rows of a
        # fork up to the step that version stands on (its fork step, or an earlier rewind
        # below it) come from its source.
        rewinds = [
            {"version": v.version, "step": v.rewound_to_step} for v in tree.versions[: shown - 1]
        ]
        inherited_until = None
        if record.forked_from is not None:
            standing = self.service.run(path, version=shown).forked_from
            inherited_until = None if standing is None else standing.step

        origin = min_step or 0
        parts = {
            key: {
                "inherited": MinMaxReducer(max_points=max_points, origin=origin),
                "own": MinMaxReducer(max_points=max_points, origin=origin),
            }
            for key in keys
        }
        skipped = dict.fromkeys(keys, 0)
        rows = 0
        # Key by key from the stored series: no row is built for a chart.
        pages = self.service.scan_series(
            path, keys=keys, min_step=min_step, max_step=max_step, version=version
        )
        for page in pages:
            # The rows holding one of the keys: the points of `_timestamp`.
            rows += sum(len(points) for points in page.series if points.key == TIMESTAMP)
            for key, steps, numbers in _chart_series(page):
                inherited, own = parts[key]["inherited"], parts[key]["own"]
                for step, number in zip(steps, numbers, strict=True):
                    if number is None or not math.isfinite(number):
                        skipped[key] += 1
                    elif inherited_until is not None and step <= inherited_until:
                        inherited.add(step, number)
                    else:
                        own.add(step, number)

        series: dict[str, dict[str, Any]] = {}
        for key, reducers in parts.items():
            series[key] = {"skipped": skipped[key]}
            for part, reducer in reducers.items():
                steps, values = reducer.points()
                series[key][part] = {
                    "steps": steps,
                    "values": values,
                    "rows": reducer.count,
                    "downsampled": len(steps) < reducer.count,
                }
        return {
            "run": record.path,
            "state": state,
            "version": shown,
            "live": shown == record.version,
            "last_step": last_step,
            "forked_from": _plain(record.forked_from),
            "inherited_until": inherited_until,
            "rewinds": rewinds,
            "max_points": max_points,
            "rows": rows,
            "keys": keys,
            "series": series,
        }

    def lineage(
        self, principal: Principal, entity: str, project: str, run_id: str, query: Query
    ) -> Document:
        """Ancestors (nearest first), versions and the tree of descendants."""
        Params(query, set())
        path = self._path(principal, entity, project, run_id)
        tree = asdict(self.service.lineage(path))
        record = self.service.run(path)
        return {**tree, **_fields(record, ("state", "forked_from"))}

    def events(
        self, principal: Principal, entity: str, project: str, run_id: str, query: Query
    ) -> Document:
        """The run's events in order from position `after` (exclusive), of one `type` if
        given, at most `limit`. `next_after` continues the listing."""
        params = Params(query, {"type", "after", "limit"})
        kind = params.text("type")
        if kind and kind not in EVENT_TYPES:
            raise InvalidArgument(f"unknown event type {kind!r}: allowed {', '.join(EVENT_TYPES)}")
        after = params.integer("after", 0, 0, None)
        limit = params.integer("limit", 200, 1, MAX_EVENTS)
        path = self._path(principal, entity, project, run_id)
        self.service.run(path)  # NotFound for an unknown run
        found = self.service.events(after, path, limit, types=[kind] if kind else None)
        return {
            "run": str(path),
            "type": kind or None,
            "types": list(EVENT_TYPES),
            "after": after,
            "events": [_event(event) for event in found],
            "next_after": found[-1].position if len(found) == limit else None,
        }

    def as_of(
        self, principal: Principal, entity: str, project: str, run_id: str, query: Query
    ) -> Document:
        """The run as it stood at event `position` (or time `at`, seconds since the epoch):
        its summary, config, row count and downsampled charts."""
        params = Params(query, {"position", "at", "max_points"})
        position = params.integer("position", None, 1, None)
        at = params.number("at")
        max_points = params.integer("max_points", 400, MIN_POINTS, MAX_POINTS)
        if (position is None) == (at is None):
            raise InvalidArgument("give exactly one of position (an event position) and at")
        path = self._path(principal, entity, project, run_id)
        snapshot = self.service.as_of(path, position=position, at=at)
        summary = snapshot.summary()
        keys = _chartable_keys(summary)[:MAX_KEYS]
        reducers = {key: MinMaxReducer(max_points=max_points) for key in keys}
        rows = snapshot.history(keys=keys or None)
        for row in rows:
            for key, value in row.items():
                number = numeric(value) if key in reducers else None
                if number is not None:
                    reducers[key].add(row["_step"], number)
        series = {}
        for key, reducer in reducers.items():
            steps, values = reducer.points()
            series[key] = {"steps": steps, "values": values, "rows": reducer.count}
        return {
            "run": str(path),
            "position": position,
            "at": at,
            "rows": len(rows),
            "last_step": rows[-1]["_step"] if rows else None,
            "summary": summary,
            "config": snapshot.config(),
            "series": series,
        }


# ---- parameters ------------------------------------------------------------------------


class Params:
    """Query-string parameters; an unknown or repeated parameter is refused, not ignored,
    so a typo does not silently give the wrong data."""

    def __init__(self, query: Query, allowed: set[str]) -> None:
        for name, values in query.items():
            if name not in allowed:
                listed = ", ".join(sorted(allowed)) or "none"
                raise InvalidArgument(f"unknown parameter {name!r}: allowed {listed}")
            if len(values) > 1:
                raise InvalidArgument(f"parameter {name!r} is given {len(values)} times: once")
        self.query = query

    def text(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values and values[0] != "" else None

    def integer(self, name: str, default: Any, low: int | None, high: int | None) -> Any:
        text = self.text(name)
        return default if text is None else _parse_int(name, text, low, high)

    def number(self, name: str) -> float | None:
        text = self.text(name)
        if text is None:
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise InvalidArgument(f"invalid {name} {text!r}: a finite number")
        return value

    def per_page(self) -> int | None:
        text = self.text("per_page")
        try:
            return None if text is None else int(text)
        except ValueError:
            raise InvalidArgument(
                f"invalid page size {text!r}: 1 to {MAX_PAGE_SIZE} runs (default "
                f"{DEFAULT_PAGE_SIZE})"
            ) from None

    def listing(self) -> dict[str, Any]:
        """`RunService.runs_page`'s options from LISTING_PARAMS."""

        def listed(name: str) -> tuple[str, ...]:
            return tuple(v.strip() for v in (self.text(name) or "").split(",") if v.strip())

        return {
            "page_size": check_page_size(self.per_page()),
            "cursor": self.text("cursor"),
            "order": check_order(self.text("order")),
            "run_filter": RunFilter(
                states=listed("state"),
                tags=listed("tags"),
                name=self.text("name"),
                name_regex=self.text("name_regex"),
                run_id=self.text("run_id"),
                run_id_regex=self.text("run_id_regex"),
            ),
        }

    def keys(self) -> list[str]:
        """`keys=a,b` (comma-separated metric keys), or an empty list for all of them."""
        text = self.text("keys")
        if text is None:
            return []
        keys = list(dict.fromkeys(k.strip() for k in text.split(",")))
        if any(not k or k.startswith("_") for k in keys):
            raise InvalidArgument(
                f"invalid keys {text!r}: comma-separated metric keys, none empty and none of "
                "the system keys starting with '_' (every point has _step)"
            )
        if len(keys) > MAX_KEYS:
            raise InvalidArgument(f"{len(keys)} keys asked for: at most {MAX_KEYS} per request")
        return keys


def _parse_int(name: str, text: str, low: int | None, high: int | None) -> int:
    """An integer within [low, high] (None: unbounded on that side)."""
    allowed = "an integer" + ("" if low is None else f" >= {low}")
    allowed += "" if high is None else f" and <= {high}"
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgument(f"invalid {name} {text!r}: {allowed}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidArgument(f"invalid {name} {value}: {allowed}")
    return value


def _no_version(path: RunPath, version: int, count: int) -> NotFound:
    return NotFound(f"run {path} has no version {version}: it has versions 1..{count}")


# ---- documents -------------------------------------------------------------------------


def _fields(record: Any, names: Sequence[str]) -> dict[str, Any]:
    """Some fields of a service record, as a JSON document: the one mapping of records."""
    return {name: _plain(getattr(record, name)) for name in names}


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def _artifacts(records: list[ArtifactRecord]) -> dict[str, list[dict[str, Any]]]:
    split: dict[str, list[dict[str, Any]]] = {"produced": [], "used": []}
    for record in records:
        split.setdefault(record.direction, []).append(_fields(record, ARTIFACT_FIELDS))
    return split


def _chartable_keys(summary: Mapping[str, Any]) -> list[str]:
    """The summary's keys that stand for numeric series, sorted."""
    return sorted(key for key, value in summary.items() if _chartable(value))


def _chartable(value: object) -> bool:
    """Summary values that stand for a numeric series: numbers and define_metric dicts."""
    return isinstance(value, int | float) or (
        isinstance(value, dict) and any(isinstance(v, int | float) for v in value.values())
    )


def _event(event: EventRecord) -> dict[str, Any]:
    """An event for the audit page; a RowsLogged payload's rows are cut to the first few
    (with their count and step range): the history endpoint serves rows."""
    payload = dict(event.payload)
    rows = payload.get("rows")
    if isinstance(rows, list):
        payload["row_count"] = len(rows)
        payload["steps"] = [rows[0][0], rows[-1][0]] if rows else None
        payload["rows"] = [
            {"_step": r[0], "_timestamp": r[1], "_runtime": r[2], **r[3]}
            for r in rows[:EVENT_ROWS_SHOWN]
        ]
    return {
        **_fields(event, ("position", "run_uuid", "run_event", "type", "timestamp")),
        "payload": payload,
    }


# ---- JSON --------------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def encode(document: Any) -> bytes:
    """Strict JSON (browsers' JSON.parse refuses NaN); non-finite floats become strings."""
    try:
        text = json.dumps(document, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        text = json.dumps(_finite(document), separators=(",", ":"), default=str)
    return text.encode()


def _chart_series(page: SeriesPage) -> Iterator[tuple[str, list[int], list[float | None]]]:
    """Each key's points in a page of stored series, as its steps and its values as numbers
    (None for values that are not), without building rows; the time series left out."""
    for points in page.series:
        if points.key not in TIMES:
            yield points.key, points.step_list(), [numeric(v) for v in points.value_list()]
