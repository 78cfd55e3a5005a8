"""The runs read model (one overview row per run) and the config read model (the merged
config of every version of every run)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Connection, Row, Select, exists, func, select, update

from runhistory.domain.errors import NotFound
from runhistory.domain.identity import RunPath
from runhistory.domain.listing import DEFAULT_ORDER, ORDERS, RunFilter
from runhistory.domain.run import CRASHED, RUNNING, Run
from runhistory.projections.base import (
    Projection,
    epoch,
    from_json,
    last_step_change,
    to_json,
)
from runhistory.projections.schema import configs, forks, run_tags, runs


class RunsProjection(Projection):
    name = "runs"
    # 2: rh_run_tags and the listing indexes on rh_runs; 3: notes, group and job type.
    revision = 3
    tables = (runs, run_tags)

    def process(self, conn: Connection, event: Run.Event, position: int) -> None:
        changes: dict[str, Any] = {}
        match event:
            case Run.Created():
                self._created(conn, event, position)
                return
            case Run.RowsLogged():
                changes = last_step_change(event.rows)
            case Run.Finished():
                changes = {"state": event.state, "exit_code": event.exit_code}
                changes.update(last_step_change(event.rows))
            case Run.Resumed():
                changes = {"state": RUNNING, "exit_code": None}
                changes.update(last_step_change(event.rows))
            case Run.Rewound():
                changes = {
                    "state": RUNNING,
                    "exit_code": None,
                    "version": event.archived_version + 1,
                    "last_step": event.step,
                }
            case Run.CrashDetected():
                changes = {"state": CRASHED, "exit_code": None}
            case Run.Revived():
                changes = {"state": RUNNING}
            case Run.DetailsUpdated():
                changes = _details_changes(event)
        # Every event of a run, these and the others, is its latest update.
        conn.execute(
            update(runs)
            .where(runs.c.run_uuid == str(event.originator_id))
            .values(updated_at=epoch(event.timestamp), updated_position=position, **changes)
        )

    @staticmethod
    def _created(conn: Connection, event: Run.Created, position: int) -> None:
        at = epoch(event.timestamp)
        conn.execute(
            runs.insert().values(
                run_uuid=str(event.originator_id),
                entity=event.entity,
                project=event.project,
                run_id=event.run_id,
                name=event.name,
                tags=to_json(event.tags),
                notes="",
                group="",
                job_type="",
                state=RUNNING,
                exit_code=None,
                version=1,
                last_step=event.last_step,
                created_at=at,
                updated_at=at,
                created_position=position,
                updated_position=position,
            )
        )
        tags = list(dict.fromkeys(event.tags))  # a tag given twice is one row
        if tags:
            conn.execute(
                run_tags.insert(), [{"run_uuid": str(event.originator_id), "tag": t} for t in tags]
            )


def _details_changes(event: Run.DetailsUpdated) -> dict[str, Any]:
    """The columns of the details the event changes (None: left as they are)."""
    changes: dict[str, Any] = {
        column: value
        for column, value in (
            ("name", event.name),
            ("notes", event.notes),
            ("group", event.group),
            ("job_type", event.job_type),
        )
        if value is not None
    }
    if event.tags is not None:
        changes["tags"] = to_json(event.tags)
    return changes


class ConfigProjection(Projection):
    name = "config"
    tables = (configs,)

    def process(self, conn: Connection, event: Run.Event, position: int) -> None:
        match event:
            case Run.Created():
                _insert(conn, event.originator_id, 1, event.config)
            case Run.ConfigUpdated():
                _merge(conn, event.originator_id, event.changes)
            case Run.Resumed():
                _merge(conn, event.originator_id, event.config)
            case Run.Rewound():
                _version, config = _current(conn, event.originator_id)
                version = event.archived_version + 1
                _insert(conn, event.originator_id, version, {**config, **event.config})


def _merge(conn: Connection, run_uuid: UUID, changes: dict[str, object]) -> None:
    version, config = _current(conn, run_uuid)
    conn.execute(
        update(configs)
        .where(configs.c.run_uuid == str(run_uuid), configs.c.version == version)
        .values(config=to_json({**config, **changes}))
    )


def _insert(conn: Connection, run_uuid: UUID, version: int, config: dict[str, object]) -> None:
    conn.execute(
        configs.insert().values(run_uuid=str(run_uuid), version=version, config=to_json(config))
    )


def _current(conn: Connection, run_uuid: UUID | str) -> tuple[int, dict[str, object]]:
    version, config = conn.execute(
        select(configs.c.version, configs.c.config)
        .where(configs.c.run_uuid == str(run_uuid))
        .order_by(configs.c.version.desc())
        .limit(1)
    ).one()
    decoded: dict[str, object] = from_json(config)
    return version, decoded


# ---- queries ---------------------------------------------------------------------------


def find_run(conn: Connection, path: RunPath) -> dict[str, Any]:
    row = conn.execute(select(runs).where(runs.c.run_uuid == str(path.aggregate_id))).first()
    if row is None:
        raise NotFound(f"run {path} does not exist")
    return _run_dict(row)


def run_by_uuid(conn: Connection, run_uuid: str) -> dict[str, Any]:
    return _run_dict(conn.execute(select(runs).where(runs.c.run_uuid == run_uuid)).one())


def list_runs(
    conn: Connection,
    entity: str,
    project: str,
    run_filter: RunFilter | None = None,
    order: str = DEFAULT_ORDER,
    after: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The project's runs that match `run_filter`, in `order` (see domain/listing.py), after
    the run at position `after` of that order, at most `limit`.

    Keyset paging: the query is a range scan of the (entity, project, position) index, so a
    page costs the same whatever the project's size and wherever the page starts (a filter
    reads on until it has `limit` matching runs)."""
    query = page_query(entity, project, run_filter, order, after, limit)
    return [_run_dict(row) for row in conn.execute(query)]


