"""`runhistory sync PATH`: upload the spool of a run (or of every run in a folder) that
its process could not send: an offline run, or a run whose process ended or was killed
while the server was unreachable.

Uploading is idempotent. Every spooled write carries the sequence number it was given
when spooled and goes with the run's writer session, so the server applies it at most
once: running sync twice, or after an upload cut short, applies nothing twice. An offline
run's `Init` (made with a run ID generated client-side) is sent first and its session
saved in the spool before any write; if that Init was applied once already, the run is
resumed instead. A run whose spool holds no `finish` (its process died) is finished as
crashed. A spool whose process still runs on this machine is left to it.

It needs only the client: `pip install runhistory` runs it.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runhistory.client import CONNECTING, Connection, Credentials, call
from runhistory.domain.errors import AlreadyExists, InvalidArgument, RunHistoryError
from runhistory.protos import runhistory_pb2 as pb
from runhistory.sender import describe, raw_stubs, seq_field, session_fields
from runhistory.spool import SEGMENT_SUFFIX, SPOOL_FOLDER, Record, Spool, is_spool, process_alive

# Refusals that concern one write's data: it is skipped and the upload goes on.
DROPPED = frozenset({"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "OUT_OF_RANGE", "ALREADY_EXISTS"})

Progress = Callable[[int, int], None]


@dataclass
class Uploaded:
    """What one spool's upload did."""

    folder: Path
    path: str
    sent: int = 0  # writes sent (the server applied each at most once)
    warnings: tuple[str, ...] = ()
    note: str = ""  # "already uploaded", "still written by process N", ...


def spool_folders(path: str | Path) -> list[Path]:
    """`path` if it is a run's spool folder, else the spool folders it holds (or its
    `runhistory/` folder holds)."""
    folder = Path(path).expanduser()
    if is_spool(folder):
        return [folder]
    if not folder.is_dir():
        raise InvalidArgument(
            f"{folder}: no such folder (give a run's spool folder or a folder holding several)"
        )
    found = sorted(child for child in folder.iterdir() if is_spool(child))
    if not found and (folder / SPOOL_FOLDER).is_dir():  # the `dir` given to init()
        found = sorted(child for child in (folder / SPOOL_FOLDER).iterdir() if is_spool(child))
    if not found:
        raise InvalidArgument(
            f"{folder} holds no runhistory spool: a run's spool folder holds session.json"
        )
    return found


def sync_folder(
    folder: Path,
    address: str | None = None,
    credentials: Credentials | None = None,
    progress: Progress | None = None,
) -> Uploaded:
    """Upload one run's spool; raises the error that stopped it (what was acknowledged
    before is noted, so the next sync goes on from there)."""
    spool = Spool.open(folder)
    meta = spool.meta
    result = Uploaded(folder, meta.get("path", "?"))
    if meta.get("synced"):
        result.note = "already uploaded"
        return result
    if process_alive(meta.get("host", ""), int(meta.get("pid", 0))):
        result.note = (
            f"still written by process {meta['pid']}, which sends it itself; sync it once "
            "that process ended"
        )
        return result
    # The server named now, else the one the run was logged to.
    address = address or os.environ.get("RUNHISTORY_ADDRESS") or meta.get("address")
    connection = Connection(address, credentials or Credentials.resolve())
    try:
        if not meta.get("writer"):
            _init_offline(spool, connection)
            result.path = spool.meta["path"]
        records = list(spool.records())
        last = max([spool.acked, *(record.seq for record in records)])
        if not meta.get("finished") and not any(record.rpc == "Finish" for record in records):
            # Its process died before finish(): the run ended, as crashed.
            finish = pb.FinishRequest(exit_code=1).SerializeToString()
            records.append(Record(last + 1, "Finish", finish))
        stubs = raw_stubs(connection.channel)
        session = session_fields(spool.meta["path"], spool.meta["writer"])
        warnings = []
        for done, record in enumerate(records, 1):
            try:
                call(
                    stubs[record.rpc],
                    record.payload + session + seq_field(record.seq),
                    address=connection.address,
                )
            except RunHistoryError as refused:
                if refused.code not in DROPPED:
                    raise
                warnings.append(
                    f"the server refused {describe(record)} ({refused.code}: {refused.message}); "
                    "it was skipped"
                )
            spool.acknowledge(record.seq)
            result.sent += 1
            if progress is not None:
                progress(done, len(records))
        spool.save_meta(synced=True, finished=True)
        for segment in folder.glob(f"*{SEGMENT_SUFFIX}"):
            segment.unlink()
        result.warnings = tuple(warnings)
        return result
    finally:
        connection.close()


def _init_offline(spool: Spool, connection: Connection) -> None:
    """Send an offline run's Init and save its session before any write is sent."""
    try:
        request = pb.InitRequest.FromString(base64.b64decode(spool.meta["init"]))
    except (KeyError, ValueError) as error:
        raise InvalidArgument(
            f"{spool.folder}: the offline run's init is unreadable: {error}"
        ) from None
    try:
        session = call(
            connection.stub.Init, request, retries=CONNECTING, address=connection.address
        )
    except AlreadyExists:
        # A sync before this one created it and stopped before saving the session: no
        # write was sent under that session, so a new one takes over.
        request.resume = "must"
        session = call(
            connection.stub.Init, request, retries=CONNECTING, address=connection.address
        )
    spool.save_meta(path=session.path, writer=session.writer, address=connection.address)


__all__ = ["Uploaded", "spool_folders", "sync_folder"]
