"""Summary statistics folded key by key equal the same rows folded one at a time."""

from __future__ import annotations

import math
from typing import Any

from conftest import exact
from hypothesis import given, settings
from hypothesis import strategies as st

from runhistory.domain.summary import SummaryState


def one_at_a_time(start: SummaryState, rows: list[dict[str, Any]]) -> SummaryState:
    state = start.copy()
    for values in rows:
        state.fold(values)
    return state


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
keys = st.sampled_from(["a", "b", "c"])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.dictionaries(keys, values, max_size=3), max_size=5),
    st.lists(st.fixed_dictionaries({"a": values, "b": values}), max_size=40),
    st.lists(st.dictionaries(keys, values, max_size=3), max_size=20),
)
def test_key_by_key_equals_row_by_row(
    before: list[dict[str, Any]], uniform: list[dict[str, Any]], ragged: list[dict[str, Any]]
) -> None:
    start = one_at_a_time(SummaryState(), before)
    for rows in (uniform, ragged):  # the fast path, and rows with differing keys
        folded = start.copy()
        folded.fold_all(rows)
        expected = one_at_a_time(start, rows)
        assert exact(folded.to_json()) == exact(expected.to_json())
        assert list(folded.keys) == list(expected.keys)  # keys in the same order


def test_sums_are_added_in_order() -> None:
    # 1e16 + 1.0 + 1.0 is 1e16 added in order but 1e16 + 2.0 summed first: order shows.
    state = SummaryState()
    state.fold_all([{"x": 1e16}, {"x": 1.0}, {"x": 1.0}, {"x": math.nan}])
    assert state.keys["x"][4] == 1e16 and state.keys["x"][5] == 3
