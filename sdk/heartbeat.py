"""The run's heartbeat: while a run is open, tell the server its writer is alive.

A server marks a running run crashed when its writer has sent nothing for the server's crash
timeout (`runhistory serve --crash-after`, 300 s unless set). Rows and every other write
count, but a script may compute for an hour between two `log()` calls, so a daemon thread
sends a `Heartbeat` at least every 30 s, and more often when the server's timeout is short
(each answer says it). A run the server marked crashed while this process was cut off from
it (a network partition) is running again at the next heartbeat.

The heartbeat never raises into the user's script and logs at debug level only: a server
that cannot be reached is tried again at the next beat, and a refusal (the session was
superseded by a rewind or a resume elsewhere, the key was revoked) ends the heartbeat, since
the run's own writes will be refused and reported for the same reason.
"""

from __future__ import annotations

import logging
import threading

import grpc

from runhistory.client import Connection, error_from_rpc, is_transient
from runhistory.protos import runhistory_pb2 as pb

log = logging.getLogger("runhistory")

HEARTBEAT_SECONDS = 30.0  # the longest time between two heartbeats
FIRST_BEAT_SECONDS = 1.0  # after init; a run that ends sooner needs none
BEAT_TIMEOUT = 10.0  # one heartbeat's deadline: the next one follows anyway


def beat_interval(crash_after: float) -> float:
    """The time between heartbeats for a server whose crash timeout is `crash_after`
    seconds (0: it marks no crashes): a quarter of it, so a beat or two may be lost or
    late without the run being taken for crashed, and at most HEARTBEAT_SECONDS."""
    if crash_after <= 0:
        return HEARTBEAT_SECONDS
    return min(HEARTBEAT_SECONDS, max(0.1, crash_after / 4))


class Heartbeat:
    """The daemon thread that sends a run's heartbeats until `stop`."""

    def __init__(self, connection: Connection, path: str, writer: str) -> None:
        self.stub = connection.stub
        self.path = path
        self.request = pb.HeartbeatRequest(path=path, writer=writer)
        self.beats = 0  # heartbeats the server acknowledged
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=f"runhistory-heartbeat-{path}", daemon=True
        )
        self.thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """End the heartbeat; waits at most `timeout` for a beat in flight."""
        self.stopping.set()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _run(self) -> None:
        delay = FIRST_BEAT_SECONDS
        while not self.stopping.wait(delay):
            try:
                delay = self._beat()
            except grpc.RpcError as error:
                if is_transient(error):
                    log.debug("runhistory: heartbeat of %s not delivered: %s", self.path, error)
                    continue
                refused = error_from_rpc(error)
                log.debug(
                    "runhistory: heartbeats of %s stopped: %s: %s",
                    self.path,
                    refused.code,
                    refused.message,
                )
                return
            except Exception:  # the channel closed under it at finish, or a bug
                log.debug("runhistory: heartbeats of %s stopped", self.path, exc_info=True)
                return

    def _beat(self) -> float:
        """Send one heartbeat; the time until the next."""
        ack = self.stub.Heartbeat(self.request, timeout=BEAT_TIMEOUT)
        self.beats += 1
        if ack.revived:
            log.debug("runhistory: %s was marked crashed and is running again", self.path)
        return beat_interval(ack.crash_after)
