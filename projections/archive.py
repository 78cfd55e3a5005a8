"""The archive read model: every version of every run, live or archived by a rewind."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select, update

from runhistory.domain.identity import version_id
from runhistory.domain.run import RUNNING, Run
from runhistory.projections.base import Projection, epoch, last_step_change
from runhistory.projections.schema import versions


class ArchiveProjection(Projection):
    name = "archive"
    revision = 2  # 2: each version's immutable ID and the event that archived it
    tables = (versions,)

    def process(self, conn: Connection, event: Run.Event, position: int) -> None:
        match event:
            case Run.Created():
                _start(conn, event, position, 1, event.last_step)
            case Run.RowsLogged():
                if event.rows:
                    _update_live(conn, event, **last_step_change(event.rows))
            case Run.Finished():
                _update_live(conn, event, state=event.state, **last_step_change(event.rows))
            case Run.Resumed():
                _update_live(conn, event, state=RUNNING, **last_step_change(event.rows))
            case Run.Rewound():
                _update_live(
                    conn,
                    event,
                    archived_at=epoch(event.timestamp),
                    archived_position=position,
                    archived_event=event.originator_version,
                    rewound_to_step=event.step,
                    **last_step_change(event.rows),
                )
                _start(conn, event, position, event.archived_version + 1, event.step)


def _start(
    conn: Connection, event: Run.Event, position: int, version: int, last_step: int | None
) -> None:
    conn.execute(
        versions.insert().values(
            run_uuid=str(event.originator_id),
            version=version,
            started_at=epoch(event.timestamp),
            started_position=position,
            archived_at=None,
            archived_position=None,
            rewound_to_step=None,
            state=RUNNING,
            last_step=last_step,
            immutable_id=version_id(event.originator_id, version),
            archived_event=None,
        )
    )


def _update_live(conn: Connection, event: Run.Event, **changes: Any) -> None:
    conn.execute(
        update(versions)
        .where(versions.c.run_uuid == str(event.originator_id), versions.c.archived_at.is_(None))
        .values(**changes)
    )


def list_versions(conn: Connection, run_uuid: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(versions).where(versions.c.run_uuid == run_uuid).order_by(versions.c.version)
    )
    return [row._asdict() for row in rows]


def find_version(conn: Connection, immutable_id: str) -> dict[str, Any] | None:
    """The version with this immutable ID, or None."""
    row = conn.execute(select(versions).where(versions.c.immutable_id == immutable_id)).first()
    return None if row is None else row._asdict()
