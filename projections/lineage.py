"""The lineage read model: which run was forked from which run, version and step."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from runhistory.domain.run import Run
from runhistory.projections.base import Projection, epoch
from runhistory.projections.schema import forks


class LineageProjection(Projection):
    name = "lineage"
    tables = (forks,)

    def process(self, conn: Connection, event: Run.Event, position: int) -> None:
        match event:
            case Run.Created(forked_from=source) if source is not None:
                conn.execute(
                    forks.insert().values(
                        run_uuid=str(event.originator_id),
                        source_uuid=source["run_uuid"],
                        source_version=source["version"],
                        source_step=source["step"],
                        forked_at=epoch(event.timestamp),
                        position=position,
                    )
                )


def fork_edge(conn: Connection, run_uuid: str) -> dict[str, Any] | None:
    row = conn.execute(select(forks).where(forks.c.run_uuid == run_uuid)).first()
    return None if row is None else row._asdict()


def forks_of(conn: Connection, source_uuid: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(forks).where(forks.c.source_uuid == source_uuid).order_by(forks.c.position)
    )
    return [row._asdict() for row in rows]
