"""The SDK's ordered background sender: one thread per run drains the run's queue.

Consecutive log calls become one `LogBatch` (up to MAX_BATCH_CALLS calls or MAX_BATCH_BYTES),
every other write (config, summary, metric definitions, artifacts, finish) is one request, and
each request carries the session's writer token and the next sequence number. A transient
failure resends the same request with the same sequence number, which the server applies at
most once. A refused request stops the sender: the error is logged once and raised by the
next `log()` and by `finish()`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import grpc

from runhistory.client import (
    Connection,
    ConnectionFailed,
    call,
    error_from_rpc,
    is_transient,
    note_position,
)
from runhistory.domain.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    RunHistoryError,
)
from runhistory.domain.values import DEFAULT_LIMITS, row_size
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos.codec import calls_to_json

# A queued log() call: flattened data, timestamp, step, commit.
_Call = tuple[dict[str, Any], float, int | None, bool | None]

log = logging.getLogger("runhistory")

MAX_BATCH_CALLS = 1000
# Requests stay under the server's default limit of rows per request (16 MiB). The estimate
# per call (its encoded size plus 8 bytes per value) is above both the encoded size and the
# server's row-size measure.
MAX_BATCH_BYTES = DEFAULT_LIMITS.max_request_bytes - 64 * 1024
FLUSH_SECONDS = 0.05
# Above this many queued writes, log() waits for the sender (only when the server cannot
# keep up for a long time): memory stays bounded.
MAX_QUEUED = 200_000
WRITE_TIMEOUT = 60.0


# ---- the queue's items --------------------------------------------------------------------
# A log call is a plain tuple (flat values, timestamp, step, commit), the cheapest to build.


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
# After these, sending Finish is pointless: it would be refused or not arrive.
_UNREACHABLE_OR_FENCED = (ConnectionFailed, DeadlineExceeded, FailedPrecondition)
# Refusals of a batch that may concern only some of its rows.
_SPLIT_ON = (ResourceExhausted, InvalidArgument)


class Sender:
    """The background thread that sends the queue in order, one request at a time."""

    max_queued = MAX_QUEUED

    def __init__(self, connection: Connection, path: str, writer: str) -> None:
        self.connection = connection
        self.stub = connection.stub
        self.path = path
        self.writer = writer
        self.queue: deque[Any] = deque()
        self.wake = threading.Event()
        self.error: RunHistoryError | None = None
        self.warnings: list[str] = []
        self.seq = 0
        self.batches = 0
        self.unsent = 0  # log calls taken from the queue but never sent, after a refusal
        self.in_flight: tuple[list[_Call], pb.LogBatch, grpc.Future] | None = None
        self.thread = threading.Thread(
            target=self._run, name=f"runhistory-sender-{path}", daemon=True
        )
        self.thread.start()

    # ---- in the caller's thread --------------------------------------------------------

    def put(self, item: Any) -> None:
        self.queue.append(item)
        self.wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        marker = _Flush()
        self.put(marker)
        return marker.done.wait(timeout)

    def stop(self, timeout: float | None = None) -> None:
        self.put(_STOP)
        self.thread.join(timeout)

    def wait_for_room(self) -> None:
        self.wake.set()
        while (
            len(self.queue) > self.max_queued // 2 and self.error is None and self.thread.is_alive()
        ):
            time.sleep(0.001)

    # ---- in the sender's thread --------------------------------------------------------
    # One request is in flight at a time, so the server applies them in queue order; the
    # next batch is built while the previous one is in flight.

    def _run(self) -> None:
        while True:
            try:
                if not self._next():
                    return
            except Exception as error:  # a bug: one line for the user, the trace at debug level
                log.debug("runhistory sender of %s failed", self.path, exc_info=True)
                self._fail(RunHistoryError(f"internal error in the SDK: {error!r}"))

    def _next(self) -> bool:
        """Handle the next item of the queue (or wait for one); False at the end."""
        queue = self.queue
        if not queue:
            if self.in_flight is not None:
                self._guarded(self._settle)
            else:
                self.wake.wait(FLUSH_SECONDS)
                self.wake.clear()
            return True
        item = queue[0]
        if type(item) is tuple:
            if self.error is None:
                self._guarded(self._send_rows)
            else:
                queue.popleft()  # refused or unreachable: nothing more is sent
            return True
        queue.popleft()
        self._guarded(self._settle)
        if item is _STOP:
            return False
        if type(item) is _Flush:
            item.done.set()
        elif self.error is None:
            self._guarded(lambda: self._send_write(item))
        elif item.final and not isinstance(self.error, _UNREACHABLE_OR_FENCED):
            self._finish_after_refusal(item)
        return True

    def _guarded(self, send: Callable[[], None]) -> None:
        try:
            send()
        except RunHistoryError as error:
            self._fail(error)

    def _fail(self, error: RunHistoryError) -> None:
        self.in_flight = None
        self.error = error
        dropped = self.unsent + sum(1 for item in self.queue if type(item) is tuple)
        log.error(
            "runhistory: writes to %s stopped: %s: %s%s",
            self.path,
            error.code,
            error.message,
            f" ({dropped} queued log calls were not sent)" if dropped else "",
        )

    def _send_rows(self) -> None:
        queue = self.queue
        calls: list[_Call] = []
        size = 0
        while queue and len(calls) < MAX_BATCH_CALLS:
            item = queue[0]
            if type(item) is not tuple:
                break
            # Above the JSON text's length: 24 characters per number, quotes and separators.
            estimate = row_size(item[0]) + 32 * len(item[0]) + 48
            if calls and size + estimate > MAX_BATCH_BYTES:
                break
            queue.popleft()
            calls.append(item)
            size += estimate
        batch = self._batch(calls)
        try:
            self._settle()
        except RunHistoryError:
            self.unsent = len(calls)
            raise
        batch.seq = self.seq + 1
        self.in_flight = (calls, batch, self.stub.Log.future(batch, timeout=WRITE_TIMEOUT))

    def _batch(self, calls: list[_Call]) -> pb.LogBatch:
        # JSON, not typed LogCalls: a fifth of the encoding cost here and on the server.
        return pb.LogBatch(path=self.path, writer=self.writer, calls_json=calls_to_json(calls))

    def _settle(self) -> None:
        """Wait for the batch in flight to be acknowledged; resend it on a transient
        failure (same seq: the server applies it at most once)."""
        if self.in_flight is None:
            return
        calls, _batch, future = self.in_flight
        self.in_flight = None
        try:
            ack = future.result()
        except grpc.RpcError as error:
            if is_transient(error):
                self._send_calls(calls)
                return
            refused = error_from_rpc(error)
            if len(calls) > 1 and isinstance(refused, _SPLIT_ON):
                self._send_halves(calls)
                return
            raise refused from None
        self._acknowledged(ack)

    def _send_calls(self, calls: list[_Call]) -> None:
        """Send rows and wait for the acknowledgement, with retries."""
        batch = self._batch(calls)
        batch.seq = self.seq + 1
        try:
            ack = self._call("Log", batch)
        except _SPLIT_ON:
            # A refused request changed nothing. Its halves go with the same and the next
            # seq: a request over the server's size limit gets through in parts, and a row
            # the server refuses is isolated, so the rows logged before it are recorded.
            if len(calls) == 1:
                raise
            self._send_halves(calls)
            return
        self._acknowledged(ack)

    def _send_halves(self, calls: list[_Call]) -> None:
        half = len(calls) // 2
        self._send_calls(calls[:half])
        self._send_calls(calls[half:])

    def _acknowledged(self, ack: pb.LogAck) -> None:
        note_position(self.connection.address, ack.position)
        self.seq += 1
        self.batches += 1
        for warning in ack.warnings:
            log.warning("runhistory: %s", warning)
            self.warnings.append(warning)

    def _send_write(self, item: Write) -> None:
        item.request.seq = self.seq + 1
        ack = self._call(item.rpc, item.request)
        note_position(self.connection.address, ack.position)
        self.seq += 1

    def _call(self, rpc: str, request: Any) -> Any:
        return call(
            getattr(self.stub, rpc), request, timeout=WRITE_TIMEOUT, address=self.connection.address
        )

    def _finish_after_refusal(self, item: Write) -> None:
        # Rows were refused and the rest dropped: end the run as crashed rather than leave
        # it running. The refusal, not this, is what finish() raises.
        item.request.exit_code = item.request.exit_code or 1
        try:
            self._send_write(item)
        except Exception as error:
            log.debug("runhistory: finishing %s after a refusal failed: %r", self.path, error)


def fresh_error(error: RunHistoryError) -> RunHistoryError:
    """A new instance to raise, so repeated raises do not grow one traceback."""
    fresh = type(error)(error.message)
    fresh.code = error.code
    fresh.reason = error.reason
    return fresh
