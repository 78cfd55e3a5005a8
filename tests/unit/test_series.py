"""History key by key (domain/series.py): rows to packed series and back, exactly."""

from __future__ import annotations

import math
from typing import Any

import pytest
from conftest import exact
from hypothesis import given, settings
from hypothesis import strategies as st

from runhistory.domain.series import (
    FLOATS,
    INTS,
    JSON,
    RUNTIME,
    TIMESTAMP,
    Series,
    concat,
    series_of_rows,
    steps_between,
    with_rows_holding_keys,
)
from runhistory.protos import codec
from runhistory.protos.codec import extend_columns, rows_of_series


def as_rows(rows: list[tuple[int, float, float, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [
        {"_step": step, "_timestamp": timestamp, "_runtime": runtime, **values}
        for step, timestamp, runtime, values in rows
    ]


def table(*values: dict[str, Any]) -> list[tuple[int, float, float, dict[str, Any]]]:
    return [(step * 2, 1e9 + step, step / 4, row) for step, row in enumerate(values)]


def by_key(series: list[Series]) -> dict[str, Series]:
    return {s.key: s for s in series}


def test_each_key_is_packed_in_the_narrowest_kind_that_keeps_its_values() -> None:
    rows = table(
        {"f": 1.5, "i": 1, "b": True, "big": 2**63, "mix": 1, "s": "x", "none": None},
        {"f": math.nan, "i": -(2**63), "b": False, "big": 1, "mix": 2.0, "s": "y", "none": None},
        {"f": -0.0, "i": 2**63 - 1, "b": True, "big": 2, "mix": 3, "s": "", "none": None},
    )
    series = by_key(series_of_rows(rows))
    kinds = {key: s.kind for key, s in series.items()}
    assert kinds == {
        TIMESTAMP: FLOATS,
        RUNTIME: FLOATS,
        "f": FLOATS,
        "i": INTS,
        "b": JSON,  # bools are ints to Python, not to readers
        "big": JSON,  # beyond int64
        "mix": JSON,  # ints and floats: each keeps its type
        "s": JSON,
        "none": JSON,
    }
    assert len(series["f"].values) == 3 * 8 and series["f"].steps == series[TIMESTAMP].steps
    assert exact(rows_of_series(list(series.values()))) == exact(as_rows(rows))


def test_sparse_keys_have_their_own_steps() -> None:
    rows = table({"loss": 1.0}, {"loss": 0.5, "eval": 0.9}, {}, {"loss": 0.25})
    series = by_key(series_of_rows(rows))
    assert series["eval"].step_list() == [2] and series["loss"].step_list() == [0, 2, 6]
    assert series[TIMESTAMP].step_list() == [0, 2, 4, 6]  # the empty row is a row
    assert exact(rows_of_series(list(series.values()))) == exact(as_rows(rows))
    # A read of some keys: only the rows holding one of them.
    eval_only = with_rows_holding_keys(series_of_rows(rows, keys={"eval"}))
    assert rows_of_series(eval_only) == [
        {"_step": 2, "_timestamp": 1e9 + 1, "_runtime": 0.25, "eval": 0.9}
    ]
    assert with_rows_holding_keys(series_of_rows(rows, keys={"missing"})) == []


def test_between_and_concat() -> None:
    first = by_key(series_of_rows(table({"k": 1.0}, {"k": 2.0}, {"k": 3.0})))["k"]
    later = series_of_rows([(10, 0.0, 0.0, {"k": "text"}), (12, 0.0, 0.0, {"k": 4})])
    second = by_key(later)["k"]
    assert first.between(0, 2).step_list() == [2] and first.between(None, None) is first
    assert first.between(2, None).value_list() == [3.0] and len(first.between(9, None)) == 0
    joined = concat([first, second])
    assert joined.kind == JSON and joined.step_list() == [0, 2, 4, 10, 12]
    assert exact(joined.value_list()) == exact([1.0, 2.0, 3.0, "text", 4])
    assert exact(joined.between(3, 10).value_list()) == exact([3.0, "text"])
    same = concat([first, first.between(None, 0)])
    assert same.kind == FLOATS and same.value_list() == [1.0, 2.0, 3.0, 1.0]
    assert list(steps_between(first.steps, 0, 4)) == [2, 4]
    assert (first.first_step, first.last_step) == (0, 4)


def test_series_travel_as_protos() -> None:
    series = series_of_rows(table({"f": 0.1, "i": 7, "s": "é"}, {"f": math.inf, "i": 8}))
    messages = codec.series_to_protos(series)
    assert codec.series_from_protos(messages) == series
    # "f" and "i" are in every row: their steps, those of _timestamp, are not sent again.
    sent = {m.key: len(m.steps) for m in messages}
    assert sent == {TIMESTAMP: 16, RUNTIME: 0, "f": 0, "s": 8, "i": 0}
    with pytest.raises(Exception, match="malformed"):
        codec.series_from_protos([codec.pb.Series(key="k", steps=b"\x00" * 8)])  # no values
    with pytest.raises(Exception, match="malformed"):
        codec.series_from_protos([codec.pb.Series(key="k", steps=b"\x00" * 7, floats=b"")])


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(max_size=5),
    st.none(),
)
rows_strategy = st.lists(
    st.dictionaries(st.sampled_from(["a", "b", "c.d", "é"]), values, max_size=4),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(rows_strategy, st.sets(st.sampled_from(["a", "b", "c.d", "é", "zz"]), max_size=3))
def test_any_rows_come_back_exactly(values_per_row: list[dict[str, Any]], keys: set[str]) -> None:
    rows = table(*values_per_row)
    assert exact(rows_of_series(series_of_rows(rows))) == exact(as_rows(rows))
    # Any cut of the steps, joined again, is the same history.
    if rows:
        cut = rows[len(rows) // 2][0]
        halves = [
            [s.between(None, cut) for s in series_of_rows(rows)],
            [s.between(cut, None) for s in series_of_rows(rows)],
        ]
        joined = [row for half in halves for row in rows_of_series(half)]
        assert exact(joined) == exact(as_rows(rows))
    # A read of some keys: the rows holding one of them, with only those.
    picked = [
        {**{k: row[k] for k in ("_step", "_timestamp", "_runtime")}, **held}
        for row in as_rows(rows)
        if (held := {k: v for k, v in row.items() if k in keys})
    ]
    keyed = with_rows_holding_keys(series_of_rows(rows, keys=keys))
    assert exact(rows_of_series(keyed)) == exact(picked)


def test_columns_from_pages() -> None:
    first = table({"a": 1.0, "b": "x"}, {"a": 2.0}, {"a": 3.0, "b": "y"})
    later = [(10, 5.0, 6.0, {"c": True}), (11, 7.0, 8.0, {"a": 4.0, "c": False})]
    columns: dict[str, list[Any]] = {}
    extend_columns(columns, series_of_rows(first))
    extend_columns(columns, series_of_rows(later))
    extend_columns(columns, [])  # a page with no rows
    assert columns == {
        "_step": [0, 2, 4, 10, 11],
        "_timestamp": [1e9, 1e9 + 1, 1e9 + 2, 5.0, 7.0],
        "_runtime": [0.0, 0.25, 0.5, 6.0, 8.0],
        "a": [1.0, 2.0, 3.0, None, 4.0],
        "b": ["x", None, "y", None, None],
        "c": [None, None, None, True, False],
    }
