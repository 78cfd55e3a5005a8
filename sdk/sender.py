"""The SDK's ordered background sender: one thread per run turns the run's queue into
requests, spools them, and sends them in order.

Consecutive log calls become one `LogBatch` (up to MAX_BATCH_CALLS calls, or the bytes the
server allows per request) at a batch boundary: when the sender is idle, when a batch is
full, or FLUSH_SECONDS after its first call. Every other write (config, summary, metric
definitions, artifacts, finish) is one request. Each request takes the next sequence
number and is appended to the run's spool (sdk/spool.py, fsynced) before it is sent, one at
a time, with the session's writer token; it leaves the spool when the server acknowledges
it. So `log()` never waits for the server:

- unreachable (or failing) server: the request is sent again, with the same sequence
  number (the server applies it at most once), after a backoff, for as long as the process
  lives; the queue keeps going into the spool meanwhile.
- refused data: rows are checked against the server's limits before they are spooled, so
  a bad row is dropped alone, client-side. When the server's limits changed since (a spool
  synced to another server), a batch asks the server to drop the calls it refuses
  (`drop_refused_calls`) and apply the rest, each drop a warning (`run.warnings`). Any
  other refused request (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...) is dropped with a
  warning, and the rest goes on.
- lost right to write (UNAUTHENTICATED, PERMISSION_DENIED, FAILED_PRECONDITION such as a
  session fenced by a rewind, NOT_FOUND): sending stops, the error is logged once, and
  `flush()` / `finish()` raise it; what was not sent stays in the spool. After a key's
  refusal the session itself still holds, so the run's writes go on into the spool, for
  `runhistory sync` with a valid key.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from typing import Any

import grpc

from runhistory.client import (
    FIRST_BACKOFF,
    MAX_BACKOFF,
    Connection,
    error_from_rpc,
    is_transient,
    note_position,
)
from runhistory.domain.errors import ResourceExhausted, RunHistoryError
from runhistory.domain.values import Limits, check_row_size, row_size
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos.codec import calls_to_json
from runhistory.spool import RPCS, Record, Spool

# A queued log() call: flattened data, timestamp, step, commit.
_Call = tuple[dict[str, Any], float, int | None, bool | None]

log = logging.getLogger("runhistory")

MAX_BATCH_CALLS = 1000
FLUSH_SECONDS = 0.05
# Above this many queued writes, log() waits for the sender: it only happens when the
# sender's own work (encoding, spooling) cannot keep up, never because of the server.
MAX_QUEUED = 200_000
WRITE_TIMEOUT = 60.0
# Spooled requests kept in memory as well; past this, they are read back from the spool.
MEMORY_BYTES = 64 * 1024 * 1024
# Warnings (dropped data, ignored steps) printed per run; the rest go to run.warnings only.
PRINTED_WARNINGS = 10

# A refusal of these ends the session's right to write: nothing more can be sent.
STOP_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
    }
)
# After these the session still holds: writes go on into the spool, for a later sync.
KEY_CODES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})
# A refusal of these concerns the request's data only: it is dropped. Any other status
# (unreachable, deadline, ABORTED, INTERNAL, ...) is retried, and so is a full disk on the
# server (RESOURCE_EXHAUSTED with reason DISK_FULL: about the server, not the request).
DROP_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)
RESPONSES = {"Log": pb.LogAck}


class Write:
    """A request other than rows: sent alone, in queue order, with the next seq."""

    __slots__ = ("final", "request", "rpc", "what")

    def __init__(self, rpc: str, request: Any, what: str, final: bool = False) -> None:
        self.rpc = rpc
        self.request = request
        self.what = what
        self.final = final


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


def session_fields(path: str, writer: str) -> bytes:
    """Fields 1 and 2 (path, writer) of every write request, to append to a record."""
    return pb.LogBatch(path=path, writer=writer).SerializeToString()


def seq_field(seq: int) -> bytes:
    """Field 3 (seq) of every write request."""
    return pb.LogBatch(seq=seq).SerializeToString()


def raw_stubs(channel: grpc.Channel) -> dict[str, Any]:
    """The write RPCs taking a record's bytes as they are (no message to build again)."""
    return {
        rpc: channel.unary_unary(
            f"/runhistory.v1.RunHistory/{rpc}",
            request_serializer=None,
            response_deserializer=RESPONSES.get(rpc, pb.Ack).FromString,
        )
        for rpc in RPCS
    }


