"""Typical W&B scripts with only the import changed (`import runhistory as wandb`), against a
real server on SQLite and PostgreSQL: the module-level calls, `wandb.run` checks, every
argument of `wandb.init`, glob metrics, numpy values, and history as a pandas DataFrame.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sdk_server import (  # noqa: F401 (the fixtures backend, database, server)
    ENTITY,
    SdkServer,
    backend_fixture,
    database_fixture,
    server_fixture,
    use,
)

import runhistory
import runhistory as wandb

np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")


@pytest.fixture
def api(server: SdkServer) -> Iterator[runhistory.Api]:
    with runhistory.Api() as reader:
        yield reader


def quietly_init(**arguments: Any) -> runhistory.Run:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an init that warns fails here
        return wandb.init(**arguments)


# ---- the module-level surface --------------------------------------------------------------


def test_a_module_level_training_script(api: runhistory.Api) -> None:
    assert wandb.run is None
    with pytest.raises(wandb.Error, match=r"call runhistory.init\(\) before runhistory.log"):
        wandb.log({"loss": 1.0})
    with pytest.raises(wandb.Error, match=r"before runhistory\.config\.lr"):
        wandb.config.lr = 0.1
    with pytest.raises(wandb.Error, match=r"before runhistory.summary\['x'\]"):
        wandb.summary["x"]
    wandb.finish()  # nothing to finish: no error, as in W&B

    run = quietly_init(project="mnist", config={"lr": 0.01, "epochs": 3})
    assert wandb.run is run and wandb.config is run.config and wandb.summary is run.summary
    wandb.config.batch_size = 64
    wandb.config.update({"lr": 0.02}, allow_val_change=True)
    for epoch in range(3):
        loss = np.float32(1.0 / (epoch + 1))
        wandb.log(
            {
                "epoch": np.int64(epoch),
                "loss": loss,
                "improved": np.bool_(epoch > 0),  # numpy booleans
                "lr": np.array(0.02),  # a 0-d array
                "note": None,  # stored as null
            }
        )
    if wandb.run is not None:
        wandb.run.log({"extra": 1})
        wandb.run.name = f"mnist-{wandb.run.id}"  # as W&B scripts rename their runs
        wandb.run.tags = (*wandb.run.tags, "numpy")
        wandb.run.notes = "renamed while running"
    with pytest.raises(wandb.InvalidArgument, match="tags is a list of strings"):
        wandb.run.tags = "not-a-list"
    wandb.run.summary["best_loss"] = np.float64(1 / 3)
    wandb.summary.update({"final": True})
    wandb.finish()
    assert wandb.run is None
    assert repr(wandb.config) == "<runhistory.config: call runhistory.init() first>"

    read = api.run(run.path)
    assert read.state == "finished"
    assert (read.name, read.tags, read.notes) == (
        f"mnist-{run.id}",
        ["numpy"],
        "renamed while running",
    )
    assert read.config == {"lr": 0.02, "epochs": 3, "batch_size": 64}
    rows = list(read.scan_history())
    assert [row["_step"] for row in rows] == [0, 1, 2, 3]
    assert [row["improved"] for row in rows[:3]] == [False, True, True]
    assert all(type(row["improved"]) is bool for row in rows[:3])
    assert [row["epoch"] for row in rows[:3]] == [0, 1, 2]
    assert all(type(row["epoch"]) is int for row in rows[:3])
    assert rows[1]["loss"] == pytest.approx(0.5) and rows[0]["lr"] == 0.02
    assert "note" in rows[0] and rows[0]["note"] is None
    assert rows[3] == {**{k: rows[3][k] for k in ("_step", "_timestamp", "_runtime")}, "extra": 1}
    summary = read.summary
    assert summary["best_loss"] == pytest.approx(1 / 3) and summary["final"] is True
    assert summary["note"] is None and summary["extra"] == 1


def test_every_init_argument(api: runhistory.Api, tmp_path: Path) -> None:
    with pytest.warns(UserWarning) as caught:
        run = wandb.init(
            entity=ENTITY,
            project="args",
            id="every-arg",
            name="first name",
            notes="why this run",
            tags=["baseline", "cnn"],
            config={"lr": 0.1, "secret": "x", "--depth": 3},
            config_exclude_keys=["secret"],
            allow_val_change=True,
            group="cv-fold",
            job_type="train",
            reinit="finish_previous",
            resume="allow",
            save_code=True,
            tensorboard=False,
            sync_tensorboard=False,
            monitor_gym=False,
            force=False,
            anonymous="never",
            settings=wandb.Settings(start_method="thread", run_group="ignored: group wins"),
        )
    # One warning names every ignored argument. A collector can run inside init and warn
    # about something else (a connection another test left open), so only ours count.
    (warning,) = [str(w.message) for w in caught if w.category is UserWarning]
    for name in ("force", "save_code", "tensorboard", "sync_tensorboard", "monitor_gym"):
        assert name in warning
    assert "anonymous" in warning and "settings.start_method" in warning
    assert "settings.run_group" not in warning  # it maps, to group
    assert (run.name, run.notes, run.group, run.job_type) == (
        "first name",
        "why this run",
        "cv-fold",
        "train",
    )
    assert run.tags == ("baseline", "cnn") and not run.resumed
    assert dict(run.config) == {"lr": 0.1, "depth": 3}  # excluded; "--depth" as "depth"
    run.config.update({"lr": 0.2})  # allowed by init's allow_val_change
    run.log({"x": 1})
    run.finish()

    # A resume that names details replaces them, as W&B's does; the rest stay.
    resumed = quietly_init(
        project="args", id="every-arg", resume="must", name="second name", tags=["resumed"]
    )
    assert resumed.resumed and resumed.step == 1
    assert (resumed.name, resumed.tags) == ("second name", ("resumed",))
    assert resumed.notes == "why this run"
    with pytest.raises(wandb.InvalidArgument, match="allow_val_change=True"):
        resumed.config.update({"lr": 0.3})  # this session did not allow it
    resumed.log({"x": 2})
    resumed.finish()
    # So does a rewind.
    rewound = quietly_init(
        project="args", resume_from="every-arg?_step=0", notes="rewound to 0", job_type="eval"
    )
    assert rewound.resumed and rewound.step == 1 and rewound.notes == "rewound to 0"
    rewound.finish()
    read = api.run(rewound.path)
    assert (read.name, read.tags, read.notes, read.group, read.job_type) == (
        "second name",
        ["resumed"],
        "rewound to 0",
        "cv-fold",
        "eval",
    )
    assert read.config == {"lr": 0.2, "depth": 3}

    included = quietly_init(
        project="args",
        config={"lr": 0.1, "bs": 8, "seed": 1},
        config_include_keys=["lr", "seed"],
        settings={"run_name": "from settings", "run_notes": "n", "run_tags": ("s",)},
    )
    assert dict(included.config) == {"lr": 0.1, "seed": 1}
    assert (included.name, included.notes, included.tags) == ("from settings", "n", ("s",))
    wandb.finish()
    with pytest.raises(wandb.InvalidArgument, match="at most one of config_exclude_keys"):
        wandb.init(project="args", config_include_keys=["a"], config_exclude_keys=["b"])
    with pytest.raises(wandb.InvalidArgument, match="invalid reinit 'sometimes'"):
        wandb.init(project="args", reinit="sometimes")
    with pytest.raises(wandb.InvalidArgument, match="group is a string of at most 128"):
        wandb.init(project="args", group="g" * 129)
    assert wandb.run is None


def test_reinit_as_in_wandb_0_31(server: SdkServer) -> None:
    first = quietly_init(project="reinit")
    # The default outside notebooks: the active run is returned, and it says so.
    with pytest.warns(UserWarning, match="returning that run"):
        assert wandb.init(project="other") is first
    with pytest.raises(wandb.FailedPrecondition, match="cannot resume a run while another"):
        wandb.init(project="reinit", id=first.id, resume="must")
    # create_new: a run beside it, which does not become wandb.run.
    beside = quietly_init(project="reinit", reinit="create_new")
    assert beside is not first and wandb.run is first
    beside.log({"x": 1})
    # finish_previous (or True): every active run is finished first.
    second = quietly_init(project="reinit", reinit=True)
    assert wandb.run is second and first._closed and beside._closed
    second.finish()
    assert wandb.run is None
    third = quietly_init(project="reinit")  # nothing active: a new run
    assert third is not second and wandb.run is third
    third.finish()


def test_config_changes_follow_wandbs_rule(server: SdkServer) -> None:
    run = quietly_init(project="config", config={"lr": 0.1, "layers": [64, 32]})
    with pytest.raises(wandb.InvalidArgument, match=r"change value of key 'lr' from 0\.1 to 0\.2"):
        wandb.config.update({"lr": 0.2})
    with pytest.raises(wandb.InvalidArgument, match="allow_val_change"):
        wandb.config.lr = 0.3
    wandb.config.update({"lr": 0.1, "layers": (64, 32)})  # the same values: fine
    wandb.config.update({"lr": 0.2}, allow_val_change=True)
    wandb.config.update({"lr": 0.25}, True)  # positional, as W&B's signature has it
    wandb.config.setdefaults({"lr": 1.0, "momentum": 0.9})
    assert dict(wandb.config) == {"lr": 0.25, "layers": [64, 32], "momentum": 0.9}
    assert "allow_val_change" not in wandb.config
    run.finish()
    with runhistory.Api() as api:
        assert api.run(run.path).config == {"lr": 0.25, "layers": [64, 32], "momentum": 0.9}


# ---- metrics ------------------------------------------------------------------------------


def test_glob_metrics_apply_to_keys_logged_before_and_after(api: runhistory.Api) -> None:
    run = quietly_init(project="metrics")
    wandb.log({"val/loss": 3.0, "val/acc": 0.2, "train/loss": 5.0})
    metric = wandb.define_metric("val/*", summary="min", step_metric="epoch")
    assert (metric.name, metric.step_metric, metric.step_sync) == ("val/*", "epoch", True)
    wandb.define_metric("val/acc", summary="best", goal="maximize")
    wandb.define_metric("val/acc", step_metric="epoch")  # merged: the summary stays
    assert run._metrics["val/acc"].summary == ("best",)
    assert run._metrics["val/acc"].goal == "maximize"
    for epoch, (loss, acc) in enumerate([(1.0, 0.7), (2.0, 0.5)]):
        wandb.log({"epoch": epoch, "val/loss": loss, "val/acc": acc, "val/new": loss * 2})
    wandb.define_metric("train/loss", hidden=True)
    with pytest.raises(wandb.InvalidArgument, match="'\\*' at the end only"):
        wandb.define_metric("val/*/loss", summary="min")
    with pytest.raises(wandb.InvalidArgument, match="needs goal="):
        wandb.define_metric("acc", summary="best")
    with pytest.raises(wandb.InvalidArgument, match="invalid goal"):
        wandb.define_metric("acc", summary="max", goal="up")
    wandb.finish()
    summary = api.run(run.path).summary
    assert summary == {
        "epoch": 1,
        "val/acc": {"max": 0.7},
        "val/loss": {"min": 1.0},
        "val/new": {"min": 2.0},
    }


# ---- history as W&B's public API reads it --------------------------------------------------


def test_history_is_a_sampled_dataframe_and_scan_history_every_row(api: runhistory.Api) -> None:
    run = quietly_init(project="history")
    for step in range(1000):
        row = {"loss": 1.0 / (step + 1), "acc": step / 1000}
        if step % 10 == 0:
            row["val_loss"] = step / 10
        wandb.log(row)
    wandb.finish()
    read = api.run(run.path)
    assert read.lastHistoryStep == 999

    frame = read.history()
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == 500
    steps = frame["_step"].tolist()
    assert steps[0] == 0 and steps[-1] == 999 and steps == sorted(set(steps))
    assert set(frame.columns) == {"_step", "_timestamp", "_runtime", "loss", "acc", "val_loss"}

    few = read.history(samples=10)
    assert few["_step"].tolist() == [round(i * 999 / 9) for i in range(10)]

    keyed = read.history(keys=["loss", "val_loss"], samples=1000)  # rows with every key
    assert list(keyed.columns) == ["_step", "loss", "val_loss"]
    assert keyed["_step"].tolist() == list(range(0, 1000, 10))
    assert keyed["val_loss"].tolist() == [float(i) for i in range(100)]
    by_acc = read.history(keys=["loss"], x_axis="acc", samples=3, pandas=False)
    assert by_acc == [
        {"acc": 0.0, "loss": 1.0},
        {"acc": 0.5, "loss": 1 / 501},
        {"acc": 0.999, "loss": 1 / 1000},
    ]

    rows = list(read.scan_history())
    assert [row["_step"] for row in rows] == list(range(1000))
    window = list(read.scan_history(keys=["val_loss"], min_step=100, max_step=130))
    assert [row["_step"] for row in window] == [100, 110, 120]  # max_step excluded, as W&B's
    assert list(read.scan_history(page_size=10, min_step=5, max_step=5)) == []
    assert isinstance(read.created_at, str) and read.created_at.endswith("Z")
    with pytest.raises(wandb.InvalidArgument, match="samples is an integer >= 1"):
        read.history(samples=0)


def test_history_is_a_list_without_pandas(api: runhistory.Api, monkeypatch) -> None:
    run = quietly_init(project="nopandas")
    wandb.log({"x": 1})
    wandb.finish()
    monkeypatch.setitem(__import__("sys").modules, "pandas", None)  # import pandas fails
    with pytest.warns(UserWarning, match="pandas is not installed"):
        rows = api.run(run.path).history()
    assert [row["x"] for row in rows] == [1]


# ---- login and the run's web page ---------------------------------------------------------


def test_login_sets_what_init_and_api_use(server: SdkServer, monkeypatch) -> None:
    monkeypatch.delenv("RUNHISTORY_ADDRESS")
    monkeypatch.delenv("RUNHISTORY_API_KEY")
    assert wandb.login(key=server.api_key, host=f"http://{server.address}/") is True
    run = quietly_init(project="login")
    assert run.address == server.address
    run.finish()
    with wandb.Api() as api:
        assert api.run(run.path).state == "finished"


def test_the_url_is_the_web_ui_page_of_the_run(database: str, monkeypatch) -> None:
    bootstrap = pytest.importorskip("runhistory.service.bootstrap")
    from runhistory.service.auth import Role
    from runhistory.service.settings import Settings

    running = bootstrap.start(Settings(db=database), "127.0.0.1:0", http="127.0.0.1:0")
    try:
        _, key = running.keys.create(ENTITY, Role.ADMIN, "url test")
        monkeypatch.setenv("RUNHISTORY_ADDRESS", running.rpc.address)
        monkeypatch.setenv("RUNHISTORY_API_KEY", key)
        monkeypatch.setenv("RUNHISTORY_ENTITY", ENTITY)
        run = quietly_init(project="web", id="page", reinit="create_new")
        expected = f"{running.web.url}/{ENTITY}/web/runs/page"
        assert run.url == expected
        run.finish()
        with wandb.Api() as api:
            assert api.run(run.path).url == expected
    finally:
        running.stop()


def test_the_url_is_none_without_a_web_ui(server: SdkServer) -> None:
    run = quietly_init(project="noweb")
    assert run.url is None
    assert (run.path, run.project, run.entity) == (f"{ENTITY}/noweb/{run.id}", "noweb", ENTITY)
    # run.dir is the run's spool folder, DIR/runhistory/run-<time>-<id> (W&B's
    # DIR/wandb/run-<time>-<id>), DIR being $RUNHISTORY_DIR (set by the server fixture).
    assert run.dir is not None and Path(run.dir).is_dir()
    assert Path(run.dir).parent == Path(os.environ["RUNHISTORY_DIR"]) / "runhistory"
    assert Path(run.dir).name.startswith("run-") and Path(run.dir).name.endswith(f"-{run.id}")
    assert run.start_time > 0 and run.step == 0
    run.finish()
