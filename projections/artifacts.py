"""The artifacts read model: what each run version produced and used."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from runhistory.domain.run import Run
from runhistory.projections.base import Projection, epoch
from runhistory.projections.schema import artifacts


class ArtifactsProjection(Projection):
    name = "artifacts"
    tables = (artifacts,)

    def process(self, conn: Connection, event: Run.Event, position: int) -> None:
        match event:
            case Run.ArtifactRecorded():
                conn.execute(
                    artifacts.insert().values(
                        position=position,
                        run_uuid=str(event.originator_id),
                        recorded_at=epoch(event.timestamp),
                        **event.artifact,
                    )
                )


def list_artifacts(
    conn: Connection, run_uuid: str, version: int | None = None
) -> list[dict[str, Any]]:
    query = select(artifacts).where(artifacts.c.run_uuid == run_uuid)
    if version is not None:
        query = query.where(artifacts.c.version == version)
    return [row._asdict() for row in conn.execute(query.order_by(artifacts.c.position))]