def describe(record: Record) -> str:
    if record.rpc == "Log":
        return f"a batch of {record.calls} log calls"
    return {
        "UpdateConfig": "a config update",
        "SetSummary": "a summary update",
        "DefineMetric": "a metric definition",
        "RecordArtifact": "an artifact record",
        "Finish": "the finish",
        "UpdateDetails": "an update of the run's name, tags, notes, group or job type",
    }[record.rpc]


class Sender:
    """The background thread that spools the queue and sends it in order."""

    max_queued = MAX_QUEUED

    def __init__(
        self,
        connection: Connection | None,
        path: str,
        writer: str,
        limits: Limits,
        spool: Spool | None,
        next_step: int = 0,
    ) -> None:
        self.connection = connection  # None: offline, the spool only
        self.path = path
        self.writer = writer
        self.limits = limits
        self.spool = spool
        self.queue: deque[Any] = deque()
        self.wake = threading.Event()
        self.warnings: list[str] = []
        self.stopped: RunHistoryError | None = None  # the right to write was lost
        self.spooling = True  # False once stopped for good: writes are then dropped
        self.seq = 0  # the last sequence number given to a request
        self.acked = 0  # the last one acknowledged (or dropped)
        self.batches = 0
        self.pending: deque[Record] = deque()  # spooled, not acknowledged, in memory
        self.pending_bytes = 0
        self.spilled = False  # requests after `pending` are in the spool only
        self.in_flight: tuple[Record, grpc.Future[Any]] | None = None
        self.outage_since: float | None = None
        self.retry_at = 0.0
        self.delay = FIRST_BACKOFF
        self.flushes: list[tuple[int, _Flush]] = []
        self.stopping = False
        self.put_count = 0  # items other than log calls put in the queue, and taken out
        self.taken_count = 0
        self.batch_calls = min(MAX_BATCH_CALLS, limits.max_calls_per_batch)
        # The estimate per call (below) is above both the encoded size and the server's
        # measure; a margin stays for the request's framing.
        self.batch_bytes = limits.max_request_bytes - min(64 * 1024, limits.max_request_bytes // 8)
        # The server's step rules, mirrored to measure merged rows before sending.
        self.step = next_step
        self.row: dict[str, Any] | None = None
        self.row_bound = 0
        if connection is not None:
            self.stubs = raw_stubs(connection.channel)
            self.session = session_fields(path, writer)
        self.thread = threading.Thread(
            target=self._run, name=f"runhistory-sender-{path}", daemon=True
        )
        self.thread.start()

    @property
    def error(self) -> RunHistoryError | None:
        return self.stopped

    # ---- in the caller's thread --------------------------------------------------------

    def put(self, item: Any) -> None:
        self.queue.append(item)
        self.put_count += 1
        self.wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every write so far is acknowledged, or on disk in the spool while the
        server cannot be reached (or the run is offline)."""
        marker = _Flush()
        self.put(marker)
        return marker.done.wait(timeout)

    def stop(self, timeout: float | None = None) -> bool:
        """Let the thread end once every write is acknowledged; False if still sending
        after `timeout`."""
        self.put(_STOP)
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def wait_for_room(self) -> None:
        self.wake.set()
        while len(self.queue) > self.max_queued // 2 and self.thread.is_alive():
            time.sleep(0.001)

    def unsent(self) -> int:
        """Requests spooled and not acknowledged."""
        return max(0, self.seq - self.acked)

    # ---- in the sender's thread --------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    if not self._step():
                        break
                except Exception as error:  # a bug: one line for the user, the trace at debug
                    log.debug("runhistory sender of %s failed", self.path, exc_info=True)
                    self._stop_sending(RunHistoryError(f"internal error in the SDK: {error!r}"))
        finally:
            self._close()

    def _step(self) -> bool:
        """One round: settle the answer in flight, spool the next request, send the next
        one; False when the thread's work is done."""
        self.wake.clear()
        progressed = False
        if self.in_flight is not None and self.in_flight[1].done():
            self._settle()
            progressed = True
        if self._batch_boundary():
            self._take()
            progressed = True
        if (
            self.in_flight is None
            and self.connection is not None
            and self.stopped is None
            and time.monotonic() >= self.retry_at
        ):
            record = self._next_unsent()
            if record is not None:
                self._send(record)
                progressed = True
        self._release_flushes()
        if self.stopping and not self.queue and self._drained():
            return False
        if not progressed:
            wait = FLUSH_SECONDS
            if self.outage_since is not None and self.in_flight is None:
                wait = max(0.001, min(wait, self.retry_at - time.monotonic()))
            self.wake.wait(wait)
        return True

    def _drained(self) -> bool:
        if self.connection is None or self.stopped is not None:
            return True
        return self.in_flight is None and not self.pending and not self.spilled

    def _batch_boundary(self) -> bool:
        queue = self.queue
        if not queue:
            return False
        head = queue[0]
        if type(head) is not tuple or self.put_count > self.taken_count:
            return True  # a write or a flush waits behind (or is) the head
        if len(queue) >= self.batch_calls:
            return True
        idle = self.in_flight is None and not self.pending and not self.spilled
        if idle and self.connection is not None and self.outage_since is None:
            return True  # send at once
        queued_at: float = head[1]  # a log call: (data, timestamp, step, commit)
        return time.time() - queued_at >= FLUSH_SECONDS

    def _take(self) -> None:
        """Turn the head of the queue into one request and spool it (or handle a marker)."""
        queue = self.queue
        item = queue[0]
        if type(item) is tuple:
            calls = self._take_calls()
            if not self.spooling:
                return
            record = Record(
                self.seq + 1,
                "Log",
                pb.LogBatch(
                    calls_json=calls_to_json(calls), drop_refused_calls=True
                ).SerializeToString(),
                len(calls),
            )
        else:
            queue.popleft()
            self.taken_count += 1
            if type(item) is _Flush:
                self.flushes.append((self.seq, item))
                return
            if item is _STOP:
                self.stopping = True
                return
            if not self.spooling:
                return
            record = Record(self.seq + 1, item.rpc, item.request.SerializeToString())
        self.seq = record.seq
        self._spool(record)

    def _take_calls(self) -> list[_Call]:
        queue = self.queue
        calls: list[_Call] = []
        size = 0
        limit, most = self.batch_bytes, self.batch_calls
        while queue and len(calls) < most:
            item = queue[0]
            if type(item) is not tuple:
                break
            row_bytes = row_size(item[0])
            # Above the JSON text's length: 24 characters per number, quotes and separators.
            estimate = row_bytes + 32 * len(item[0]) + 48
            if calls and size + estimate > limit:
                break
            queue.popleft()
            calls.append(self._checked(item, row_bytes))
            size += estimate
        return calls

    def _checked(self, call: _Call, size: int) -> _Call:
        """The call, or, if the row it merges into is over the server's limits, the call
        without its data (its step and commit kept, so steps go on as `run.step` said)."""
        data, timestamp, step, commit = call
        target = self.step if step is None else step
        if target < self.step:
            return call  # the server ignores it, with a warning of its own
        if target > self.step:
            self.row, self.row_bound, self.step = None, 0, target
        merged = data if self.row is None else {**self.row, **data}
        bound = self.row_bound + size
        limits = self.limits
        if bound > limits.max_row_bytes or len(merged) > limits.max_keys_per_row:
            try:
                check_row_size(target, merged, limits)
            except ResourceExhausted as refused:
                self.dropped(f"a log call merging into the {refused.message}")
                data, merged, bound = {}, self.row or {}, self.row_bound
                call = (data, timestamp, step, commit)
        if (commit if step is not None else commit is not False) is True:
            self.row, self.row_bound, self.step = None, 0, target + 1
        else:
            self.row, self.row_bound = merged, bound
        return call

    def dropped(self, what: str) -> None:
        """Report data that was dropped."""
        self.warn(f"{what}; it was dropped and logging goes on")

    def warn(self, message: str) -> None:
        """A warning of the run: in run.warnings, and printed (the first ones)."""
        self.warnings.append(message)
        count = len(self.warnings)
        if count <= PRINTED_WARNINGS:
            log.warning("runhistory: %s", message)
        if count == PRINTED_WARNINGS:
            log.warning("runhistory: further warnings of this run are listed in run.warnings only")

    def _spool(self, record: Record) -> None:
        if self.spool is not None:
            try:
                self.spool.append(record)
            except OSError as error:
                log.warning(
                    "runhistory: cannot write the spool at %s (%s); writes the server has not "
                    "acknowledged are kept in memory only",
                    self.spool.folder,
                    error,
                )
                self.spool = None
        if self.connection is None:
            self.acked = record.seq  # offline: on disk is all there is to do
            return
        if self.stopped is not None:
            return  # kept for `runhistory sync` only
        if self.spilled or (self.spool is not None and self.pending_bytes > MEMORY_BYTES):
            self.spilled = True  # read back from the spool when the ones in memory are sent
            return
        self.pending.append(record)
        self.pending_bytes += len(record.payload)

    def _next_unsent(self) -> Record | None:
        if not self.pending and self.spilled and self.spool is not None:
            for record in self.spool.records(after=self.acked):
                self.pending.append(record)
                self.pending_bytes += len(record.payload)
                if self.pending_bytes > MEMORY_BYTES // 2:
                    break
            else:
                self.spilled = False
        return self.pending[0] if self.pending else None

    def _send(self, record: Record) -> None:
        request = record.payload + self.session + seq_field(record.seq)
        future = self.stubs[record.rpc].future(request, timeout=WRITE_TIMEOUT)
        self.in_flight = (record, future)
        future.add_done_callback(lambda _: self.wake.set())

    def _settle(self) -> None:
        assert self.in_flight is not None
        record, future = self.in_flight
        self.in_flight = None
        try:
            ack = future.result()
        except grpc.RpcError as error:
            self._refused(record, error)
            return
        assert self.connection is not None
        note_position(self.connection.address, ack.position)
        if record.rpc == "Log":
            self.batches += 1
            for warning in ack.warnings:
                self.warn(warning)
        if self.outage_since is not None:
            log.warning(
                "runhistory: the server is back after %.0f s; sending the %d writes spooled "
                "meanwhile",
                time.monotonic() - self.outage_since,
                self.unsent(),
            )
            self.outage_since = None
            self.delay = FIRST_BACKOFF
        self._done(record)

    def _done(self, record: Record) -> None:
        """The record needs no more sending: acknowledged, or dropped."""
        if self.pending and self.pending[0] is record:
            self.pending.popleft()
            self.pending_bytes -= len(record.payload)
        self.acked = record.seq
        if self.spool is not None:
            self.spool.acknowledge(record.seq)

    def _refused(self, record: Record, error: grpc.RpcError) -> None:
        code = error.code()
        if code in STOP_CODES and not is_transient(error):
            self._stop_sending(error_from_rpc(error))
        elif code in DROP_CODES and not is_transient(error):
            refusal = error_from_rpc(error)
            self.dropped(
                f"the server refused {describe(record)} ({refusal.code}: {refusal.message})"
            )
            self._done(record)
        else:  # unreachable or failing: the same request again, later
            if self.outage_since is None:
                self.outage_since = time.monotonic()
                where = f"the spool at {self.spool.folder}" if self.spool else "memory"
                full = code == grpc.StatusCode.RESOURCE_EXHAUSTED  # the disk (is_transient)
                trouble = "cannot write to" if full else "cannot reach"
                log.warning(
                    "runhistory: %s the server at %s (%s: %s); logging goes on into "
                    "%s, sent when the server is back",
                    trouble,
                    self.connection.address if self.connection else "",
                    code.name,
                    error.details(),
                    where,
                )
            self.retry_at = time.monotonic() + self.delay * (0.5 + random.random() / 2)
            self.delay = min(self.delay * 2, MAX_BACKOFF)

    def _stop_sending(self, error: RunHistoryError) -> None:
        self.in_flight = None
        self.stopped = error
        self.spooling = error.code in KEY_CODES and self.spool is not None
        kept = ""
        if self.spooling:
            folder = self.spool.folder if self.spool is not None else ""
            kept = (
                f" (the run's writes go on into {folder}: upload them with a valid key, "
                f"runhistory sync {folder})"
            )
        elif self.unsent() and self.spool is not None:
            kept = f" ({self.unsent()} unsent writes are kept in {self.spool.folder})"
        log.error(
            "runhistory: writes to %s stopped: %s: %s%s", self.path, error.code, error.message, kept
        )

    def _release_flushes(self) -> None:
        if not self.flushes:
            return
        durable = self.spool is not None and (
            self.outage_since is not None or self.connection is None
        )
        waiting = []
        for target, marker in self.flushes:
            if self.acked >= target or self.stopped is not None or durable:
                marker.done.set()
            else:
                waiting.append((target, marker))
        self.flushes = waiting

    def _close(self) -> None:
        for _, marker in self.flushes:
            marker.done.set()
        spool = self.spool
        if spool is None:
            return
        if self.connection is not None and self.stopped is None and self._drained():
            spool.remove()
        else:
            try:
                spool.release()
            except OSError as error:
                log.warning("runhistory: cannot update the spool at %s: %s", spool.folder, error)


def fresh_error(error: RunHistoryError) -> RunHistoryError:
    """A new instance to raise, so repeated raises do not grow one traceback."""
    fresh = type(error)(error.message)
    fresh.code = error.code
    fresh.reason = error.reason
    return fresh
