"""The writer side of the SDK: `init()`, `Run`, its `Config` and `Summary`.

`Run.log()` only checks and flattens the data, stamps the wall clock and appends to an
in-memory queue that `runhistory.sender` spools and sends in order in the background.
"""

from __future__ import annotations

import atexit
import base64
import copy
import logging
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from runhistory.client import (
    CONNECTING,
    Connection,
    Credentials,
    call,
    env_seconds,
    init_target,
    note_position,
    resolve_address,
    run_url,
    written_position,
)
from runhistory.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    RunHistoryError,
    RunNotRunning,
)
from runhistory.domain.identity import check_name, generate_run_id
from runhistory.domain.rules import (
    check_artifact,
    check_detail,
    check_metric_name,
    check_run_name,
    check_step,
    check_tags,
    parse_summary_choice,
)
from runhistory.domain.values import DEFAULT_LIMITS, Limits, check_config, check_row_size, flatten
from runhistory.heartbeat import Heartbeat
from runhistory.protos import runhistory_pb2 as pb
from runhistory.protos.codec import dumps, limits_from_proto, loads, to_values
from runhistory.sender import WRITE_TIMEOUT, Sender, Write, fresh_error
from runhistory.spool import Spool, spool_root

MODES = ("online", "offline", "disabled")
# How long finish() waits for the server to take what is spooled (RUNHISTORY_FINISH_TIMEOUT).
DEFAULT_FINISH_TIMEOUT = 120.0

log = logging.getLogger("runhistory")


# wandb.init's arguments that have no meaning here: accepted, and named in one warning.
IGNORED_INIT_ARGUMENTS = (
    "force",
    "save_code",
    "tensorboard",
    "sync_tensorboard",
    "monitor_gym",
    "anonymous",
)
# wandb.Settings fields that map to an init argument here; the others are named in the
# warning. Arguments given to init take precedence, as in W&B.
SETTINGS_ARGUMENTS = {
    "run_name": "name",
    "run_notes": "notes",
    "run_tags": "tags",
    "run_group": "group",
    "run_job_type": "job_type",
    "run_id": "id",
    "project": "project",
    "entity": "entity",
    "api_key": "api_key",
    "base_url": "address",
    "reinit": "reinit",
    "resume": "resume",
    "resume_from": "resume_from",
    "fork_from": "fork_from",
    "allow_val_change": "allow_val_change",
}
REINIT_CHOICES = ("default", "return_previous", "finish_previous", "create_new")


