"""The pure parts of the SDK's wandb surface: reinit modes, settings, config filters, the
run's web address, define_metric's "best", and W&B's even sampling of history rows."""

from __future__ import annotations

import pytest

from runhistory.client import run_url
from runhistory.domain.errors import InvalidArgument
from runhistory.domain.series import sample
from runhistory.writer import (
    Metric,
    Settings,
    _best_as_aggregate,
    _dashless,
    _filtered_config,
    _reinit_mode,
    _settings_mapping,
)


@pytest.mark.parametrize(
    "reinit, mode",
    [
        (None, "return_previous"),
        ("default", "return_previous"),
        (False, "return_previous"),
        ("return_previous", "return_previous"),
        (True, "finish_previous"),
        ("finish_previous", "finish_previous"),
        ("create_new", "create_new"),
    ],
)
def test_reinit_modes_are_wandbs(reinit, mode):
    assert _reinit_mode(reinit) == mode


def test_an_unknown_reinit_is_refused_naming_the_choices():
    with pytest.raises(InvalidArgument, match="default, return_previous, finish_previous"):
        _reinit_mode("always")


def test_settings_as_a_dict_from_ours_a_dict_or_a_pydantic_model():
    assert _settings_mapping(Settings(run_name="n", start_method="thread")) == {
        "run_name": "n",
        "start_method": "thread",
    }
    assert _settings_mapping({"run_notes": "x"}) == {"run_notes": "x"}
    assert _settings_mapping(None) == {}

    class GivenFields:  # what a wandb.Settings (pydantic) shows: the fields it was given
        model_fields_set = {"run_group", "quiet"}
        run_group, quiet, run_name = "g", True, "default, not given"

    assert _settings_mapping(GivenFields()) == {"quiet": True, "run_group": "g"}
    with pytest.raises(InvalidArgument, match="settings is a dict"):
        _settings_mapping(42)


def test_config_include_and_exclude_keys_and_dashes():
    config = {"lr": 0.1, "bs": 8, "--seed": 1}
    assert _filtered_config(config, ["bs"], None) == {"lr": 0.1, "--seed": 1}
    assert _filtered_config(config, None, ["lr"]) == {"lr": 0.1}
    assert _filtered_config(config, None, None) is config
    with pytest.raises(InvalidArgument, match="at most one"):
        _filtered_config(config, ["a"], ["b"])
    assert _dashless(config) == {"lr": 0.1, "bs": 8, "seed": 1}


@pytest.mark.parametrize(
    "web_url, address, expected",
    [
        ("", "127.0.0.1:50051", None),
        ("http://127.0.0.1:8080", "127.0.0.1:50051", "http://127.0.0.1:8080/e/p/runs/r"),
        (
            "https://0.0.0.0:443",
            "runs.example.org:50051",
            "https://runs.example.org:443/e/p/runs/r",
        ),
        ("http://[::]:8080", "10.0.0.5:50051", "http://10.0.0.5:8080/e/p/runs/r"),
    ],
)
def test_the_run_url_is_the_web_ui_page(web_url, address, expected):
    assert run_url(web_url, address, "e/p/r") == expected


def test_best_is_min_or_max_by_goal():
    assert _best_as_aggregate("best", "minimize") == "min"
    assert _best_as_aggregate("best,last", "maximize") == "max,last"
    assert _best_as_aggregate("MEAN", None) == "mean"
    with pytest.raises(InvalidArgument, match="needs goal"):
        _best_as_aggregate("best", None)


def test_a_metric_syncs_to_its_step_metric_by_default():
    assert Metric("loss", step_metric="epoch").step_sync is True
    assert Metric("loss").step_sync is False
    assert Metric("loss", summary="min,max").summary == ("min", "max")


def test_sample_spreads_rows_evenly_keeping_the_first_and_the_last():
    rows = list(range(1000))
    assert sample(rows, None) == rows
    assert sample(rows, 2000) == rows
    assert sample(rows, 1) == [999]
    picked = sample(rows, 5)
    assert picked == [0, 250, 500, 749, 999]  # round(i * 999 / 4): 249.75 -> 250, 749.25 -> 749
    assert len(sample(rows, 500)) == 500 and sample(rows, 500)[-1] == 999
