"""One valid request for every RPC, for the security and fuzz tests."""

from __future__ import annotations

from typing import Any

from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos.codec import calls_to_json

T0 = 1_700_000_000.0


def calls_json(datas: tuple[dict[str, Any], ...]) -> bytes:
    return calls_to_json([(data, T0 + i, None, None) for i, data in enumerate(datas)])


# Each RPC with a request aimed at `path` (a run of entity alice).
def requests_for(path: str) -> dict[str, Any]:
    log = pb.LogBatch(path=path, calls_json=calls_json(({"x": 1},)))
    return {
        "Init": pb.InitRequest(
            entity="alice",
            project="p",
            branch=pb.Branch(mode=pb.Branch.FORK, point=f"{path}?_step=1"),
        ),
        "Log": log,
        "LogStream": log,
        "UpdateConfig": pb.UpdateConfigRequest(path=path, config_json='{"lr": 1}'),
        "SetSummary": pb.SetSummaryRequest(path=path, values={"best": pb.Value(int_value=1)}),
        "DefineMetric": pb.DefineMetricRequest(path=path, key="loss", summary="min"),
        "UpdateDetails": pb.UpdateDetailsRequest(path=path, name="renamed", notes="n"),
        "RecordArtifact": pb.RecordArtifactRequest(
            path=path, direction="produced", name="model", type="model"
        ),
        "Finish": pb.FinishRequest(path=path, exit_code=0),
        "Heartbeat": pb.HeartbeatRequest(path=path, writer="0" * 32),
        "GetRun": pb.RunRequest(path=path),
        "ListRuns": pb.ListRunsRequest(entity="alice", project="p"),
        "ReadHistory": pb.HistoryRequest(path=path),
        "GetSummary": pb.RunRequest(path=path),
        "GetConfig": pb.RunRequest(path=path),
        "ListVersions": pb.RunRequest(path=path),
        "ListArtifacts": pb.RunRequest(path=path),
        "GetLineage": pb.RunRequest(path=path),
        "ReadEvents": pb.EventsRequest(path=path),
        "AsOf": pb.AsOfRequest(path=path, position=1),
        "Rebuild": pb.RebuildRequest(),
    }
