"""Fuzzing a live server: random and mutated requests to every RPC, with every kind of key.

The server runs as its own process (`runhistory serve`, keys required). Each case is a
request built from the RPC's message descriptor with random field values, sometimes
mutated at the byte level, sent with a random credential. Whatever happens, the server
must never answer INTERNAL or UNKNOWN, never die, and the event log must only grow through
acknowledged writes: after a refused request it holds exactly what it held before.

RUNHISTORY_FUZZ_EXAMPLES sets the number of cases (default 300).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rpc_requests import requests_for

from runhistory.domain.identity import RunPath
from runhistory.domain.values import LogCall
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos import runhistory_pb2_grpc as pb_grpc
from runhistory.protos.codec import calls_to_json
from runhistory.service.auth import KeyStore, Role
from runhistory.service.runs import RunService
from runhistory.service.settings import Settings

SERVICE = pb.DESCRIPTOR.services_by_name["RunHistory"]
EXAMPLES = int(os.environ.get("RUNHISTORY_FUZZ_EXAMPLES", "300"))
CALL_TIMEOUT = 2.0
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

# Strings that mean something to the server, so that some cases get past validation.
MEANINGFUL = [
    "alice",
    "bob",
    "p",
    "r1",
    "alice/p/r1",
    "alice/p/r2",
    "bob/p/b1",
    "alice/p/r1?_step=2",
    "r1?_step=1",
    "alice/p/r1?_step=99999999999999999999",
    "produced",
    "used",
    "min",
    "max,mean",
    "loss",
    '{"lr": 0.1}',
    '{"a": {"b": [1, 2, {"c": null}]}}',
    "[]",
    "NaN",
    "'; DROP TABLE rh_runs; --",
    "../../etc/passwd",
    "\x00",
    "🙂" * 3,
]
CALLS = [
    calls_to_json([({"loss": 0.5}, 1.0, None, None)]),
    calls_to_json([({"loss": 0.5, "nested": {"x": 1}}, 1.0, 3, True)]),
    calls_to_json([({"s": "text"}, 1.0, None, False), ({}, 2.0, None, None)]),
    b'[[{"x": NaN}, 1.0, null, null]]',
    b"[[{}, 1e400, -1, null]]",
    b'[[{"_step": 1}, 1.0, null, null]]',
]

strings = st.one_of(st.sampled_from(MEANINGFUL), st.text(max_size=30))
blobs = st.one_of(st.sampled_from(CALLS), st.binary(max_size=80))
ints = st.one_of(st.integers(-3, 12), st.integers(-(2**63), 2**63 - 1))
SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_STRING: strings,
    FieldDescriptor.TYPE_BYTES: blobs,
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_DOUBLE: st.floats(),
    FieldDescriptor.TYPE_FLOAT: st.floats(width=32),
    FieldDescriptor.TYPE_INT64: ints,
    FieldDescriptor.TYPE_SINT64: ints,
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_ENUM: st.integers(0, 4),
}


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    """A message of this type with a random subset of its fields set to random values."""
    message = GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field, value_field = field.message_type.fields
            for _ in range(draw(st.integers(0, 3))):
                key = draw(SCALARS[key_field.type])
                target = getattr(message, field.name)
                if value_field.message_type is not None:
                    target[key].CopyFrom(draw(messages(value_field.message_type, depth + 1)))
                else:
                    target[key] = draw(SCALARS[value_field.type])
        elif field.message_type is not None:
            if depth >= 3:
                continue
            count = draw(st.integers(0, 3)) if _repeated(field) else 1
            for _ in range(count):
                value = draw(messages(field.message_type, depth + 1))
                if _repeated(field):
                    getattr(message, field.name).add().CopyFrom(value)
                else:
                    getattr(message, field.name).CopyFrom(value)
        elif _repeated(field):
            getattr(message, field.name).extend(draw(st.lists(SCALARS[field.type], max_size=3)))
        else:
            setattr(message, field.name, draw(SCALARS[field.type]))
    return message


def _repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """Byte-level damage: flips, cuts and insertions."""
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and buffer:
            i = draw(st.integers(0, len(buffer) - 1))
            buffer[i] = draw(st.integers(0, 255))
        elif action == "cut" and buffer:
            del buffer[draw(st.integers(0, len(buffer) - 1)) :]
        else:
            i = draw(st.integers(0, len(buffer)))
            buffer[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(buffer)


@st.composite
def cases(draw: st.DrawFn, credentials: list[tuple[tuple[str, str], ...]]) -> dict[str, Any]:
    """A request from scratch, or a valid one with a few fields replaced; either may then be
    damaged at the byte level."""
    method = draw(st.sampled_from(list(SERVICE.methods)))
    count = draw(st.integers(1, 3)) if method.client_streaming else 1
    payloads = []
    for _ in range(count):
        message = draw(messages(method.input_type))
        if draw(st.booleans()):
            valid = requests_for(draw(st.sampled_from(RUNS)))[method.name]
            names = [f.name for f in method.input_type.fields]
            replaced = draw(st.sets(st.sampled_from(names), max_size=1)) if names else set()
            message = _overlay(valid, message, replaced) if replaced else valid
        data = message.SerializeToString()
        if draw(st.integers(0, 3)) == 0:
            data = draw(mutated(data))
        payloads.append(data)
    return {"method": method, "payloads": payloads, "metadata": draw(st.sampled_from(credentials))}


RUNS = ["alice/p/r1", "alice/p/r2", "bob/p/b1"]


def _overlay(target: Message, source: Message, names: set[str]) -> Message:
    """`target` with the fields named replaced by `source`'s (cleared where unset there)."""
    for name in names:
        target.ClearField(name)
    for field, value in source.ListFields():
        if field.name not in names:
            continue
        if field.is_repeated:
            getattr(target, field.name).MergeFrom(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)
    return target


