"""The W&B wire protocol, served beside the web UI: the `wandb` SDK logs, resumes, rewinds,
forks and reads runs here unchanged, with `WANDB_BASE_URL` and `WANDB_API_KEY` set.

Every operation is a command or a query of the same `RunService` the gRPC API and the web
UI use, on the same `Run` aggregate: a run logged by `wandb` is a runhistory run like any
other. `app.py` routes the HTTP requests; `graphql.py` dispatches GraphQL operations by the
name in their query text to one resolver each (`writing.py`, `reading.py`);
`file_stream.py` applies the SDK's file_stream posts; `protocol.py` holds the wire formats.
"""