def page_query(
    entity: str,
    project: str,
    run_filter: RunFilter | None,
    order: str,
    after: int | None,
    limit: int | None,
) -> Select[Any]:
    """`list_runs`' query."""
    column_name, descending = ORDERS[order]
    column = runs.c[column_name]
    query = select(runs).where(
        runs.c.entity == entity, runs.c.project == project, *_conditions(run_filter)
    )
    if after is not None:
        query = query.where(column < after if descending else column > after)
    query = query.order_by(column.desc() if descending else column)
    if limit is not None:
        query = query.limit(limit)
    return query


def count_runs(conn: Connection, entity: str, project: str, run_filter: RunFilter | None) -> int:
    """How many runs `list_runs` gives in all: one count over the index."""
    query = select(func.count()).where(
        runs.c.entity == entity, runs.c.project == project, *_conditions(run_filter)
    )
    return int(conn.execute(query).scalar_one())


def _conditions(run_filter: RunFilter | None) -> list[ColumnElement[bool]]:
    if run_filter is None:
        return []
    found: list[ColumnElement[bool]] = []
    if run_filter.states:
        found.append(runs.c.state.in_(run_filter.states))
    if run_filter.run_id is not None:
        found.append(runs.c.run_id == run_filter.run_id)
    if run_filter.run_id_regex is not None:
        found.append(runs.c.run_id.regexp_match(run_filter.run_id_regex))
    if run_filter.name is not None:
        found.append(runs.c.name == run_filter.name)
    if run_filter.name_regex is not None:
        found.append(runs.c.name.regexp_match(run_filter.name_regex))
    if run_filter.tags:
        found.append(
            exists().where(
                run_tags.c.run_uuid == runs.c.run_uuid, run_tags.c.tag.in_(run_filter.tags)
            )
        )
    return found


def forked_from_of(conn: Connection, run_uuids: list[str]) -> dict[str, dict[str, Any]]:
    """The fork link of each of `run_uuids` that is a fork, with its source's path: one query
    for a page of runs."""
    if not run_uuids:
        return {}
    source = runs.alias("source")
    rows = conn.execute(
        select(
            forks.c.run_uuid,
            forks.c.source_step,
            forks.c.source_version,
            forks.c.source_uuid,
            source.c.entity,
            source.c.project,
            source.c.run_id,
        )
        .join(source, source.c.run_uuid == forks.c.source_uuid)
        .where(forks.c.run_uuid.in_(run_uuids))
    )
    return {
        row.run_uuid: {
            "run": f"{row.entity}/{row.project}/{row.run_id}",
            "step": row.source_step,
            "version": row.source_version,
            "source_uuid": row.source_uuid,
        }
        for row in rows
    }


def quiet_runs(conn: Connection, before: float) -> list[tuple[RunPath, float]]:
    """The running runs without an event since `before` (seconds since the epoch), each with
    the time of its last event: where crash detection looks for silent writers."""
    rows = conn.execute(
        select(runs.c.entity, runs.c.project, runs.c.run_id, runs.c.updated_at).where(
            runs.c.state == RUNNING, runs.c.updated_at <= before
        )
    )
    return [(RunPath(entity, project, run_id), at) for entity, project, run_id, at in rows]


def list_projects(conn: Connection, entity: str | None) -> list[dict[str, Any]]:
    """The projects that hold runs, of one entity or (None) of all: each with its number
    of runs and the time its latest run last changed, by entity and project."""
    query = (
        select(
            runs.c.entity,
            runs.c.project,
            func.count().label("runs"),
            func.max(runs.c.updated_at).label("updated_at"),
        )
        .group_by(runs.c.entity, runs.c.project)
        .order_by(runs.c.entity, runs.c.project)
    )
    if entity is not None:
        query = query.where(runs.c.entity == entity)
    return [row._asdict() for row in conn.execute(query)]


def _run_dict(row: Row[Any]) -> dict[str, Any]:
    record = row._asdict()
    record["tags"] = from_json(record["tags"])
    record["path"] = f"{record['entity']}/{record['project']}/{record['run_id']}"
    return record


def read_config(
    conn: Connection, run_uuid: UUID | str, version: int | None = None
) -> dict[str, object]:
    if version is None:
        return _current(conn, run_uuid)[1]
    row = conn.execute(
        select(configs.c.config).where(
            configs.c.run_uuid == str(run_uuid), configs.c.version == version
        )
    ).first()
    if row is None:
        raise NotFound(f"version {version} of the run does not exist")
    config: dict[str, object] = from_json(row[0])
    return config
