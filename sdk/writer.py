"""The writer side of the SDK: `init()`, `Run`, its `Config` and `Summary`.

`Run.log()` only checks and flattens the data, stamps the wall clock and appends to an
in-memory queue that `runhistory.sender` drains in order in the background.
"""

from __future__ import annotations

import atexit
import copy
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from runhistory.client import (
    CONNECTING,
    Connection,
    Credentials,
    call,
    default_entity,
    default_project,
    note_position,
    written_position,
)
from runhistory.domain.errors import (
    InvalidArgument,
    RunHistoryError,
    RunNotRunning,
)
from runhistory.domain.rules import (
    check_artifact,
    check_run_name,
    check_step,
    check_tags,
    parse_summary_choice,
)
from runhistory.domain.values import DEFAULT_LIMITS, check_config, check_row_size, flatten
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos.codec import dumps, loads, to_values
from runhistory.sender import WRITE_TIMEOUT, Sender, Write, fresh_error

log = logging.getLogger("runhistory")


def init(
    project: str | None = None,
    entity: str | None = None,
    config: Mapping[str, Any] | Any | None = None,
    name: str | None = None,
    id: str | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    resume: bool | str | None = None,
    resume_from: str | None = None,
    fork_from: str | None = None,
    address: str | None = None,
    api_key: str | None = None,
    tls_ca: str | os.PathLike[str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
) -> Run:
    """Start a run (or resume, rewind or fork one) and return it for logging.

    `resume_from="RUN_ID?_step=N"` rewinds RUN_ID to step N (the version before is archived);
    `fork_from="RUN_ID?_step=N"` creates a new run that inherits RUN_ID's rows up to step N
    (an immutable version ID in place of RUN_ID forks that version, live or archived);
    `id=RUN_ID, resume="must" | "allow"` continues a run after its last step.
    `api_key` defaults to $RUNHISTORY_API_KEY; `tls_ca` (a PEM file, default
    $RUNHISTORY_TLS_CA) turns on TLS, with an optional client certificate.
    """
    entity = entity or default_entity()
    project = project or default_project()
    checked = check_config(_config_mapping(config))
    if resume is True or resume == "auto":
        resume = "allow"
    elif resume is False:
        resume = "never"
    if resume is not None and not isinstance(resume, str):
        raise InvalidArgument(f"invalid resume {resume!r}: use 'allow', 'must' or 'never'")
    name = check_run_name(name)
    tags = check_tags(tags or ())
    branch = None
    if resume_from:
        branch = pb.Branch(mode=pb.Branch.REWIND, point=resume_from)
    if fork_from:
        if branch is not None:
            raise InvalidArgument("use at most one of resume_from and fork_from")
        branch = pb.Branch(mode=pb.Branch.FORK, point=fork_from)
    request = pb.InitRequest(
        entity=entity,
        project=project,
        run_id=id or "",
        name=name or "",
        tags=tags,
        config_json=dumps(checked),
        resume=resume or "",
        branch=branch,
        started_at=time.time(),
    )
    connection = Connection(address, Credentials.resolve(api_key, tls_ca, tls_cert, tls_key))
    try:
        # Init is not repeatable (a generated ID would create a second run), so it is
        # retried only while the server cannot be reached.
        session = call(
            connection.stub.Init,
            request,
            retries=CONNECTING,
            timeout=WRITE_TIMEOUT,
            address=connection.address,
        )
    except BaseException:
        connection.close()
        raise
    note_position(connection.address, session.position)
    # A resumed or rewound run keeps its stored name: fetched when first asked for.
    known_name = None if (resume_from or resume) else (name or session.path.split("/")[-1])
    return Run(connection, session, name=known_name)


def _config_mapping(config: Any) -> Mapping[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return config
    if hasattr(config, "__dict__"):  # argparse.Namespace and similar
        return vars(config)
    raise InvalidArgument(f"config must be a dict, got {type(config).__name__}")


# ---- the run ------------------------------------------------------------------------------


class Run:
    """A writer session on a run, returned by `init()`. Use it as a context manager or call
    `finish()` when done."""

    def __init__(self, connection: Connection, session: pb.Session, name: str | None) -> None:
        self._connection = connection
        self.address = connection.address
        self.path = session.path
        self.entity, self.project, self.id = session.path.split("/")
        self.version = session.version
        # This version's immutable ID: it stays with the version when a rewind archives it.
        self.immutable_id: str = session.immutable_id
        self.step = session.next_step
        self.forked_from = (
            {
                "run": session.forked_from.run,
                "step": session.forked_from.step,
                "version": session.forked_from.version,
                "immutable_id": session.forked_from.immutable_id,
            }
            if session.HasField("forked_from")
            else None
        )
        self._name = name
        self._writer = session.writer
        self._closed = False
        self._finish_lock = threading.Lock()
        self._sender = Sender(connection, self.path, session.writer)
        self._queue = self._sender.queue
        self.config = Config(self, loads(session.config_json) if session.config_json else {})
        self.summary = Summary(self)
        _live_runs.add(self)
        _install_exit_hooks()

    def __repr__(self) -> str:
        return f"<runhistory.Run {self.path} version={self.version} step={self.step}>"

    @property
    def name(self) -> str:
        if self._name is None:
            info = call(
                self._reader().stub.GetRun,
                pb.RunRequest(path=self.path, min_position=written_position(self.address)),
                address=self.address,
            )
            self._name = info.name
        return self._name

    @property
    def warnings(self) -> list[str]:
        """Warnings the server returned, e.g. for log calls with a step lower than the
        current one (they were ignored)."""
        return self._sender.warnings

    # ---- logging -----------------------------------------------------------------------

    def log(
        self, data: Mapping[str, Any], step: int | None = None, commit: bool | None = None
    ) -> None:
        """Merge `data` into the row at the current step and commit it (the step then
        advances by 1). `step=s` moves to step s first; `commit=False` merges without
        committing. Returns at once: rows are sent in the background."""
        if self._closed or self._sender.error is not None:
            self._refuse("log")
        flat = flatten(data)
        if step is not None:
            step = check_step(step)
        if commit is not None and commit is not True and commit is not False:
            raise InvalidArgument(f"commit is True, False or None, got {commit!r}")
        for value in flat.values():
            if type(value) is str:  # only strings can take a row over the size limit
                check_row_size(step, flat, DEFAULT_LIMITS)
                break
        timestamp = time.time()
        # The step rules of the server, mirrored for `run.step`.
        current = self.step
        if step is None:
            if commit is not False:
                self.step = current + 1
        elif step >= current:
            self.step = step + 1 if commit else step
        queue = self._queue
        queue.append((flat, timestamp, step, commit))
        if len(queue) > self._sender.max_queued:
            self._sender.wait_for_room()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every write so far is acknowledged by the server; raise the error of a
        refused write."""
        if not self._closed:
            self._sender.flush(timeout)
        if self._sender.error is not None:
            raise fresh_error(self._sender.error)

    # ---- other writes, in the same order as the rows -------------------------------------

    def _write(self, rpc: str, request: Any, what: str) -> None:
        if self._closed or self._sender.error is not None:
            self._refuse(what)
        request.path = self.path
        request.writer = self._writer
        self._sender.put(Write(rpc, request, what))

    def define_metric(self, key: str, summary: str | None = None, *, hidden: bool = False) -> None:
        """Choose the summary of `key`: a comma-separated subset of min,max,mean,first,last,
        or "none" (or hidden=True) to leave it out of the summary. Default: the last value."""
        if hidden:
            summary = "none"
        flatten({key: 0})  # the key rules of logged values
        if summary:
            parse_summary_choice(summary)
        request = pb.DefineMetricRequest(key=key, summary=summary or "")
        self._write("DefineMetric", request, "define a metric")

    def log_artifact(
        self, name: str, type: str, digest: str = "", size: int = 0, uri: str = ""
    ) -> None:
        """Record an artifact this run produced (its files are not uploaded)."""
        self._artifact("produced", name, type, digest, size, uri)

    def use_artifact(
        self, name: str, type: str, digest: str = "", size: int = 0, uri: str = ""
    ) -> None:
        """Record an artifact this run used."""
        self._artifact("used", name, type, digest, size, uri)

    def _artifact(
        self, direction: str, name: str, type: str, digest: str, size: int, uri: str
    ) -> None:
        check_artifact(direction, name, type, size)
        request = pb.RecordArtifactRequest(
            direction=direction,
            name=name,
            type=type,
            digest=str(digest or ""),
            size=size,
            uri=str(uri or ""),
        )
        self._write("RecordArtifact", request, "record an artifact")

    # ---- the end -------------------------------------------------------------------------

    def finish(self, exit_code: int = 0) -> None:
        """Send everything, wait for the server to acknowledge it, and end the run (finished
        on exit code 0, else crashed). Raises the error of a refused write. Idempotent."""
        if not isinstance(exit_code, int) or isinstance(exit_code, bool):
            raise InvalidArgument(f"the exit code is an integer, got {exit_code!r}")
        with self._finish_lock:
            if self._closed:
                return
            self._closed = True
            request = pb.FinishRequest(path=self.path, writer=self._writer, exit_code=exit_code)
            self._sender.put(Write("Finish", request, "finish", final=True))
        self._wait_for_sender()
        if self._sender.error is not None:
            raise fresh_error(self._sender.error)

    def _wait_for_sender(self, timeout: float | None = None) -> None:
        """Wait until everything queued is sent; then release the channel. If interrupted,
        the run stays registered and the exit hook waits again."""
        self._sender.stop(timeout)
        if not self._sender.thread.is_alive():
            self._connection.close()
            _live_runs.discard(self)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: Any) -> None:
        if kind is None:
            self.finish(0)
            return
        try:
            self.finish(1)
        except RunHistoryError as refused:  # the block's own exception goes on
            log.error("runhistory: finishing %s: %s: %s", self.path, refused.code, refused.message)

    # ---- helpers -------------------------------------------------------------------------

    def _refuse(self, what: str) -> None:
        if self._sender.error is not None:
            raise fresh_error(self._sender.error)
        raise RunNotRunning(
            f"cannot {what}: this session of {self.path} is finished; start a new one with "
            f"init(id={self.id!r}, resume='must') or init(resume_from=...)"
        )

    def _reader(self) -> Connection:
        """The run's channel, or a new one after finish (for reads)."""
        if not self._closed:
            return self._connection
        return self._connection.reopen()


# ---- config and summary -------------------------------------------------------------------


class Config:
    """The run's config: a dict whose changes are sent to the server in order with the
    rows. `update(d)` merges top-level keys; attribute access works too (`config.lr`)."""

    def __init__(self, run: Run, data: dict[str, Any]) -> None:
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "_data", data)

    def update(self, changes: Mapping[str, Any] | Any = None, /, **more: Any) -> None:
        merged = {**_config_mapping(changes), **more}
        checked = check_config(merged)
        if not checked:
            return
        request = pb.UpdateConfigRequest(config_json=dumps(checked))
        self._run._write("UpdateConfig", request, "update the config")
        self._data.update(checked)

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(f"the config has no key {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Config):
            return self._data == other._data
        return self._data == other

    __hash__ = None  # type: ignore[assignment]

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def keys(self) -> Any:
        return self._data.keys()

    def items(self) -> Any:
        return self._data.items()

    def values(self) -> Any:
        return self._data.values()

    def as_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def __repr__(self) -> str:
        return f"Config({self._data!r})"


class Summary:
    """The run's summary. Setting a key (`summary[k] = v`, `update`) sends an explicit value,
    in order with the rows, that holds until the key is logged again. Reading waits for the
    writes so far and fetches the summary the server derived from the history."""

    def __init__(self, run: Run) -> None:
        self._run = run

    def update(self, values: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        flat = flatten({**(values or {}), **more})
        if not flat:
            return
        request = pb.SetSummaryRequest(values=to_values(flat))
        self._run._write("SetSummary", request, "set the summary")

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def as_dict(self) -> dict[str, Any]:
        run = self._run
        run.flush()
        reader = run._reader()
        try:
            document = call(
                reader.stub.GetSummary,
                pb.RunRequest(path=run.path, min_position=written_position(run.address)),
                address=run.address,
            )
        finally:
            if reader is not run._connection:
                reader.close()
        return loads(document.json)

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.as_dict()

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())

    def keys(self) -> Any:
        return self.as_dict().keys()

    def items(self) -> Any:
        return self.as_dict().items()

    def values(self) -> Any:
        return self.as_dict().values()

    def __repr__(self) -> str:
        return f"Summary(run={self._run.path!r})"


# ---- at exit: finish the runs left open ---------------------------------------------------

_live_runs: set[Run] = set()
_hooks_installed = False
_uncaught = False


def _install_exit_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    previous = sys.excepthook

    def excepthook(kind: Any, value: Any, trace: Any) -> None:
        global _uncaught
        _uncaught = True
        previous(kind, value, trace)

    sys.excepthook = excepthook
    atexit.register(_finish_open_runs)


def _finish_open_runs() -> None:
    """Runs not finished by the script: finished at exit, crashed after an uncaught error."""
    for run in list(_live_runs):
        try:
            if run._closed:  # finish() was interrupted: let the sender complete
                run._wait_for_sender()
            else:
                run.finish(1 if _uncaught else 0)
        except RunHistoryError as error:
            log.error("runhistory: finishing %s at exit: %s: %s", run.path, error.code, error)


__all__ = ["Config", "Run", "Summary", "init"]
