"""The runs read model (one overview row per run) and the config read model (the merged
config of every version of every run)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import Connection, select, update

from runhistory.domain.errors import NotFound
from runhistory.domain.identity import RunPath
from runhistory.domain.run import RUNNING, Run
from runhistory.projections.base import Projection, epoch, from_json, on, to_json
from runhistory.projections.schema import configs, runs


class RunsProjection(Projection):
    name = "runs"
    tables = (runs,)

    @on(Run.Created)
    def _created(self, conn: Connection, event: Any, position: int) -> None:
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

    @on(Run.RowsLogged)
    def _rows_logged(self, conn: Connection, event: Any, position: int) -> None:
        changes = {"last_step": event.rows[-1][0]} if event.rows else {}
        self._touch(conn, event, position, **changes)

    @on(Run.Finished)
    def _finished(self, conn: Connection, event: Any, position: int) -> None:
        changes = {"last_step": event.rows[-1][0]} if event.rows else {}
        self._touch(conn, event, position, state=event.state, exit_code=event.exit_code, **changes)

    @on(Run.Resumed)
    def _resumed(self, conn: Connection, event: Any, position: int) -> None:
        changes = {"last_step": event.rows[-1][0]} if event.rows else {}
        self._touch(conn, event, position, state=RUNNING, exit_code=None, **changes)

    @on(Run.Rewound)
    def _rewound(self, conn: Connection, event: Any, position: int) -> None:
        self._touch(
            conn,
            event,
            position,
            state=RUNNING,
            exit_code=None,
            version=event.archived_version + 1,
            last_step=event.step,
        )

    @on(Run.ConfigUpdated, Run.SummarySet, Run.MetricDefined, Run.ArtifactRecorded)
    def _other(self, conn: Connection, event: Any, position: int) -> None:
        self._touch(conn, event, position)

    @staticmethod
    def _touch(conn: Connection, event: Any, position: int, **changes: Any) -> None:
        conn.execute(
            update(runs)
            .where(runs.c.run_uuid == str(event.originator_id))
            .values(updated_at=epoch(event.timestamp), updated_position=position, **changes)
        )


class ConfigProjection(Projection):
    name = "config"
    tables = (configs,)

    @on(Run.Created)
    def _created(self, conn: Connection, event: Any, position: int) -> None:
        _insert(conn, event.originator_id, 1, event.config)

    @on(Run.ConfigUpdated, Run.Resumed)
    def _merged(self, conn: Connection, event: Any, position: int) -> None:
        changes = event.changes if isinstance(event, Run.ConfigUpdated) else event.config
        version, config = _current(conn, event.originator_id)
        conn.execute(
            update(configs)
            .where(configs.c.run_uuid == str(event.originator_id), configs.c.version == version)
            .values(config=to_json({**config, **changes}))
        )

    @on(Run.Rewound)
    def _rewound(self, conn: Connection, event: Any, position: int) -> None:
        _version, config = _current(conn, event.originator_id)
        _insert(conn, event.originator_id, event.archived_version + 1, {**config, **event.config})


def _insert(conn: Connection, run_uuid: UUID, version: int, config: dict) -> None:
    conn.execute(
        configs.insert().values(run_uuid=str(run_uuid), version=version, config=to_json(config))
    )


def _current(conn: Connection, run_uuid: UUID | str) -> tuple[int, dict]:
    version, config = conn.execute(
        select(configs.c.version, configs.c.config)
        .where(configs.c.run_uuid == str(run_uuid))
        .order_by(configs.c.version.desc())
        .limit(1)
    ).one()
    return version, from_json(config)


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


def _run_dict(row: Any) -> dict[str, Any]:
    record = row._asdict()
    record["tags"] = from_json(record["tags"])
    record["path"] = f"{record['entity']}/{record['project']}/{record['run_id']}"
    return record


def read_config(conn: Connection, run_uuid: UUID | str, version: int | None = None) -> dict:
    if version is None:
        return _current(conn, run_uuid)[1]
    row = conn.execute(
        select(configs.c.config).where(
            configs.c.run_uuid == str(run_uuid), configs.c.version == version
        )
    ).first()
    if row is None:
        raise NotFound(f"version {version} of the run does not exist")
    return from_json(row[0])
