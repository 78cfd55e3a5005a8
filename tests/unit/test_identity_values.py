"""Unit tests of run identity (runhistory.domain.identity) and logged values
(runhistory.domain.values)."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from uuid import NAMESPACE_URL, UUID, uuid5

import pytest

from runhistory.domain.errors import InvalidArgument, ResourceExhausted
from runhistory.domain.identity import (
    BRANCH_FORMAT,
    BranchPoint,
    RunPath,
    check_name,
    generate_run_id,
    run_aggregate_id,
)
from runhistory.domain.rules import check_tags
from runhistory.domain.run import Run
from runhistory.domain.values import (
    Limits,
    check_config,
    check_row_size,
    check_value,
    flatten,
    row_size,
    same_value,
)

# ---- run IDs and paths ---------------------------------------------------------------------

VALID_NAMES = ["a", "Z", "0", "abc123", "my-run_1.2", "A.b-C_d", "x" * 64, "-", "_", "..."]
INVALID_NAMES = [
    "",
    "x" * 65,
    "has space",
    " lead",
    "trail ",
    "tab\there",
    "new\nline",
    "trailing\n",
    "a:b",
    "a;b",
    "a,b",
    "a#b",
    "a?b",
    "a/b",
    "a'b",
    'a"b',
    "a\\b",
    "a*b",
    "é",
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_run_ids_entities_and_projects(name):
    path = RunPath(name, name, name)
    assert (path.entity, path.project, path.run_id) == (name, name, name)
    assert check_name("run ID", name) == name


@pytest.mark.parametrize("name", INVALID_NAMES)
@pytest.mark.parametrize("field", ["entity", "project", "run_id"])
def test_invalid_names_are_refused_in_every_part_of_a_path(name, field):
    parts = {"entity": "ent", "project": "proj", "run_id": "run", field: name}
    with pytest.raises(InvalidArgument) as info:
        RunPath(**parts)
    assert info.value.code == "INVALID_ARGUMENT"
    assert "1-64 characters" in info.value.message  # the message says what is allowed


@pytest.mark.parametrize("value", [None, 123, b"abc", ["abc"]])
def test_non_string_names_are_refused(value):
    with pytest.raises(InvalidArgument):
        RunPath("ent", "proj", value)


def test_run_path_str_and_equality():
    path = RunPath("ent", "proj", "run")
    assert str(path) == "ent/proj/run"
    assert path == RunPath("ent", "proj", "run")
    assert path != RunPath("ent", "proj", "other")
    assert hash(path) == hash(RunPath("ent", "proj", "run"))


def test_run_path_parse_full_path():
    assert RunPath.parse("ent/proj/run") == RunPath("ent", "proj", "run")
    # a full path ignores the defaults
    assert RunPath.parse("ent/proj/run", "e2", "p2") == RunPath("ent", "proj", "run")


def test_run_path_parse_bare_id_with_entity_and_project():
    assert RunPath.parse("run", "ent", "proj") == RunPath("ent", "proj", "run")


@pytest.mark.parametrize(
    ("text", "entity", "project"),
    [
        ("run", None, None),  # a bare ID needs an entity and a project
        ("run", "ent", None),
        ("proj/run", "ent", "proj"),
        ("a/b/c/d", None, None),
        ("", "ent", "proj"),
        ("ent//run", None, None),
        ("ent/proj/", None, None),
        ("ent/proj/bad id", None, None),
        (None, "ent", "proj"),
    ],
)
def test_run_path_parse_refuses_malformed_references(text, entity, project):
    with pytest.raises(InvalidArgument):
        RunPath.parse(text, entity, project)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ent/proj/run", ("ent", "proj", "run")),
        ("/ent/proj/run/", ("ent", "proj", "run")),
        ("ent/proj/runs/run", ("ent", "proj", "run")),  # W&B's page address
        ("proj/run", ("e0", "proj", "run")),
        ("run", ("e0", "p0", "run")),
    ],
)
def test_run_path_parse_reference_takes_a_readers_forms(text, expected):
    assert RunPath.parse_reference(text, "e0", "p0") == RunPath(*expected)


@pytest.mark.parametrize(
    "text", ["", "/", "a/b/c/d", "a/b/c/d/e", "ent/proj/bad id", "ent//run", None]
)
def test_run_path_parse_reference_refuses_malformed_paths(text):
    with pytest.raises(InvalidArgument):
        RunPath.parse_reference(text, "e0", "p0")


# ---- branch points -------------------------------------------------------------------------


def test_branch_point_parse_bare_run_id():
    point = BranchPoint.parse("abc?_step=200", "ent", "proj")
    assert point == BranchPoint(RunPath("ent", "proj", "abc"), 200)
    assert point.step == 200
    assert type(point.step) is int


def test_branch_point_parse_full_path():
    point = BranchPoint.parse("ent/proj/abc?_step=0", "other", "other")
    assert point.run == RunPath("ent", "proj", "abc")
    assert point.step == 0


def test_branch_point_str_round_trips():
    point = BranchPoint(RunPath("ent", "proj", "abc"), 42)
    assert str(point) == "ent/proj/abc?_step=42"
    assert BranchPoint.parse(str(point), "x", "y") == point


@pytest.mark.parametrize(
    "text",
    [
        "abc",
        "abc?step=1",
        "abc?_step=-1",
        "abc?_step=x",
        "abc?_step=1.5",
        "abc?_step=",
        "abc?_step",
        "abc?_step=1e3",
        "abc?_step=+1",
        "abc?_step= 1",
        "abc?_step=1&x=2",
        "abc?_runtime=1",
        "abc?_STEP=1",
        "?_step=1",
        "bad id?_step=1",
        "a/b?_step=1",
        "",
        None,
    ],
)
def test_branch_point_parse_refuses_with_the_expected_format(text):
    with pytest.raises(InvalidArgument) as info:
        BranchPoint.parse(text, "ent", "proj")
    assert info.value.code == "INVALID_ARGUMENT"
    assert BRANCH_FORMAT in info.value.message
    assert "?_step=<N>" in info.value.message


# ---- generated IDs and aggregate IDs -------------------------------------------------------


def test_generated_run_ids_are_8_chars_of_lowercase_letters_and_digits():
    ids = [generate_run_id() for _ in range(300)]
    for run_id in ids:
        assert re.fullmatch(r"[a-z0-9]{8}", run_id), run_id
        RunPath("ent", "proj", run_id)  # a generated ID is a valid ID
    assert len(set(ids)) == len(ids)  # random: a collision here is ~1e-8 likely
    # both letters and digits are drawn from
    joined = "".join(ids)
    assert re.search(r"[a-z]", joined)
    assert re.search(r"[0-9]", joined)


def test_aggregate_ids_are_deterministic_uuid5_of_the_path():
    path = RunPath("ent", "proj", "run")
    namespace = uuid5(NAMESPACE_URL, "runhistory:run")
    expected = uuid5(namespace, "ent/proj/run")
    assert path.aggregate_id == expected
    assert run_aggregate_id("ent", "proj", "run") == expected
    assert Run.create_id("ent", "proj", "run") == expected
    assert RunPath("ent", "proj", "run").aggregate_id == path.aggregate_id
    assert isinstance(path.aggregate_id, UUID)
    assert path.aggregate_id.version == 5


def test_aggregate_id_is_pinned_across_releases():
    # The same path must name the same event stream on every server and after every
    # rebuild: changing the namespace or the name format would orphan stored streams.
    assert RunPath("e", "p", "r1").aggregate_id == UUID("850c1b38-ca75-5e8b-a55a-615aebe6f8ed")


def test_aggregate_ids_differ_between_paths():
    ids = {
        RunPath("ent", "proj", "run").aggregate_id,
        RunPath("ent", "proj", "run2").aggregate_id,
        RunPath("ent", "proj2", "run").aggregate_id,
        RunPath("ent2", "proj", "run").aggregate_id,
        RunPath("ent", "proj", "Run").aggregate_id,  # IDs are case-sensitive
    }
    assert len(ids) == 5


def test_a_started_run_has_the_aggregate_id_of_its_path():
    path = RunPath("ent", "proj", "run")
    assert Run.start(path, "w", 0.0).id == path.aggregate_id


# ---- flatten -------------------------------------------------------------------------------


def test_flatten_nested_dicts_to_dotted_keys():
    data = {"a": {"b": 1, "c": {"d": "x", "e": True}}, "f": 2.5}
    assert flatten(data) == {"a.b": 1, "a.c.d": "x", "a.c.e": True, "f": 2.5}


def test_flatten_keeps_flat_data_and_does_not_mutate_the_input():
    data = {"a": {"b": 1}}
    flat = flatten(data)
    assert data == {"a": {"b": 1}}
    assert flatten({"x": 1}) == {"x": 1}
    assert flatten({}) == {}
    assert flat is not data


def test_flatten_keeps_value_kinds():
    flat = flatten(
        {
            "b": False,
            "i": 7,
            "f": 1.0,
            "s": "",
            "nan": float("nan"),
            "pinf": float("inf"),
            "ninf": float("-inf"),
        }
    )
    assert flat["b"] is False
    assert type(flat["i"]) is int
    assert type(flat["f"]) is float
    assert flat["s"] == ""
    assert math.isnan(flat["nan"])
    assert flat["pinf"] == math.inf
    assert flat["ninf"] == -math.inf


def test_flatten_turns_other_real_numbers_into_floats():
    flat = flatten({"q": Fraction(1, 4)})
    assert flat == {"q": 0.25}
    assert type(flat["q"]) is float


def test_flatten_integers_are_64_bit():
    assert flatten({"max": 2**63 - 1, "min": -(2**63)}) == {"max": 2**63 - 1, "min": -(2**63)}
    with pytest.raises(InvalidArgument, match="64-bit"):
        flatten({"big": 2**63})
    with pytest.raises(InvalidArgument, match="64-bit"):
        flatten({"small": -(2**63) - 1})


@pytest.mark.parametrize("key", ["_step", "_timestamp", "_runtime", "_x", "_"])
def test_flatten_refuses_reserved_keys(key):
    with pytest.raises(InvalidArgument, match="reserved"):
        flatten({key: 1})
    with pytest.raises(InvalidArgument, match="reserved"):
        flatten({key: {"nested": 1}})


@pytest.mark.parametrize("data", [{"": 1}, {1: 1}, {None: 1}, {"a": {"": 1}}, {"a": {2: 1}}])
def test_flatten_refuses_keys_that_are_not_non_empty_strings(data):
    with pytest.raises(InvalidArgument, match="non-empty strings"):
        flatten(data)


@pytest.mark.parametrize("value", [[1], (1,), {1}, b"x", object(), 1j])
def test_flatten_refuses_unsupported_values(value):
    with pytest.raises(InvalidArgument) as info:
        flatten({"v": {"w": value}})
    assert "v.w" in info.value.message  # names the key
    assert "allowed" in info.value.message


@pytest.mark.parametrize("data", [[("a", 1)], "a=1", None, 5])
def test_flatten_refuses_non_dict_data(data):
    with pytest.raises(InvalidArgument):
        flatten(data)


def test_flatten_enforces_key_length_on_the_dotted_key():
    limits = Limits(max_key_length=5)
    assert flatten({"ab": {"cd": 1}}, limits) == {"ab.cd": 1}  # exactly 5
    with pytest.raises(ResourceExhausted, match="at most 5"):
        flatten({"ab": {"cde": 1}}, limits)
    with pytest.raises(ResourceExhausted):
        flatten({"abcdef": 1}, limits)


def test_flatten_enforces_keys_per_row_after_flattening():
    limits = Limits(max_keys_per_row=3)
    assert len(flatten({"a": {"b": 1, "c": 2, "d": 3}}, limits)) == 3
    with pytest.raises(ResourceExhausted, match="at most 3 keys"):
        flatten({"a": {"b": 1, "c": 2, "d": 3}, "e": 4}, limits)


def test_row_size_counts_key_and_string_bytes_and_8_per_number():
    assert row_size({}) == 0
    assert row_size({"ab": 1}) == 2 + 8
    assert row_size({"ab": 1.5, "c": True}) == 2 + 8 + 1 + 8
    assert row_size({"k": "héllo"}) == 1 + len("héllo".encode())


def test_check_row_size_refuses_oversize_rows_with_the_limit():
    limits = Limits(max_row_bytes=10)
    check_row_size(3, {"ab": 1}, limits)  # exactly 10 bytes
    with pytest.raises(ResourceExhausted) as info:
        check_row_size(3, {"abc": 1}, limits)
    assert "step 3" in info.value.message
    assert "10 bytes" in info.value.message
    # Before it has a step (the SDK checks a log call before sending it).
    with pytest.raises(ResourceExhausted, match=r"^the row is 11 bytes; at most 10 bytes"):
        check_row_size(None, {"abc": 1}, limits)


def test_check_tags_refuses_a_string_for_the_list():
    assert check_tags(("a", "b")) == ["a", "b"]
    with pytest.raises(InvalidArgument, match="list of strings, not a string"):
        check_tags("ab")


def test_check_value_keeps_bools_as_bools():
    assert check_value("k", True) is True
    assert check_value("k", 0) == 0 and type(check_value("k", 0)) is int


# ---- config --------------------------------------------------------------------------------


def test_check_config_accepts_json_like_values():
    config = {
        "none": None,
        "flag": True,
        "n": 3,
        "x": 0.5,
        "nan": float("nan"),
        "s": "adam",
        "list": [1, "a", None, [2, 3], {"k": 1}],
        "nested": {"a": {"b": 1}},
    }
    checked = check_config(config)
    assert checked["list"] == [1, "a", None, [2, 3], {"k": 1}]
    assert checked["nested"] == {"a": {"b": 1}}  # config is not flattened
    assert checked["flag"] is True
    assert math.isnan(checked["nan"])


def test_check_config_returns_a_copy_with_tuples_as_lists():
    nested = {"b": 1}
    config = {"t": (1, 2), "d": nested}
    checked = check_config(config)
    assert checked["t"] == [1, 2]
    assert checked is not config
    checked["d"]["b"] = 2
    assert nested == {"b": 1}


def test_check_config_allows_keys_starting_with_underscore_and_dots():
    assert check_config({"_private": 1, "a.b": 2}) == {"_private": 1, "a.b": 2}


@pytest.mark.parametrize(
    "config",
    [
        {"": 1},
        {1: 1},
        {"a": {"": 1}},
        {"a": {1: 2}},
        {"a": {1, 2}},
        {"a": b"x"},
        {"a": object()},
        {"a": [object()]},
        {"a": {"b": [1, {"c": object()}]}},
        {"a": 2**63},
        {"a": [2**64]},
    ],
)
def test_check_config_refuses_other_values(config):
    with pytest.raises(InvalidArgument):
        check_config(config)


@pytest.mark.parametrize("config", [[("a", 1)], "a", None, 3])
def test_check_config_refuses_non_dicts(config):
    with pytest.raises(InvalidArgument, match="config must be a dict"):
        check_config(config)


# ---- same_value ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (float("nan"), float("nan")),
        (math.inf, math.inf),
        (-math.inf, -math.inf),
        (1, 1),
        (1.5, 1.5),
        ("x", "x"),
        (True, True),
        (False, False),
    ],
)
def test_same_value_true(a, b):
    assert same_value(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (float("nan"), 1.0),
        (1.0, float("nan")),
        (math.inf, -math.inf),
        (1, 1.0),  # an int is not the float of the same value
        (True, 1),  # a bool is not an int
        (False, 0.0),
        ("1", 1),
        (1, 2),
        ("a", "b"),
    ],
)
def test_same_value_false(a, b):
    assert not same_value(a, b)


def test_names_are_refused_with_the_right_article_and_an_empty_one_says_so() -> None:
    with pytest.raises(InvalidArgument, match=r"invalid entity 'a b': an entity is 1-64"):
        check_name("entity", "a b")
    with pytest.raises(InvalidArgument, match=r"invalid project 'a/b': a project is 1-64"):
        check_name("project", "a/b")
    with pytest.raises(InvalidArgument, match=r"^the entity is empty: an entity is 1-64"):
        check_name("entity", "")


def test_a_role_refusal_names_what_the_key_may_not_touch() -> None:
    from runhistory.domain.errors import PermissionDenied
    from runhistory.service.auth import Principal, Role

    reader = Principal(entity="vision", role=Role.READER, key_id="k")
    with pytest.raises(PermissionDenied) as refused:
        reader.require("vision", Role.WRITER, "write to")
    assert refused.value.message == (
        "a reader key may not write to runs of entity 'vision'; that needs a writer or admin key"
    )
    with pytest.raises(
        PermissionDenied, match=r"^a writer key may not rebuild; that needs an admin key$"
    ):
        Principal(entity=None, role=Role.WRITER).require_role(Role.ADMIN, "rebuild")


# ---- None and numpy values, as W&B takes them -------------------------------------------


def test_none_is_kept_as_null():
    assert flatten({"a": None, "b": {"c": None}}) == {"a": None, "b.c": None}
    assert check_config({"a": None}) == {"a": None}


def test_numpy_scalars_booleans_and_0d_arrays_become_python_values():
    np = pytest.importorskip("numpy")
    flat = flatten(
        {
            "f32": np.float32(0.5),
            "i64": np.int64(3),
            "flag": np.bool_(True),
            "no": np.bool_(False),
            "zero_d": np.array(2.5),
            "zero_d_int": np.array(7),
            "zero_d_bool": np.array(True),
        }
    )
    assert flat == {
        "f32": 0.5,
        "i64": 3,
        "flag": True,
        "no": False,
        "zero_d": 2.5,
        "zero_d_int": 7,
        "zero_d_bool": True,
    }
    assert {key: type(value) for key, value in flat.items()} == {
        "f32": float,
        "i64": int,
        "flag": bool,
        "no": bool,
        "zero_d": float,
        "zero_d_int": int,
        "zero_d_bool": bool,
    }
    config = check_config({"lr": np.float64(0.1), "on": np.bool_(True), "dims": np.array([1, 2])})
    assert config == {"lr": 0.1, "on": True, "dims": [1, 2]}
    assert type(config["on"]) is bool


def test_numpy_arrays_with_dimensions_are_refused_in_rows():
    np = pytest.importorskip("numpy")
    with pytest.raises(InvalidArgument, match="'v' has type ndarray"):
        flatten({"v": np.array([1.0, 2.0])})
    with pytest.raises(InvalidArgument, match="out of range"):
        flatten({"v": np.array(2**64)})  # a 0-d object array of an int too big
