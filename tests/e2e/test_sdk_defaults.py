"""Where `init` puts a run named without an entity or a project, and what an empty one
does: the key's entity (as W&B uses the account's default entity), on SQLite and
PostgreSQL; an empty string is refused, never quietly taken for a default."""

from __future__ import annotations

import grpc
import pytest
from sdk_server import (  # noqa: F401 (the fixtures backend, database, server)
    SdkServer,
    backend_fixture,
    database_fixture,
    server_fixture,
)

import runhistory
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos import runhistory_pb2_grpc as pb_grpc


def test_init_without_an_entity_uses_the_keys_entity(
    server: SdkServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNHISTORY_ENTITY", raising=False)
    with runhistory.init(project="defaults") as run:
        run.log({"x": 1})
    assert run.entity == server.entity and run.project == "defaults"
    # A branch point without an entity is in the key's entity too.
    forked = runhistory.init(project="defaults", fork_from=f"{run.id}?_step=0")
    forked.finish()
    assert forked.entity == server.entity and forked.forked_from["run"] == run.path
    with runhistory.init() as elsewhere:
        assert elsewhere.path.startswith(f"{server.entity}/uncategorized/")
    # Reads named without an entity are of the key's too, as W&B's API takes the viewer's.
    with runhistory.Api() as api:
        assert api.run(f"defaults/{run.id}").path == run.path
        assert api.run(f"/defaults/{run.id}/").path == run.path
        monkeypatch.setenv("RUNHISTORY_PROJECT", "defaults")
        assert api.run(run.id).path == run.path
        assert [r.path for r in api.runs("defaults")] == [run.path, forked.path]
        assert [r.path for r in api.runs()] == [run.path, forked.path]
        monkeypatch.delenv("RUNHISTORY_PROJECT")
        assert api.run(elsewhere.id).path == elsewhere.path
        assert len(api.runs()) == 1
    # $RUNHISTORY_ENTITY still names one when init does not.
    monkeypatch.setenv("RUNHISTORY_ENTITY", "elsewhere")
    with pytest.raises(runhistory.PermissionDenied, match="entity 'elsewhere'"):
        runhistory.init(project="defaults")


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"entity": ""}, "entity '' is empty: give an entity name, or leave entity out"),
        ({"project": ""}, "project '' is empty: give a project name, or leave project out"),
        ({"project": "  "}, "project '  ' is empty"),
    ],
)
def test_an_empty_entity_or_project_is_refused(
    server: SdkServer, given: dict[str, str], message: str
) -> None:
    with pytest.raises(runhistory.InvalidArgument, match=message):
        runhistory.init(**{"project": "p", **given})
    with runhistory.Api() as api:
        assert list(api.runs(f"{server.entity}/p")) == []
        assert list(api.runs(f"{server.entity}/uncategorized")) == []


def test_grpc_init_with_an_empty_entity_or_project(server: SdkServer) -> None:
    metadata = [("authorization", f"Bearer {server.api_key}")]
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.RunHistoryStub(channel)
        # The wire cannot tell an empty entity from none: it stands for the key's.
        session = stub.Init(pb.InitRequest(project="p", run_id="r"), metadata=metadata)
        assert session.path == f"{server.entity}/p/r"
        # So do reads: a `project/run_id` path, and a listing without an entity.
        info = stub.GetRun(pb.RunRequest(path="p/r"), metadata=metadata)
        assert info.path == f"{server.entity}/p/r"
        listed = stub.ListRuns(pb.ListRunsRequest(project="p"), metadata=metadata)
        assert [run.path for run in listed.runs] == [f"{server.entity}/p/r"]
        with pytest.raises(grpc.RpcError) as refused:
            stub.Init(pb.InitRequest(entity=server.entity, project=""), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "the project is empty: a project is 1-64 characters" in refused.value.details()
