"""The SDK's spool on disk (sdk/spool.py): records read back in order, a record cut short
by a killed process ignored, acknowledged segments deleted, emptied folders removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from runhistory import spool as spool_module
from runhistory.spool import Record, Spool, is_spool, spool_root


def records(count: int, size: int = 10) -> list[Record]:
    return [Record(seq, "Log", bytes([seq % 256]) * size, calls=1) for seq in range(1, count + 1)]


def test_records_read_back_in_order_and_a_cut_record_is_ignored(tmp_path: Path) -> None:
    spool = Spool.create(tmp_path / "runhistory", "abc", {"path": "e/p/abc", "writer": "w"})
    written = [*records(3), Record(4, "Finish", b"\x20\x01")]
    for record in written:
        spool.append(record)
    spool.close()
    [segment] = list(spool.folder.glob("*.spool"))
    with segment.open("ab") as file:  # a process killed in the middle of an append
        file.write(spool_module._HEADER.pack(64, 0, 5, 0, 1) + b"cut")
    reopened = Spool.open(spool.folder)
    assert reopened.meta["path"] == "e/p/abc" and reopened.meta["writer"] == "w"
    assert list(reopened.records()) == written
    assert [r.seq for r in reopened.records(after=2)] == [3, 4]
    assert reopened.last_seq() == 4
    assert is_spool(spool.folder) and spool.folder.name.startswith("run-")


def test_acknowledged_segments_are_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 100)
    spool = Spool.create(tmp_path / "runhistory", "abc", {"path": "e/p/abc", "writer": "w"})
    for record in records(10, size=40):  # two records a segment
        spool.append(record)
    assert len(list(spool.folder.glob("*.spool"))) == 5
    spool.acknowledge(5)  # segments of 1-2 and 3-4 go; 5-6 holds 6, not acknowledged
    assert len(list(spool.folder.glob("*.spool"))) == 3
    assert [r.seq for r in spool.records()] == list(range(6, 11))
    assert Spool.open(spool.folder).acked == 5  # noted for the next reader


def test_remove_deletes_the_run_folder_and_an_emptied_parent_only(tmp_path: Path) -> None:
    root = spool_root(tmp_path)
    assert root == tmp_path / "runhistory"
    first = Spool.create(root, "one", {})
    second = Spool.create(root, "two", {})
    first.remove()
    assert not first.folder.exists() and root.is_dir()
    second.remove()
    assert not root.exists() and tmp_path.is_dir()


def test_a_second_spool_of_the_same_run_gets_its_own_folder(tmp_path: Path) -> None:
    first = Spool.create(tmp_path, "same", {})
    second = Spool.create(tmp_path, "same", {})
    assert first.folder != second.folder and is_spool(second.folder)


def test_every_sequenced_write_rpc_can_be_spooled_and_described() -> None:
    """A write RPC added to the service (its request carries path, writer and seq) must be
    spoolable and named in warnings; after a merge UpdateDetails was neither, and a run
    whose name was set failed finish with a KeyError."""
    from runhistory.protos import runhistory_pb2 as pb
    from runhistory.sender import describe
    from runhistory.spool import RPCS

    sequenced = {
        method.name
        for method in pb.DESCRIPTOR.services_by_name["RunHistory"].methods
        if not method.client_streaming  # LogStream sends the same LogBatch as Log
        and {"path", "writer", "seq"} <= {field.name for field in method.input_type.fields}
    }
    assert "UpdateDetails" in sequenced
    assert sequenced == set(RPCS)
    for rpc in RPCS:
        assert describe(Record(1, rpc, b""))
