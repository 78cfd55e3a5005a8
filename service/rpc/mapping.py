"""The gRPC edge's one mapping: request fields to the run service's arguments, and the
service's results (records, acks, rows) to response messages.

The JSON-in-proto fields (`config_json`, `summary_json`, ...) and the values of rows use
the wire codec both sides share (`protos/codec.py`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from runhistory.domain.errors import InvalidArgument
from runhistory.domain.listing import RunFilter
from runhistory.domain.values import Limits, LogCall
from runhistory.projections.history import SeriesPage
from runhistory.projections.runner import Progress
from runhistory.protos import codec
from runhistory.protos import runhistory_pb2 as pb
from runhistory.service.records import (
    ArtifactRecord,
    Descendant,
    EventRecord,
    ForkedFrom,
    LineageRecord,
    RunRecord,
    RunsPage,
    VersionRecord,
)
from runhistory.service.runs import Ack, HeartbeatAck, LogAck, Session

# ---- requests -------------------------------------------------------------------------------


def version(value: int) -> int | None:
    if value < 0:
        raise InvalidArgument(f"invalid version {value}: versions are 1, 2, ...; 0 is the live one")
    return value or None


def seq(value: int) -> int | None:
    if value < 0:
        raise InvalidArgument(f"invalid sequence number {value}: use 1, 2, ... (0: none)")
    return value or None


def write_options(request: Any) -> dict[str, Any]:
    """The writer a write request names, and its sequence number for retries."""
    return {"writer": request.writer or None, "seq": seq(request.seq)}


def optional(message: Any, field: str) -> Any:
    """A proto3 `optional` field's value, None when unset."""
    return getattr(message, field) if message.HasField(field) else None


def min_position(value: int) -> int | None:
    """The position a read must include: read your writes across servers, where the client
    names the last position it wrote (0: none, the server's own writes only)."""
    return value or None


def listing_options(request: pb.ListRunsRequest) -> dict[str, Any]:
    """`RunService.runs_page`'s options: page, order and filter."""
    given = request.filter

    def optional(field: str) -> str | None:
        return getattr(given, field) if given.HasField(field) else None

    return {
        "run_filter": RunFilter(
            states=tuple(given.states),
            tags=tuple(given.tags),
            run_id=optional("run_id"),
            run_id_regex=optional("run_id_regex"),
            name=optional("name"),
            name_regex=optional("name_regex"),
        ),
        "order": request.order or None,
        "page_size": request.page_size or None,  # 0: unset, the default
        "cursor": request.cursor or None,
        "with_total": request.with_total,
        "min_position": min_position(request.min_position),
    }


def pinned_version(named: int | None, requested: int) -> int | None:
    """The version a read is of: the one its path names by immutable ID, if any, or the
    request's `version` field; both given, they must agree."""
    asked = version(requested)
    if named is not None and asked is not None and named != asked:
        raise InvalidArgument(
            f"the path names version {named} by its immutable ID, but version is {asked}: "
            "leave version 0 or make it match"
        )
    return named if named is not None else asked


def history_options(request: pb.HistoryRequest, named: int | None = None) -> dict[str, Any]:
    """`named`: the version the request's path names by immutable ID."""
    return {
        "keys": list(request.keys) or None,
        "min_step": request.min_step if request.HasField("min_step") else None,
        "max_step": request.max_step if request.HasField("max_step") else None,
        "own_only": request.own_only,
        "version": pinned_version(named, request.version),
    }


def log_calls(batch: pb.LogBatch) -> list[LogCall]:
    if batch.calls and batch.calls_json:
        raise InvalidArgument("a batch carries calls or calls_json, not both")
    if batch.calls_json:
        return codec.calls_from_json(batch.calls_json)
    return [
        LogCall(
            data=codec.from_values(call.data),
            timestamp=call.timestamp or time.time(),
            step=call.step if call.HasField("step") else None,
            commit=call.commit if call.HasField("commit") else None,
        )
        for call in batch.calls
    ]


# ---- results --------------------------------------------------------------------------------


def ack(result: Ack) -> pb.Ack:
    return pb.Ack(position=result.position, applied=result.applied)


def heartbeat_ack(result: HeartbeatAck, crash_after: float) -> pb.HeartbeatAck:
    return pb.HeartbeatAck(
        state=result.state,
        revived=result.revived,
        position=result.position,
        crash_after=crash_after,
    )


def log_ack(result: LogAck, batch_seq: int) -> pb.LogAck:
    return pb.LogAck(
        seq=batch_seq,
        position=result.position,
        applied=result.applied,
        next_step=result.next_step,
        rows=result.rows,
        warnings=result.warnings,
    )


def forked_from(link: ForkedFrom | None) -> pb.ForkedFrom | None:
    if link is None:
        return None
    return pb.ForkedFrom(
        run=link.run, step=link.step, version=link.version, immutable_id=link.immutable_id
    )


