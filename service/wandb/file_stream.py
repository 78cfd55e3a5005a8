"""`POST /files/{entity}/{project}/{run}/file_stream`: the SDK's rows, summary and exit.

A post is read whole and checked before anything is applied, so a malformed one changes
nothing. Data the server refuses (a key too long, a row over the limits) is dropped alone,
logged by the server: refusing the post would end the SDK's file_stream, which gives up on a
4xx, and every later row with it. Then, as the run's current session (the post names no
session: it acts for the session this key started through the W&B API, if one holds the
run):

- `wandb-history.jsonl`: line `offset + i` is `content[i]`; the post's lines are one batch
  of rows, and lines applied before (a retried post) are acknowledged, not applied again;
- `wandb-summary.json`: the SDK's whole summary; values that differ from the derived summary
  are kept as explicit values (`RunService.report_summary`);
- `complete` with `exitcode`: finishes the run, finished on 0 and crashed otherwise;
- every post, the empty heartbeat `{}` included, tells the service the writer is alive.

System metrics (`wandb-events.jsonl`), console output (`output.log`), `uploaded` and
`preempting` are read and dropped: runhistory keeps run histories, not machine logs.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from runhistory.domain.errors import (
    InvalidArgument,
    ResourceExhausted,
    RunNotRunning,
    Superseded,
)
from runhistory.domain.identity import RunPath
from runhistory.domain.values import LogCall, flatten
from runhistory.service.runs import RunService
from runhistory.service.wandb.caller import WRITE, Caller
from runhistory.service.wandb.protocol import (
    history_call,
    holds,
    parse_json,
    user_values,
    whole_number,
)

log = logging.getLogger(__name__)

HISTORY = "wandb-history.jsonl"
SUMMARY = "wandb-summary.json"
# The SDK reads only `stopped` from the answer; this is what W&B's answer looks like.
ANSWER: dict[str, Any] = {"exitcode": None, "limits": {}}


@dataclass
class Post:
    first_line: int = 0
    lines: list[LogCall] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    # `_step` and `_timestamp` of the row the summary was taken at, as far as it says
    summary_taken_at: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None  # set when the post completes the run


def read_post(body: bytes) -> Post:
    """The post, checked whole; InvalidArgument naming the first thing that is wrong."""
    document = parse_json(body, "the file_stream post") if body.strip() else {}
    if not isinstance(document, dict):
        raise InvalidArgument("a file_stream post is a JSON object: {files, complete, exitcode}")
    post = Post()
    files = document.get("files", {})
    if not isinstance(files, dict):
        raise InvalidArgument("files is an object of file name to {offset, content}")
    for name, chunk in files.items():
        if not isinstance(chunk, dict) or not isinstance(chunk.get("content"), list):
            raise InvalidArgument(f"files[{name!r}] is {{offset: N, content: [lines]}}")
        offset = whole_number(chunk.get("offset", 0), f"the offset of {name}")
        if name == HISTORY:
            post.first_line = offset
            post.lines = [history_call(line, offset + i) for i, line in enumerate(chunk["content"])]
        elif name == SUMMARY and chunk["content"]:
            post.summary, post.summary_taken_at = _summary(chunk["content"][-1])
    complete = document.get("complete")
    if complete not in (None, True, False):
        raise InvalidArgument(f"complete is true or false, got {complete!r}")
    if complete:
        code = document.get("exitcode", 0)
        if not isinstance(code, int) or isinstance(code, bool):
            raise InvalidArgument(f"exitcode is an integer, got {code!r}")
        post.exit_code = code
    return post


def _summary(line: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """The summary line: the SDK's whole summary (it replaces the one before), and the
    `_step` and `_timestamp` of the row it was taken at (interim ones have no `_step`)."""
    if not isinstance(line, str):
        raise InvalidArgument("the summary line is a string of JSON")
    summary = parse_json(line, "the summary line")
    if not isinstance(summary, dict):
        raise InvalidArgument("the summary line is a JSON object")
    values = user_values(summary)
    taken_at = {key: summary[key] for key in ("_step", "_timestamp") if key in summary}
    return values, taken_at


class FileStream:
    def __init__(self, service: RunService) -> None:
        self.service = service

    def post(
        self, caller: Caller, entity: str, project: str, run_id: str, body: bytes
    ) -> dict[str, Any]:
        path = caller.run(entity, project, run_id, WRITE)
        post = read_post(body)
        writer = self.service.current_writer(path)
        if not holds(caller.key_id, writer):
            raise Superseded(
                f"{path} is held by another session now (a rewind, a resume or another "
                "client), so this one's writes are refused; start a new one with resume, "
                "resume_from or fork_from"
            )
        # Checked before any row is applied: a summary still refused refuses the post whole.
        summary = self._storable(path, post.summary) if post.summary else None
        self.service.heartbeat(path, writer=writer)
        if post.lines:
            ack = self.service.log_lines(
                path, post.first_line, post.lines, writer=writer, drop_refused=True
            )
            for warning in ack.warnings:
                log.warning("wandb run %s: %s", path, warning)
        if summary:
            # The SDK may send a summary before the rows it covers: see report_summary.
            self.service.report_summary(
                path, summary, taken_at=post.summary_taken_at, writer=writer
            )
        if post.exit_code is not None:
            self._finish(path, post.exit_code, writer)
        return ANSWER

    def _storable(self, path: RunPath, summary: dict[str, Any]) -> dict[str, Any]:
        """The summary without the keys the server refuses (as their rows were dropped).
        One check of the whole in the usual case; key by key only when it is refused."""
        limits = self.service.limits
        try:
            flatten(summary, limits)
            return summary
        except (InvalidArgument, ResourceExhausted):
            pass
        kept = {}
        for key, value in summary.items():
            try:
                flatten({key: value}, limits)
            except (InvalidArgument, ResourceExhausted) as refused:
                log.warning("wandb run %s: a summary value was dropped: %s", path, refused.message)
            else:
                kept[key] = value
        flatten(kept, limits)  # still too many keys: refused whole
        return kept

    def _finish(self, path: RunPath, exit_code: int, writer: str) -> None:
        # RunNotRunning: its own session ended the run (a superseded one is refused before
        # this), so the final post came again, as a retry.
        with suppress(RunNotRunning):
            self.service.finish(path, exit_code, writer=writer)