def init(
    project: str | None = None,
    entity: str | None = None,
    config: Mapping[str, Any] | Any | None = None,
    name: str | None = None,
    id: str | None = None,
    tags: Sequence[str] | None = None,
    resume: bool | str | None = None,
    resume_from: str | None = None,
    fork_from: str | None = None,
    address: str | None = None,
    api_key: str | None = None,
    tls_ca: str | os.PathLike[str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    *,
    notes: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    reinit: bool | str | None = None,
    config_exclude_keys: Sequence[str] | None = None,
    config_include_keys: Sequence[str] | None = None,
    allow_val_change: bool | None = None,
    settings: Mapping[str, Any] | Any | None = None,
    force: bool | None = None,
    save_code: bool | None = None,
    tensorboard: bool | None = None,
    sync_tensorboard: bool | None = None,
    monitor_gym: bool | None = None,
    anonymous: str | None = None,
    mode: str | None = None,
    dir: str | os.PathLike[str] | None = None,
) -> Run:
    """Start a run (or resume, rewind or fork one) and return it for logging; it becomes
    `runhistory.run`, the run the module's `log`, `config`, `summary` act on.

    `resume_from="RUN_ID?_step=N"` rewinds RUN_ID to step N (the version before is archived);
    `fork_from="RUN_ID?_step=N"` creates a new run that inherits RUN_ID's rows up to step N;
    `id=RUN_ID, resume="must" | "allow"` continues a run after its last step. With a resume
    or rewind, the `name`, `tags`, `notes`, `group` and `job_type` given replace the run's.
    `reinit` is W&B's: while a run is active, another init returns it ("default",
    "return_previous", False), finishes it first ("finish_previous", True), or starts a run
    beside it that does not become `runhistory.run` ("create_new").
    `allow_val_change` lets `config` change a value it holds (W&B refuses otherwise).
    `api_key` defaults to $RUNHISTORY_API_KEY (or what `login()` set); `tls_ca` (a PEM file,
    default $RUNHISTORY_TLS_CA) turns on TLS, with an optional client certificate.
    The arguments of `wandb.init` with no meaning here are accepted and named in a warning.
    `mode` (default $RUNHISTORY_MODE, else "online"): "offline" writes the run to the spool
    only, for `runhistory sync` to upload; "disabled" returns a run that does nothing.
    `dir` (default $RUNHISTORY_DIR, else the working folder) holds `runhistory/`, where
    the runs' spool folders go.
    """
    run_mode = mode or os.environ.get("RUNHISTORY_MODE") or "online"
    if run_mode not in MODES:
        raise InvalidArgument(f"invalid mode {run_mode!r}: use 'online', 'offline' or 'disabled'")
    if run_mode == "disabled":
        from runhistory.disabled import DisabledRun

        # A stand-in for a Run: its __getattr__ answers every other method of Run, so callers
        # keep typing against Run (as W&B's init returns a Run in disabled mode too).
        disabled = DisabledRun(project=project, entity=entity, config=config, name=name, id=id)
        return cast("Run", disabled)
    unused = (force, save_code, tensorboard, sync_tensorboard, monitor_gym, anonymous)
    ignored = [
        label
        for label, value in zip(IGNORED_INIT_ARGUMENTS, unused, strict=True)
        if value is not None
    ]
    given = {
        "project": project,
        "entity": entity,
        "name": name,
        "id": id,
        "tags": tags,
        "resume": resume,
        "resume_from": resume_from,
        "fork_from": fork_from,
        "address": address,
        "api_key": api_key,
        "notes": notes,
        "group": group,
        "job_type": job_type,
        "reinit": reinit,
        "allow_val_change": allow_val_change,
    }
    for setting, value in _settings_mapping(settings).items():
        argument = SETTINGS_ARGUMENTS.get(setting)
        if argument is None:
            ignored.append(f"settings.{setting}")
        elif given[argument] is None and value is not None:
            given[argument] = value
    if ignored:
        warnings.warn(
            "runhistory.init: these wandb.init arguments have no effect here and were "
            f"ignored: {', '.join(ignored)}",
            stacklevel=2,
        )
    mode = _reinit_mode(given["reinit"])
    previous = active_run()
    if previous is not None:
        if mode == "finish_previous":
            for open_run in list(_active_runs):
                open_run.finish()
        elif mode != "create_new":
            if given["resume"] == "must":
                raise FailedPrecondition(
                    "cannot resume a run while another run is active: finish it with "
                    "run.finish(), or use reinit='create_new'"
                )
            warnings.warn(
                f"runhistory.init called while run {previous.path} is active and reinit is "
                f"{'default' if given['reinit'] is None else given['reinit']!r}: returning "
                "that run, as W&B does "
                "(reinit='finish_previous' finishes it first, 'create_new' starts another "
                "beside it)",
                stacklevel=2,
            )
            return previous
    run = _start(
        given,
        _config_mapping(config),
        config_exclude_keys,
        config_include_keys,
        run_mode,
        dir,
        tls_ca,
        tls_cert,
        tls_key,
    )
    _active_runs.append(run)
    if mode != "create_new":
        global _global_run
        _global_run = run
    return run


def _start(
    given: dict[str, Any],
    config: Mapping[str, Any],
    exclude_keys: Sequence[str] | None,
    include_keys: Sequence[str] | None,
    run_mode: str,
    dir: str | os.PathLike[str] | None,
    tls_ca: str | os.PathLike[str] | None,
    tls_cert: str | os.PathLike[str] | None,
    tls_key: str | os.PathLike[str] | None,
) -> Run:
    """Ask the server for a session on the run `given` describes."""
    entity, project = init_target(given["entity"], given["project"])
    checked = check_config(_dashless(_filtered_config(config, exclude_keys, include_keys)))
    resume, resume_from, fork_from = given["resume"], given["resume_from"], given["fork_from"]
    if resume is True or resume == "auto":
        resume = "allow"
    elif resume is False:
        resume = "never"
    if resume is not None and not isinstance(resume, str):
        raise InvalidArgument(f"invalid resume {resume!r}: use 'allow', 'must' or 'never'")
    name = check_run_name(given["name"])
    tags = check_tags(given["tags"] or ())
    details = {label: check_detail(label, given[label]) for label in ("notes", "group", "job_type")}
    branch = None
    if resume_from:
        branch = pb.Branch(mode=pb.Branch.REWIND, point=resume_from)
    if fork_from:
        if branch is not None:
            raise InvalidArgument("use at most one of resume_from and fork_from")
        branch = pb.Branch(mode=pb.Branch.FORK, point=fork_from)
    started_at = time.time()
    request = pb.InitRequest(
        entity=entity,
        project=project,
        run_id=given["id"] or "",
        name=name or "",
        tags=tags,
        config_json=dumps(checked),
        resume=resume or "",
        branch=branch,
        started_at=started_at,
        **{label: text for label, text in details.items() if text is not None},
    )
    if run_mode == "offline":
        return _offline_run(
            request, given["address"], spool_root(dir), started_at, bool(given["allow_val_change"])
        )
    credentials = Credentials.resolve(given["api_key"], tls_ca, tls_cert, tls_key)
    connection = Connection(_address(given["address"]), credentials)
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
    meta = {"path": session.path, "writer": session.writer, "address": connection.address}
    spool = _open_spool(spool_root(dir), session.path, meta)
    return Run(connection, session, started_at, bool(given["allow_val_change"]), spool=spool)


class Settings(dict[str, Any]):
    """W&B's `wandb.Settings(...)` for `init(settings=...)`: the fields given, as a dict.
    Those that map to an init argument (run_name, run_notes, run_tags, run_group,
    run_job_type, run_id, project, entity, api_key, base_url, reinit, resume, resume_from,
    fork_from, allow_val_change) are applied; init names the others in its warning."""

    def __init__(self, **fields: Any) -> None:
        super().__init__(fields)


def _settings_mapping(settings: Any) -> dict[str, Any]:
    """W&B's settings as a dict: `runhistory.Settings(...)`, a dict, or a `wandb.Settings`
    (the fields it was given)."""
    if settings is None:
        return {}
    if isinstance(settings, Mapping):
        return dict(settings)
    fields_set = getattr(settings, "model_fields_set", None)  # a pydantic model: wandb's
    if fields_set is not None:
        return {field: getattr(settings, field) for field in sorted(fields_set)}
    raise InvalidArgument(
        f"settings is a dict or runhistory.Settings(...), got {type(settings).__name__}"
    )


def _reinit_mode(reinit: object) -> str:
    """W&B's reinit as one of its modes; "default" is "return_previous" outside notebooks.
    Any value is checked here: settings.reinit arrives unchecked, from W&B's Settings."""
    if reinit is None or reinit == "default" or reinit is False:
        return "return_previous"
    if reinit is True:
        return "finish_previous"
    if reinit not in REINIT_CHOICES:
        raise InvalidArgument(
            f"invalid reinit {reinit!r}: use one of {', '.join(REINIT_CHOICES)} (or a bool)"
        )
    return str(reinit)


def _address(address: str | None) -> str | None:
    """An address, or W&B's base_url (`http://host:port`) as one: host:port."""
    if address and "://" in address:
        address = address.split("://", 1)[1].rstrip("/")
    return address


def _dashless(config: Mapping[str, Any]) -> dict[str, Any]:
    """Config keys without leading or trailing dashes, as W&B's ("--lr" from argparse: "lr")."""
    return {key.strip("-") if isinstance(key, str) else key: v for key, v in config.items()}


def _filtered_config(
    config: Mapping[str, Any],
    exclude_keys: Sequence[str] | None,
    include_keys: Sequence[str] | None,
) -> Mapping[str, Any]:
    """W&B's config_exclude_keys and config_include_keys (at most one of them)."""
    if exclude_keys and include_keys:
        raise InvalidArgument("use at most one of config_exclude_keys and config_include_keys")
    if include_keys:
        return {key: value for key, value in config.items() if key in include_keys}
    if exclude_keys:
        return {key: value for key, value in config.items() if key not in exclude_keys}
    return config


def _offline_run(
    request: pb.InitRequest,
    address: str | None,
    root: Path,
    started_at: float,
    allow_val_change: bool,
) -> Run:
    """A run written to the spool only: its ID is made here, and `runhistory sync` sends
    the Init (create, or resume if that Init was applied before) and every write."""
    if request.HasField("branch"):
        raise InvalidArgument(
            "mode='offline' cannot rewind or fork (resume_from, fork_from): those need the "
            "server; log offline to a new run and fork it once uploaded"
        )
    if request.resume == "must":
        raise InvalidArgument("mode='offline' cannot check that a run exists: use resume='allow'")
    request.run_id = check_name("run ID", request.run_id or generate_run_id())
    path = f"{request.entity}/{request.project}/{request.run_id}"
    meta = {
        "path": path,
        "writer": "",
        "address": resolve_address(address),
        "init": base64.b64encode(request.SerializeToString()).decode(),
    }
    try:
        spool = Spool.create(root, request.run_id, meta)
    except OSError as error:
        raise InvalidArgument(f"mode='offline' cannot write its spool in {root}: {error}") from None
    session = pb.Session(
        path=path,
        config_json=request.config_json,
        name=request.name or request.run_id,
        tags=request.tags,
        notes=request.notes,
        group=request.group,
        job_type=request.job_type,
    )
    return Run(None, session, started_at, allow_val_change, spool=spool)


def _open_spool(root: Path, path: str, meta: dict[str, Any]) -> Spool | None:
    """The run's spool folder under `root`, else under the temporary folder; None (writes
    wait in memory only) if neither can be written."""
    run_id = path.split("/")[-1]
    for folder in (root, spool_root(tempfile.gettempdir())):
        try:
            return Spool.create(folder, run_id, meta)
        except OSError as error:
            log.warning("runhistory: cannot write a spool in %s: %s", folder, error)
    return None


def finish_timeout() -> float:
    return env_seconds("RUNHISTORY_FINISH_TIMEOUT", DEFAULT_FINISH_TIMEOUT)


def _config_mapping(config: Any) -> Mapping[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return config
    if hasattr(config, "__dict__"):  # argparse.Namespace and similar
        namespace: dict[str, Any] = vars(config)
        return namespace
    raise InvalidArgument(f"config must be a dict, got {type(config).__name__}")


# ---- the run ------------------------------------------------------------------------------


class Run:
    """A writer session on a run, returned by `init()`. Use it as a context manager or call
    `finish()` when done."""

    def __init__(
        self,
        connection: Connection | None,
        session: pb.Session,
        start_time: float,
        allow_val_change: bool = False,
        spool: Spool | None = None,
    ) -> None:
        self._connection = connection
        self.address = connection.address if connection is not None else ""
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
        # W&B's run details, as the server holds them after this init; setting one (as
        # `run.name = ...`) sends it in order with the rows.
        self._name = session.name or self.id
        self._tags = tuple(session.tags)
        self._notes = session.notes or None
        self._group = session.group or None
        self._job_type = session.job_type or None
        self.resumed = session.resumed
        self.start_time = start_time
        self.url = run_url(session.web_url, self.address, self.path)
        self._writer = session.writer
        self._closed = False
        self._finish_lock = threading.Lock()
        self._limits: Limits = (
            limits_from_proto(session.limits) if session.HasField("limits") else DEFAULT_LIMITS
        )
        self._spool = spool
        self.offline = connection is None
        self._sender = Sender(
            connection, self.path, session.writer, self._limits, spool, session.next_step
        )
        self._queue = self._sender.queue
        # Heartbeats need the server: an offline run sends none.
        self._heartbeat = (
            Heartbeat(connection, self.path, session.writer) if connection is not None else None
        )
        self._metrics: dict[str, Metric] = {}
        self.config = Config(
            self, loads(session.config_json) if session.config_json else {}, allow_val_change
        )
        self.summary = Summary(self)
        _live_runs.add(self)
        _install_exit_hooks()

    def __repr__(self) -> str:
        return f"<runhistory.Run {self.path} version={self.version} step={self.step}>"

    # ---- W&B's run details: name, tags, notes, group, job type -----------------------

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        name = check_run_name(value)
        if name is None:
            raise InvalidArgument("a run name is a non-empty string")
        self._update_details(pb.UpdateDetailsRequest(name=name))
        self._name = name

    @property
    def tags(self) -> tuple[str, ...]:
        return self._tags

    @tags.setter
    def tags(self, value: Sequence[str]) -> None:
        tags = check_tags(value)
        self._update_details(pb.UpdateDetailsRequest(tags=pb.Tags(values=tags)))
        self._tags = tuple(tags)

    @property
    def notes(self) -> str | None:
        return self._notes

    @notes.setter
    def notes(self, value: str) -> None:
        notes = check_detail("notes", value) or ""
        self._update_details(pb.UpdateDetailsRequest(notes=notes))
        self._notes = notes or None

    @property
    def group(self) -> str | None:
        return self._group

    @group.setter
    def group(self, value: str) -> None:
        group = check_detail("group", value) or ""
        self._update_details(pb.UpdateDetailsRequest(group=group))
        self._group = group or None

    @property
    def job_type(self) -> str | None:
        return self._job_type

    @job_type.setter
    def job_type(self, value: str) -> None:
        job_type = check_detail("job_type", value) or ""
        self._update_details(pb.UpdateDetailsRequest(job_type=job_type))
        self._job_type = job_type or None

    def _update_details(self, request: pb.UpdateDetailsRequest) -> None:
        self._write("UpdateDetails", request, "update the run's details")

    @property
    def warnings(self) -> list[str]:
        """What was dropped (rows over the server's limits or of a type it refuses, writes
        it refused) and the server's warnings, e.g. for log calls with a step lower than
        the current one (they were ignored)."""
        return self._sender.warnings

    @property
    def dir(self) -> str | None:
        """The run's spool folder (None if no spool could be written)."""
        return str(self._spool.folder) if self._spool is not None else None

    # ---- logging -----------------------------------------------------------------------

    def log(
        self, data: Mapping[str, Any], step: int | None = None, commit: bool | None = None
    ) -> None:
        """Merge `data` into the row at the current step and commit it (the step then
        advances by 1). `step=s` moves to step s first; `commit=False` merges without
        committing. Returns at once: rows are sent in the background. A row the server
        would refuse (a key, a value's type, its size) is dropped with a warning
        (`run.warnings`); the run goes on."""
        if self._closed:
            self._refuse("log")
        if self._sender.stopped is not None and not self._sender.spooling:
            return  # the right to write was lost: said once, raised by flush() and finish()
        if step is not None:
            step = check_step(step)
        if commit is not None and commit is not True and commit is not False:
            raise InvalidArgument(f"commit is True, False or None, got {commit!r}")
        try:
            flat = flatten(data, self._limits)
            for value in flat.values():
                if type(value) is str:  # only strings can take a row over the size limit
                    check_row_size(step, flat, self._limits)
                    break
        except (InvalidArgument, ResourceExhausted) as refused:
            if not isinstance(data, Mapping):
                raise  # not data but a wrong call
            self._sender.dropped(f"a logged row was refused: {refused.message}")
            return
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
        """Wait until every write so far is acknowledged by the server, or, while it cannot
        be reached (or offline), on disk in the spool; raise the error that stopped writes
        (a revoked key, a session fenced by a rewind)."""
        if not self._closed:
            self._sender.flush(timeout)
        if self._sender.error is not None:
            raise fresh_error(self._sender.error)

    # ---- other writes, in the same order as the rows -------------------------------------

    def _write(self, rpc: str, request: Any, what: str) -> None:
        if self._closed:
            self._refuse(what)
        if self._sender.stopped is not None and not self._sender.spooling:
            return
        self._sender.put(Write(rpc, request, what))

    def define_metric(
        self,
        name: str,
        step_metric: str | Metric | None = None,
        step_sync: bool | None = None,
        hidden: bool | None = None,
        summary: str | None = None,
        goal: str | None = None,
        overwrite: bool | None = None,
    ) -> Metric:
        """W&B's define_metric: `summary` chooses what the summary shows of the metric, a
        comma-separated subset of min,max,mean,first,last, or "none" (or hidden=True) to
        leave it out; "best" with `goal` "minimize" or "maximize" is min or max. Default: the
        last value. `name` may be a glob, `"val/*"`: it applies to every key that starts
        with "val/" and has no definition of its own, logged before or after. `step_metric`,
        `step_sync` and `goal` are kept on the returned Metric; charts here plot by step.
        Without `overwrite`, a definition merges with the previous one of the same name."""
        check_metric_name(name)
        if name != "*":
            flatten({name.removesuffix("*"): 0})  # the key rules of logged values
        if isinstance(step_metric, Metric):
            step_metric = step_metric.name
        if goal is not None and goal not in ("minimize", "maximize"):
            raise InvalidArgument(f"invalid goal {goal!r}: use 'minimize' or 'maximize'")
        choice = summary
        if hidden:
            choice = "none"
        elif summary:
            choice = _best_as_aggregate(summary, goal)
            parse_summary_choice(choice)
        previous = self._metrics.get(name)
        if previous is not None and not overwrite:
            step_metric = step_metric if step_metric is not None else previous.step_metric
            step_sync = step_sync if step_sync is not None else previous.step_sync
            hidden = hidden if hidden is not None else previous.hidden
            if summary is None and previous.summary is not None:
                summary = ",".join(previous.summary)
            goal = goal if goal is not None else previous.goal
        metric = Metric(name, step_metric, step_sync, hidden, summary, goal)
        if choice:
            request = pb.DefineMetricRequest(key=name, summary=choice)
            self._write("DefineMetric", request, "define a metric")
        self._metrics[name] = metric
        return metric

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

    def finish(self, exit_code: int | None = None, quiet: bool | None = None) -> None:
        """Send everything, wait for the server to acknowledge it, and end the run (finished
        on exit code 0 or None, else crashed); `runhistory.run` is then None. If the server
        cannot be reached for $RUNHISTORY_FINISH_TIMEOUT seconds (default 120), the spool
        stays and the command that uploads it is printed. Raises the error that stopped
        writes. Idempotent. `quiet` is W&B's, and has no effect here."""
        if exit_code is None:
            exit_code = 0
        if not isinstance(exit_code, int) or isinstance(exit_code, bool):
            raise InvalidArgument(f"the exit code is an integer, got {exit_code!r}")
        with self._finish_lock:
            if self._closed:
                return
            self._closed = True
            _forget_active(self)
            request = pb.FinishRequest(exit_code=exit_code)
            self._sender.put(Write("Finish", request, "finish", final=True))
        self._wait_for_sender()
        if self._sender.error is not None:
            raise fresh_error(self._sender.error)

    def _wait_for_sender(self) -> None:
        """Wait until everything queued is sent (up to the finish timeout); then release
        the channel. If interrupted, the run stays registered and the exit hook waits
        again."""
        if self._sender.stop(finish_timeout()):
            if self._heartbeat is not None:
                self._heartbeat.stop()
            if self._connection is not None:
                self._connection.close()
            if self.offline and self._spool is not None:
                log.warning(
                    "runhistory: offline run %s is saved in %s; upload it with: runhistory sync %s",
                    self.path,
                    self._spool.folder,
                    self._spool.folder,
                )
        elif self._spool is not None:
            log.warning(
                "runhistory: the server did not take %d spooled writes of %s in %.0f s; they "
                "are kept in %s (still sent while this process lives); upload them with: "
                "runhistory sync %s",
                self._sender.unsent(),
                self.path,
                finish_timeout(),
                self._spool.folder,
                self._spool.folder,
            )
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
        if self._connection is None:
            raise RunNotRunning(f"run {self.path} is offline: read it once it was uploaded")
        if not self._closed:
            return self._connection
        return self._connection.reopen()


class Metric:
    """What `define_metric` defined, as W&B's `wandb.Metric`."""

    def __init__(
        self,
        name: str,
        step_metric: str | None = None,
        step_sync: bool | None = None,
        hidden: bool | None = None,
        summary: str | None = None,
        goal: str | None = None,
    ) -> None:
        self.name = name
        self.step_metric = step_metric
        # W&B's default: synced to the step metric when there is one.
        self.step_sync = step_sync if step_sync is not None else step_metric is not None
        self.hidden = hidden
        self.summary = None if summary is None else tuple(summary.split(","))
        self.goal = goal

    def __repr__(self) -> str:
        return f"<runhistory.Metric {self.name!r} summary={self.summary}>"


def _best_as_aggregate(summary: str, goal: str | None) -> str:
    """W&B's "best" (before 0.19): min when the goal is to minimize, max to maximize."""
    parts = [part.strip().lower() for part in summary.split(",")]
    if "best" in parts:
        if goal is None:
            raise InvalidArgument("summary 'best' needs goal='minimize' or goal='maximize'")
        parts = [("min" if goal == "minimize" else "max") if p == "best" else p for p in parts]
    return ",".join(parts)


# ---- config and summary -------------------------------------------------------------------


class Config:
    """The run's config: a dict whose changes are sent to the server in order with the
    rows. `update(d)` merges top-level keys; attribute access works too (`config.lr`). As in
    W&B, changing a value the config holds is refused unless `allow_val_change` (of the
    update, else of `init`) is true, and leading dashes are dropped from keys ("--lr")."""

    # Set through object.__setattr__ (this class's __setattr__ updates the config); declared
    # here so they are not read as __getattr__'s Any.
    _run: Run
    _data: dict[str, Any]
    _allow_val_change: bool

    def __init__(self, run: Run, data: dict[str, Any], allow_val_change: bool = False) -> None:
        object.__setattr__(self, "_run", run)
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_allow_val_change", allow_val_change)

    def update(
        self,
        changes: Mapping[str, Any] | Any = None,
        /,
        allow_val_change: bool | None = None,
        **more: Any,
    ) -> None:
        checked = check_config(_dashless({**_config_mapping(changes), **more}))
        if not checked:
            return
        if not (self._allow_val_change if allow_val_change is None else allow_val_change):
            self._refuse_changed_values(checked)
        request = pb.UpdateConfigRequest(config_json=dumps(checked))
        self._run._write("UpdateConfig", request, "update the config")
        self._data.update(checked)

    def setdefaults(self, defaults: Mapping[str, Any] | Any) -> None:
        """Set the keys the config does not hold yet; leave the others as they are."""
        fresh = {
            key: value
            for key, value in _config_mapping(defaults).items()
            if not isinstance(key, str) or key.strip("-") not in self._data
        }
        self.update(fresh)

    def _refuse_changed_values(self, checked: Mapping[str, Any]) -> None:
        for key, value in checked.items():
            if key in self._data and self._data[key] != value:
                raise InvalidArgument(
                    f"attempted to change value of key {key!r} from {self._data[key]!r} to "
                    f"{value!r}; if you really want to do this, pass allow_val_change=True to "
                    "config.update() (or to init)"
                )

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

    # Unhashable, as a dict. mypy knows object.__hash__ only as a method, not this idiom.
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
        summary: dict[str, Any] = loads(document.json)  # the server sends a JSON object
        return summary

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


# ---- the active runs: what the module-level calls act on ---------------------------------

# Runs started by init and not finished, oldest first; the global run is the one
# `runhistory.run` names (the last started, unless with reinit="create_new").
_active_runs: list[Run] = []
_global_run: Run | None = None


def active_run() -> Run | None:
    """The most recently started run that is not finished (W&B's reinit looks at it)."""
    return _active_runs[-1] if _active_runs else None


def global_run() -> Run | None:
    """`runhistory.run`: the run init made global, until it finishes."""
    return _global_run


def _forget_active(run: Run) -> None:
    global _global_run
    if run in _active_runs:
        _active_runs.remove(run)
    if _global_run is run:
        _global_run = None


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


__all__ = [
    "Config",
    "Metric",
    "Run",
    "Settings",
    "Summary",
    "active_run",
    "global_run",
    "init",
]