def session(started: Session, limits: Limits, web_url: str = "") -> pb.Session:
    return pb.Session(
        path=str(started.path),
        writer=started.writer,
        version=started.version,
        next_step=started.next_step,
        position=started.position,
        config_json=codec.dumps(started.config),
        forked_from=forked_from(started.forked_from),
        immutable_id=started.immutable_id,
        web_url=web_url,
        name=started.name,
        tags=started.tags,
        notes=started.notes,
        group=started.group,
        job_type=started.job_type,
        limits=codec.limits_to_proto(limits),
        resumed=started.resumed,
    )


def run_info(record: RunRecord, web_url: str = "") -> pb.RunInfo:
    return pb.RunInfo(
        notes=record.notes,
        group=record.group,
        job_type=record.job_type,
        web_url=web_url,
        path=record.path,
        entity=record.entity,
        project=record.project,
        run_id=record.run_id,
        name=record.name,
        tags=record.tags,
        state=record.state,
        version=record.version,
        last_step=record.last_step,
        created_at=record.created_at,
        updated_at=record.updated_at,
        forked_from=forked_from(record.forked_from),
        exit_code=record.exit_code,
        immutable_id=record.immutable_id,
        archived=record.archived,
    )


def runs_page(page: RunsPage, web_url: str = "") -> pb.ListRunsResponse:
    return pb.ListRunsResponse(
        runs=[run_info(r, web_url) for r in page.runs],
        next_cursor=page.next_cursor or "",
        total=page.total,
    )


def document(value: dict[str, Any]) -> pb.JsonDocument:
    return pb.JsonDocument(json=codec.dumps(value))


def versions(records: list[VersionRecord]) -> pb.VersionsResponse:
    return pb.VersionsResponse(
        versions=[
            pb.Version(
                version=v.version,
                archived=v.archived,
                rewound_to_step=v.rewound_to_step,
                started_at=v.started_at,
                archived_at=v.archived_at,
                state=v.state,
                last_step=v.last_step,
                rows=v.rows,
                summary_json=codec.dumps(v.summary),
                config_json=codec.dumps(v.config),
                immutable_id=v.immutable_id,
            )
            for v in records
        ]
    )


def artifacts(records: list[ArtifactRecord]) -> pb.ArtifactsResponse:
    return pb.ArtifactsResponse(
        artifacts=[
            pb.Artifact(
                position=a.position,
                version=a.version,
                direction=a.direction,
                name=a.name,
                type=a.type,
                digest=a.digest,
                size=a.size,
                uri=a.uri,
                recorded_at=a.recorded_at,
            )
            for a in records
        ]
    )


def lineage(tree: LineageRecord) -> pb.Lineage:
    return pb.Lineage(
        run=tree.run,
        version=tree.version,
        ancestors=[
            pb.Ancestor(run=a.run, version=a.version, step=a.step, immutable_id=a.immutable_id)
            for a in tree.ancestors
        ],
        versions=[
            pb.LineageVersion(
                version=v.version,
                archived=v.archived,
                rewound_to_step=v.rewound_to_step,
                immutable_id=v.immutable_id,
            )
            for v in tree.versions
        ],
        descendants=[_descendant(d) for d in tree.descendants],
        immutable_id=tree.immutable_id,
    )


def _descendant(node: Descendant) -> pb.Descendant:
    return pb.Descendant(
        run=node.run,
        source_version=node.source_version,
        step=node.step,
        descendants=[_descendant(child) for child in node.descendants],
    )


def event(record: EventRecord) -> pb.Event:
    return pb.Event(
        position=record.position,
        run_uuid=record.run_uuid,
        run_event=record.run_event,
        type=record.type,
        timestamp=record.timestamp,
        payload_json=codec.dumps(record.payload),
    )


def as_of(
    rows: list[dict[str, Any]], summary: dict[str, Any], config: dict[str, Any]
) -> pb.AsOfResponse:
    return pb.AsOfResponse(
        rows=[codec.row_to_proto(row) for row in rows],
        summary_json=codec.dumps(summary),
        config_json=codec.dumps(config),
    )


def progress(update: Progress) -> pb.RebuildProgress:
    return pb.RebuildProgress(
        applied=update.applied, position=update.position, target=update.target
    )


def rebuilt(last: Progress, checksums: dict[str, str], equal_to_live: bool) -> pb.RebuildProgress:
    return pb.RebuildProgress(
        applied=last.applied,
        position=last.position,
        target=last.target,
        done=True,
        checksums=checksums,
        equal_to_live=equal_to_live,
    )


# ---- history, a chunk per page of series -----------------------------------------------------


def history_chunks(pages: Iterable[SeriesPage]) -> Iterator[pb.HistoryChunk]:
    for page in pages:
        if page.series:
            yield pb.HistoryChunk(series=codec.series_to_protos(page.series), upto_step=page.upto)
