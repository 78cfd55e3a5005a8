"""A history stream resumed after a broken connection continues after its last chunk, and
stops once that chunk reached `max_step`: a resumed `min_step` past `max_step` would be
refused by the step-bounds rule."""

from __future__ import annotations

from runhistory.api import _resume_history
from runhistory.protos import runhistory_pb2 as pb


def test_a_resumed_read_continues_after_the_last_chunk() -> None:
    request = pb.HistoryRequest(path="e/p/r", keys=["loss"], min_step=0, max_step=10)
    resumed = _resume_history(request, pb.HistoryChunk(upto_step=4))
    assert resumed is not None
    assert (resumed.min_step, resumed.max_step, list(resumed.keys)) == (5, 10, ["loss"])
    unbounded = _resume_history(pb.HistoryRequest(path="e/p/r"), pb.HistoryChunk(upto_step=99))
    assert unbounded is not None and unbounded.min_step == 100


def test_a_read_that_reached_max_step_is_done() -> None:
    request = pb.HistoryRequest(path="e/p/r", min_step=0, max_step=10)
    assert _resume_history(request, pb.HistoryChunk(upto_step=10)) is None