# ---- the server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    db = str(tmp_path_factory.mktemp("fuzz") / "fuzz.db")
    with RunService(Settings(db=db)) as service:
        store = KeyStore(service.db)
        keys = {
            "admin": store.create("alice", Role.ADMIN)[1],
            "writer": store.create("alice", Role.WRITER)[1],
            "reader": store.create("alice", Role.READER)[1],
            "bob": store.create("bob", Role.WRITER)[1],
            "revoked": store.create("alice", Role.WRITER)[1],
        }
        store.revoke(keys["revoked"].split("_")[1])
        service.init("alice", "p", "r1")
        service.log(
            RunPath("alice", "p", "r1"),
            [LogCall({"loss": float(i)}, 1.0 + i, None, None) for i in range(5)],
        )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNHISTORY_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runhistory.service.cli",
            "serve",
            "--db",
            db,
            "--address",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    address = f"127.0.0.1:{port}"
    try:
        wait_serving(address, process)
        with grpc.insecure_channel(address) as channel:
            yield {"channel": channel, "process": process, "keys": keys, "address": address}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def wait_serving(address: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.1)
    raise AssertionError(f"the server at {address} did not start")


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def send(channel: grpc.Channel, case: dict[str, Any]) -> tuple[grpc.StatusCode, str, int]:
    """Send raw bytes; return the final status, its details and how many responses came."""
    method = case["method"]
    name = f"/{SERVICE.full_name}/{method.name}"
    metadata = case["metadata"]
    received = 0
    try:
        if method.client_streaming:
            call = channel.stream_stream(name)(
                iter(case["payloads"]), metadata=metadata, timeout=CALL_TIMEOUT
            )
        elif method.server_streaming:
            call = channel.unary_stream(name)(
                case["payloads"][0], metadata=metadata, timeout=CALL_TIMEOUT
            )
        else:
            channel.unary_unary(name)(case["payloads"][0], metadata=metadata, timeout=CALL_TIMEOUT)
            return grpc.StatusCode.OK, "", 1
        for _ in call:
            received += 1
    except grpc.RpcError as error:
        return error.code(), error.details() or "", received
    return grpc.StatusCode.OK, "", received


def event_positions(channel: grpc.Channel, admin: str, after: int) -> list[int]:
    stub = pb_grpc.RunHistoryStub(channel)
    return [
        e.position
        for e in stub.ReadEvents(pb.EventsRequest(start=after), metadata=bearer(admin), timeout=30)
    ]


def test_fuzzed_requests_never_break_the_server(served: dict[str, Any]) -> None:
    keys = served["keys"]
    # Valid keys more often than not, so that many cases get past authentication.
    credentials = [bearer(key) for key in (*keys.values(), keys["writer"], keys["admin"])] + [
        (),
        bearer("rh_0123456789ab_" + "x" * 43),
        (("authorization", "Bearer"),),
        (("authorization", "Token abc"),),
    ]
    channel = served["channel"]
    seen: dict[str, int] = {}
    last = max(event_positions(channel, keys["admin"], 0))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=cases(credentials))
    def check(case: dict[str, Any]) -> None:
        nonlocal last
        code, details, received = send(channel, case)
        seen[code.name] = seen.get(code.name, 0) + 1
        assert code not in NEVER, (case["method"].name, details)
        assert served["process"].poll() is None, "the server died"
        new = event_positions(channel, keys["admin"], last)
        if code != grpc.StatusCode.OK and received == 0:
            # Refused before anything was acknowledged: nothing may have been written.
            assert new == [], (case["method"].name, code, details, new)
        if new:
            last = new[-1]

    check()
    print(f"\nfuzz cases: {sum(seen.values())}, statuses: {dict(sorted(seen.items()))}")
    wait_serving(served["address"], served["process"])
    assert sum(seen.values()) >= EXAMPLES
    # Something got through, and something was refused, for each reason worth testing.
    for status in ("OK", "INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED"):
        assert seen.get(status), (status, seen)
