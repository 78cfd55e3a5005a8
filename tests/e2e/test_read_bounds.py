"""Step bounds and as-of points, refused the same way on every surface: the SDK, gRPC, the
command line and the web API, over one server on SQLite and on PostgreSQL.

- a negative `min_step` or `max_step`, or `min_step > max_step`: INVALID_ARGUMENT;
- an as-of position past the end of the log: OUT_OF_RANGE naming the last position;
- an as-of point before the run was created: OUT_OF_RANGE saying so (not "does not exist").
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from conftest import SHARED

import runhistory
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos import runhistory_pb2_grpc as pb_grpc
from runhistory.service.bootstrap import Running, start
from runhistory.service.settings import Settings

pytestmark = pytest.mark.backends(*SHARED)
PATH = "e/p/r"
BAD_BOUNDS = [
    ({"min_step": -1}, "invalid min_step -1: a step bound is an integer >= 0"),
    ({"max_step": -3}, "invalid max_step -3: a step bound is an integer >= 0"),
    ({"min_step": 5, "max_step": 2}, "min_step 5 is above max_step 2: give min_step <= max_step"),
]


@dataclass
class Served:
    running: Running
    created_at: float  # just before the run was created
    last_position: int

    @property
    def address(self) -> str:
        return self.running.address

    @property
    def web(self) -> str:
        assert self.running.web is not None
        return self.running.web.url


@pytest.fixture
def served(database: str) -> Iterator[Served]:
    running = start(Settings(db=database, require_keys=False), "127.0.0.1:0", "127.0.0.1:0")
    try:
        before = time.time()
        time.sleep(0.05)
        run = runhistory.init(entity="e", project="p", id="r", address=running.address)
        for i in range(5):
            run.log({"loss": 1.0 / (i + 1)})
        run.finish()
        yield Served(running, before, running.service.store.last_position())
    finally:
        running.stop()


def stub(served: Served) -> Any:
    return pb_grpc.RunHistoryStub(grpc.insecure_channel(served.address))


def refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        result = call()
        if hasattr(result, "__iter__"):
            list(result)
    return error.value


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runhistory.service.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def web_get(served: Served, tail: str) -> tuple[int, dict[str, Any]]:
    url = f"{served.web}/api/{PATH.replace('/r', '/runs/r')}{tail}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# ---- step bounds ---------------------------------------------------------------------------


@pytest.mark.parametrize(("bounds", "message"), BAD_BOUNDS)
def test_step_bounds_through_the_sdk(served: Served, bounds: dict, message: str) -> None:
    with runhistory.Api(address=served.address) as api:
        run = api.run(PATH)
        # W&B's scan_history: max_step excluded.
        assert [r["_step"] for r in run.scan_history(min_step=1, max_step=3)] == [1, 2]
        with pytest.raises(runhistory.InvalidArgument, match=message):
            list(run.scan_history(**bounds))
        with pytest.raises(runhistory.InvalidArgument, match=message):
            run.history_columns(**bounds)
        with pytest.raises(runhistory.InvalidArgument, match=message):
            run.as_of(position=served.last_position, **bounds)


@pytest.mark.parametrize(("bounds", "message"), BAD_BOUNDS)
def test_step_bounds_through_grpc(served: Served, bounds: dict, message: str) -> None:
    rpc = stub(served)
    request = pb.HistoryRequest(path=PATH, **bounds)
    error = refused(lambda: rpc.ReadHistory(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    as_of = pb.AsOfRequest(path=PATH, position=served.last_position, history=request)
    error = refused(lambda: rpc.AsOf(as_of))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()


def test_step_bounds_through_the_cli(served: Served) -> None:
    address = ("--address", served.address)
    for bounds, message in BAD_BOUNDS:
        flags = [part for k, v in bounds.items() for part in (f"--{k.replace('_', '-')}", str(v))]
        for command in (["history", PATH], ["as-of", PATH, "--position", "1"]):
            done = cli(*command, *address, *flags)
            assert done.returncode == 1, done
            assert f"runhistory: INVALID_ARGUMENT: {message}" in done.stderr
    done = cli("history", PATH, *address, "--min-step", "1", "--max-step", "2", "--json")
    assert [row["_step"] for row in json.loads(done.stdout)] == [1, 2]


@pytest.mark.parametrize(("bounds", "message"), BAD_BOUNDS)
def test_step_bounds_through_the_web_api(served: Served, bounds: dict, message: str) -> None:
    query = "&".join(f"{k}={v}" for k, v in bounds.items())
    status, document = web_get(served, f"/history?keys=loss&{query}")
    assert status == 400
    assert document["error"]["code"] == "INVALID_ARGUMENT"
    assert message in document["error"]["message"]


# ---- as-of points --------------------------------------------------------------------------


def past_the_end(served: Served) -> tuple[int, str]:
    position = served.last_position + 10
    return position, (
        f"position {position} is past the end of the event log: the last position is "
        f"{served.last_position}"
    )


def test_as_of_out_of_range_through_the_sdk(served: Served) -> None:
    position, message = past_the_end(served)
    with runhistory.Api(address=served.address) as api:
        run = api.run(PATH)
        assert len(run.as_of(position=served.last_position)["rows"]) == 5
        with pytest.raises(runhistory.OutOfRange, match=message):
            run.as_of(position=position)
        with pytest.raises(runhistory.OutOfRange, match=f"run {PATH} did not exist yet at 20"):
            run.as_of(time=served.created_at)
        with pytest.raises(runhistory.OutOfRange, match="did not exist yet at position 0"):
            run.as_of(position=0)


def test_as_of_out_of_range_through_grpc(served: Served) -> None:
    position, message = past_the_end(served)
    rpc = stub(served)
    error = refused(lambda: rpc.AsOf(pb.AsOfRequest(path=PATH, position=position)))
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE and message in error.details()
    error = refused(lambda: rpc.AsOf(pb.AsOfRequest(path=PATH, time=served.created_at)))
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "did not exist yet" in error.details() and "it was created at" in error.details()


def test_as_of_out_of_range_through_the_cli(served: Served) -> None:
    position, message = past_the_end(served)
    address = ("--address", served.address)
    done = cli("as-of", PATH, *address, "--position", str(position))
    assert done.returncode == 1 and f"runhistory: OUT_OF_RANGE: {message}" in done.stderr
    done = cli("as-of", PATH, *address, "--time", str(served.created_at))
    assert done.returncode == 1
    assert f"runhistory: OUT_OF_RANGE: run {PATH} did not exist yet at" in done.stderr


def test_as_of_out_of_range_through_the_web_api(served: Served) -> None:
    position, message = past_the_end(served)
    status, document = web_get(served, f"/as-of?position={position}")
    assert status == 400 and document["error"]["code"] == "OUT_OF_RANGE"
    assert document["error"]["message"] == message
    status, document = web_get(served, f"/as-of?at={served.created_at}")
    assert status == 400 and document["error"]["code"] == "OUT_OF_RANGE"
    assert "did not exist yet" in document["error"]["message"]
    status, document = web_get(served, f"/as-of?position={served.last_position}")
    assert status == 200 and document["rows"] == 5
