"""The local spool: a run's writes that the server has not acknowledged, on disk.

One folder per run session in `DIR/runhistory/`, as W&B's `DIR/wandb/` (`DIR`: the `init`
argument `dir`, else $RUNHISTORY_DIR, else the working folder), named
`run-YYYYmmdd_HHMMSS-RUN_ID`:

- `session.json`: the run's path, the writer session (empty until an offline run's `Init`
  ran), the server's address, the offline `InitRequest`, the writing process (host, pid),
  and `synced` once `runhistory sync` uploaded everything.
- `NNNNNNNN.spool`: segments of records, appended at batch boundaries and fsynced. A
  record is one request as the server receives it, without its path, writer and sequence
  number (fields 1, 2 and 3 of every write request, appended when it is sent).
- `acked`: the highest sequence number the server acknowledged. It only saves work: a
  record sent again carries its own sequence number, which the server applies at most once.

Segments whose records are all acknowledged are deleted; a run whose writes were all
acknowledged removes its folder (and `DIR/runhistory/` if that leaves it empty).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SESSION_FILE = "session.json"
ACKED_FILE = "acked"
SEGMENT_SUFFIX = ".spool"
SEGMENT_BYTES = 8 * 1024 * 1024
SPOOL_FOLDER = "runhistory"
# The write RPCs a record can hold, by index. Append only: spools on disk use the indexes.
RPCS = (
    "Log",
    "UpdateConfig",
    "SetSummary",
    "DefineMetric",
    "RecordArtifact",
    "Finish",
    "UpdateDetails",
)
_RPC_INDEX = {name: index for index, name in enumerate(RPCS)}
# payload length, CRC-32 of the payload, sequence number, RPC index, log calls held
_HEADER = struct.Struct("<IIqBI")


@dataclass(slots=True)
class Record:
    """One write: `payload` is its request serialized without path, writer and seq."""

    seq: int
    rpc: str
    payload: bytes
    calls: int = 0  # log calls in a Log record


def spool_root(dir: str | os.PathLike[str] | None = None) -> Path:
    """Where runs' spool folders go: `runhistory/` in `dir`, else in $RUNHISTORY_DIR, else
    in the working folder."""
    chosen = dir if dir is not None else os.environ.get("RUNHISTORY_DIR") or "."
    return Path(chosen).expanduser().absolute() / SPOOL_FOLDER


def is_spool(folder: Path) -> bool:
    return (folder / SESSION_FILE).is_file()


def process_alive(host: str, pid: int) -> bool:
    """Whether the process that wrote a spool still runs (known on its own host only)."""
    if not pid or host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class Spool:
    """A run's spool folder, written by one process at a time (the run's sender, or
    `runhistory sync` after it)."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.folder = folder
        self.meta = meta
        self.acked = _read_acked(folder)
        # (first seq, last seq, path) of each segment, oldest first
        self.segments: list[list[Any]] = []
        self._file: Any = None

    @classmethod
    def create(cls, root: Path, run_id: str, meta: dict[str, Any]) -> Spool:
        root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d_%H%M%S")
        for attempt in range(1000):
            name = f"run-{stamp}-{run_id}" + (f"-{attempt}" if attempt else "")
            folder = root / name
            try:
                folder.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"no free spool folder name for run {run_id} in {root}")
        meta = {"format": 1, "host": socket.gethostname(), "pid": os.getpid(), **meta}
        spool = cls(folder, meta)
        spool.save_meta()
        _fsync_dir(root)
        return spool

    @classmethod
    def open(cls, folder: Path) -> Spool:
        """An existing spool folder, for uploading; its segments as they are on disk."""
        try:
            meta = json.loads((folder / SESSION_FILE).read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{folder} is not a readable runhistory spool: {error}") from None
        spool = cls(folder, meta)
        spool.segments = [[None, None, path] for path in _segment_paths(folder)]
        return spool

    def save_meta(self, **changes: Any) -> None:
        """Replace session.json atomically (written, fsynced, renamed)."""
        self.meta.update(changes)
        _write_atomically(self.folder / SESSION_FILE, json.dumps(self.meta, indent=1).encode())

    # ---- writing ----------------------------------------------------------------------

    def append(self, record: Record) -> None:
        """Append a record and fsync it: on disk when this returns (OSError otherwise)."""
        if self._file is None or self._file.tell() >= SEGMENT_BYTES:
            self._next_segment(record.seq)
        header = _HEADER.pack(
            len(record.payload),
            zlib.crc32(record.payload),
            record.seq,
            _RPC_INDEX[record.rpc],
            record.calls,
        )
        self._file.write(header + record.payload)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.segments[-1][1] = record.seq

    def _next_segment(self, first_seq: int) -> None:
        if self._file is not None:
            self._file.close()
        path = self.folder / f"{first_seq:020d}{SEGMENT_SUFFIX}"
        self._file = path.open("ab")
        self.segments.append([first_seq, first_seq, path])
        _fsync_dir(self.folder)

    def acknowledge(self, seq: int) -> None:
        """Everything up to `seq` is acknowledged (or dropped): delete the segments that
        hold nothing else, and note it."""
        self.acked = max(self.acked, seq)
        while len(self.segments) > 1 and self.segments[0][1] is not None:
            if self.segments[0][1] > self.acked:
                break
            self.segments.pop(0)[2].unlink(missing_ok=True)
        (self.folder / ACKED_FILE).write_text(str(self.acked))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def release(self) -> None:
        """No process writes this spool any more: `runhistory sync` may take it."""
        self.close()
        self.save_meta(pid=0)

    def remove(self) -> None:
        """Delete the folder (everything was acknowledged), and `dir` if it is left empty."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # other runs' folders, or the user's files
            self.folder.parent.rmdir()

    # ---- reading ----------------------------------------------------------------------

    def records(self, after: int | None = None) -> Iterator[Record]:
        """The records with a sequence number above `after` (default: the acknowledged),
        in order. A record cut short (the process died while writing it) ends a segment:
        it was never fsynced, so never reported as written."""
        after = self.acked if after is None else after
        for path in [segment[2] for segment in self.segments]:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, crc, seq, rpc, calls = _HEADER.unpack_from(data, offset)
                start = offset + _HEADER.size
                payload = data[start : start + length]
                if len(payload) < length or zlib.crc32(payload) != crc or rpc >= len(RPCS):
                    break
                offset = start + length
                if seq > after:
                    yield Record(seq, RPCS[rpc], payload, calls)

    def last_seq(self) -> int:
        """The highest sequence number spooled (or acknowledged)."""
        last = self.acked
        for record in self.records(after=self.acked):
            last = max(last, record.seq)
        return last


def _segment_paths(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{SEGMENT_SUFFIX}"))


def _read_acked(folder: Path) -> int:
    try:
        return int((folder / ACKED_FILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # not every file system syncs folders
    finally:
        os.close(descriptor)


__all__ = ["RPCS", "Record", "Spool", "is_spool", "process_alive", "spool_root"]
