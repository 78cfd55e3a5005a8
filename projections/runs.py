"""The runs read model (one overview row per run) and the config read model (the merged
config of every version of every run)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Row, func, select, update

from runhistory.domain.errors import NotFound
from runhistory.domain.identity import RunPath
from runhistory.domain.run import RUNNING, Run
from runhistory.projections.base import (
    Projection,
    epoch,
    from_json,
    last_step_change,
    to_json,
)
from runhistory.projections.schema import configs, runs


class RunsProjection(Projection):
    name = "runs"
    tables = (runs,)

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


def list_runs(conn: Connection, entity: str, project: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(runs)
        .where(runs.c.entity == entity, runs.c.project == project)
        .order_by(runs.c.created_position)
    )
    return [_run_dict(row) for row in rows]


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
