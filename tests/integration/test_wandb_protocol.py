"""W&B's wire formats (pure) and runhistory keys in the `wandb` client's own format check."""

from __future__ import annotations

import base64
import math
from pathlib import Path

import pytest
from sqlalchemy import update
from wandb.sdk.lib.wbauth.validation import check_api_key

from runhistory.domain.errors import InvalidArgument, Unauthenticated
from runhistory.projections.database import Database
from runhistory.service.auth import KeyStore, Role, _digest, api_keys
from runhistory.service.settings import Settings
from runhistory.service.wandb.caller import api_key
from runhistory.service.wandb.protocol import (
    config_changes,
    history_call,
    read_config,
    read_operation,
    user_values,
    wrap_config,
)

# ---- operation names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("\nmutation UpsertBucket ($id: String) {\n\tupsertBucket(input: {id:$id}) { x }\n}\n",
         "UpsertBucket"),
        ("#graphql\n        query Run($project: String!) {\n project { run { ...RunFragment } } }\n"
         "fragment RunFragment on Run { id }", "Run"),
        ("query Viewer { viewer { id } }", "Viewer"),
        ("# query Commented\nquery Real { x }", "Real"),
        ("{ viewer { id } }", ""),
        ("", ""),
    ],
)  # fmt: skip
def test_the_operation_is_named_by_the_query_text(query: str, name: str):
    assert read_operation(query).name == name


def test_only_the_variables_an_operation_declares_are_given_to_it():
    public_update = (
        "mutation UpsertBucket($id: String!, $config: JSONString!, $display_name: String) {"
        " upsertBucket(input: {id: $id, config: $config}) { bucket { id } } }"
    )
    operation = read_operation(public_update)
    assert operation.variables == {"id", "config", "display_name"}
    sent = {"id": "x", "config": "{}", "name": "r1", "entity": "e", "project": "p"}
    assert operation.given(sent) == {"id": "x", "config": "{}"}
    assert read_operation("query Viewer { viewer { id } }").given(sent) == {}


# ---- config ----------------------------------------------------------------------------------


def test_config_is_the_users_values_without_wandb_internals():
    sent = (
        '{"lr":{"value":0.1},"nested":{"value":{"a":1}},"bare":3,'
        '"_wandb":{"value":{"t":{"1":2},"branch_point":{"run_id":"r1","step":2.0}}},'
        '"wandb_version":{"value":1}}'
    )
    config = read_config(sent)
    assert config.values == {"lr": 0.1, "nested": {"a": 1}, "bare": 3}
    assert config.branch_point == ("r1", 2)
    assert read_config(None).values == {} and read_config(None).branch_point is None
    assert wrap_config({"lr": 0.1}) == '{"lr":{"value":0.1}}'


@pytest.mark.parametrize(
    "bad",
    ['{"_wandb":{"value":{"branch_point":{"step":2}}}}',
     '{"_wandb":{"value":{"branch_point":{"run_id":"r","step":-1}}}}',
     '{"_wandb":{"value":{"branch_point":{"run_id":"r","step":1.5}}}}'],
)  # fmt: skip
def test_a_bad_branch_point_is_refused_with_what_is_allowed(bad: str):
    with pytest.raises(InvalidArgument, match=r"run_id|integer >= 0"):
        _ = read_config(bad).branch_point


def test_config_is_not_json_or_not_an_object():
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        read_config("{nope")
    with pytest.raises(InvalidArgument, match="JSON object"):
        read_config("[1]")


def test_config_changes_are_the_new_keys_and_values():
    current = {"a": 1, "b": {"c": 2}, "n": math.nan}
    assert config_changes(current, {"a": 1, "b": {"c": 2}, "n": math.nan}) == {}
    assert config_changes(current, {"a": 1.0, "d": None}) == {"a": 1.0, "d": None}


# ---- rows and summaries ----------------------------------------------------------------------


def test_history_lines_keep_the_users_values_and_wandb_numbers():
    line = (
        '{"_step":7,"_runtime":0.3,"_timestamp":1.5e9,"_wandb":{"x":1},"loss":NaN,"up":Infinity,'
        '"down":-Infinity,"big":1.1805916207174113e+21,"n":{"a":1,"_type":"image-file"},'
        '"l":[1,2],"none":null}'
    )
    call = history_call(line, 3)
    assert call.step == 7 and call.timestamp == 1.5e9 and call.commit is True
    values = call.data
    assert math.isnan(values["loss"]) and values["up"] == math.inf and values["down"] == -math.inf
    assert values["big"] == 2.0**70
    assert values["n"] == {"a": 1, "_type": "image-file"}
    assert values["l"] == "[1,2]"
    assert values["none"] is None  # stored as null, as W&B stores it
    assert set(values) == {"loss", "up", "down", "big", "n", "l", "none"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"a":1}', "has no _step"),
        ('{"_step":-1}', "integer >= 0"),
        ('{"_step":"3"}', "integer >= 0"),
        ('{"_step":1,"_timestamp":"now"}', "_timestamp"),
        ("[1]", "not a JSON object"),
        ("{bad", "not valid JSON"),
        (5, "not a string"),
    ],
)
def test_bad_history_lines_are_refused_with_their_number(line: object, message: str):
    with pytest.raises(InvalidArgument, match=message) as info:
        history_call(line, 12)
    assert "12" in info.value.message


def test_summary_values_leave_wandb_keys_out_and_keep_nulls():
    given = {"_step": 3, "_wandb": {"runtime": 1}, "best": 0.5, "x": None, "d": {"n": None}}
    assert user_values(given) == {"best": 0.5, "x": None, "d": {"n": None}}


# ---- keys ------------------------------------------------------------------------------------


def test_new_keys_pass_the_wandb_clients_check_and_old_ones_still_work(tmp_path: Path):
    store = KeyStore(Database(Settings(db=str(tmp_path / "k.db")).db_url))
    for _ in range(20):
        record, key = store.create("team", Role.WRITER)
        assert check_api_key(key) is None, key
        assert store.authenticate(key).key_id == record.key_id
    # a key made before: a secret of token_urlsafe's alphabet, dashes and underscores too
    record, _ = store.create("team", Role.READER)
    old_secret = "A_" * 19 + "x-b_c"
    with store.db.write() as conn:
        conn.execute(
            update(api_keys)
            .where(api_keys.c.key_id == record.key_id)
            .values(secret_sha256=_digest(old_secret))
        )
    old_key = f"rh_{record.key_id}_{old_secret}"
    assert store.authenticate(old_key).role == Role.READER
    assert check_api_key(old_key) is not None  # which is why new keys changed


def test_the_sdks_basic_auth_carries_the_key():
    key = "rh_0123456789ab_" + "A" * 43
    basic = base64.b64encode(f"api:{key}".encode()).decode()
    assert api_key(f"Basic {basic}") == key
    assert api_key(f"Bearer {key}") == key
    assert api_key(None) is None
    with pytest.raises(Unauthenticated, match="base64"):
        api_key("Basic %%%")
    with pytest.raises(Unauthenticated):
        api_key("Digest abc")
