"""Reading selected keys: rows are sealed into blocks by key (domain/series.py) once enough
have gathered, and reads of some keys take the sealed rows from the blocks and the rest
from the rows. Every read here must equal the Python-decoded whole history filtered in
Python, value for value and type for type, whether its rows are sealed or not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from conftest import SHARED, exact
from sqlalchemy import select

import runhistory
from runhistory.domain.identity import RunPath
from runhistory.domain.values import LogCall
from runhistory.projections import history, schema
from runhistory.protos.codec import SYSTEM_KEYS, rows_of_series
from runhistory.service.bootstrap import Running, start
from runhistory.service.runs import RunService
from runhistory.service.settings import Settings

T0 = 1_700_000_000.123456789
QUOTE = 'q"uote'
BACKSLASH = "back\\slash"
UNICODE = "lösung.é"
WEIRD_STRING = 'tab\t"quoted" \\ é ünï 😀 \u2028 {"k":1}, ,"f":2'

ROWS: list[dict[str, Any]] = [
    {
        "f": 1.5,
        "i": 3,
        "b": True,
        "s": "1.5",
        "n": {"x": 2, "y": {"z": "deep"}},
        QUOTE: 1,
        BACKSLASH: 2.0,
        "dot.ted": 0.1,
        UNICODE: "ü",
        "big": 2**62 + 1,
    },
    {"f": math.nan, "i": 0, "b": False, "s": "NaN"},  # not standard JSON: Python decodes it
    {"f": math.inf, "s": "Infinity", QUOTE: 3},
    {"f": -math.inf, "i": -(2**63)},
    {"i": 7, "s": "7"},  # no "f"
    {"s": WEIRD_STRING, "f": -0.0, "b": True},
    {"f": 1e-300, "n": {"x": 1.0}},
    {"f": 1e100, "s": "NaN", UNICODE: 4},  # valid JSON with "NaN" inside a string
    {"other": 1},  # none of the keys read below
    {"f": 0.30000000000000004, "i": 1, "b": False, "s": ""},
]

KEY_SETS: list[list[str]] = [
    ["f"],
    ["i"],
    ["b"],
    ["s"],
    ["big"],
    ["n.x"],
    ["n.y.z"],
    ["n"],  # flattened away: no row holds "n" itself
    ["dot.ted"],
    [QUOTE],
    [BACKSLASH],
    [UNICODE],
    ["missing"],
    ["f", "s", "missing"],
    ["s", "f", "s"],  # repeated keys count once
    ["i", QUOTE],  # one key SQLite cannot name: the whole read takes the generic path
    ["_step"],  # system keys are not stored values: no rows, as before
]


def expected(rows: list[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """The whole history, decoded by Python, filtered to `keys` in Python."""
    wanted = set(keys) - set(SYSTEM_KEYS)  # not stored values
    picked = []
    for row in rows:
        values = {k: v for k, v in row.items() if k in wanted}
        if values:
            picked.append({k: row[k] for k in SYSTEM_KEYS} | values)
    return picked


def read_json(service: RunService, path: RunPath, keys: Sequence[str], **options: Any) -> list:
    return [json.loads(text) for text in service.scan_history(path, keys, as_json=True, **options)]


def log_rows(service: RunService, path: RunPath, writer: Any, rows: list, first: int) -> None:
    calls = [
        LogCall(row, timestamp=T0 + (first + i) / 3, step=first + i) for i, row in enumerate(rows)
    ]
    service.log(path, calls, writer=writer)


# How the rows reach the read model: ROWS are always steps 0..9, then repeated.
LAYOUTS = {
    "rows": (1, 1),  # ten rows in one batch: too few to seal, read from the rows
    "blocks": (30, 1),  # 300 rows in one batch: sealed as they come
    "gathered": (30, 30),  # 30 batches of ten: the first 260 sealed together, 40 left as rows
    "batches": (90, 3),  # three batches of 300: three blocks per key
}


@pytest.fixture(params=list(LAYOUTS))
def run(service: RunService, request: pytest.FixtureRequest) -> RunPath:
    repeats, batches = LAYOUTS[request.param]
    session = service.init("ent", "proj", "keys", started_at=T0)
    rows = ROWS * repeats
    size = len(rows) // batches
    for first in range(0, len(rows), size):
        log_rows(service, session.path, session.writer, rows[first : first + size], first)
    service.finish(session.path, writer=session.writer)
    return session.path


def test_rows_wait_in_the_tail_until_they_are_sealed(service: RunService) -> None:
    session = service.init("ent", "proj", "sealed", started_at=T0)

    def stored() -> tuple[int, int, list[int]]:
        with service._reading(None) as conn:
            segment = RunService._segment(conn, session.path, None)
            tail = schema.history_tail.c
            steps = conn.execute(
                select(tail.step).where(tail.segment_id == segment.id).order_by(tail.step)
            )
            return segment.sealed_rows, segment.sealed_step, list(steps.scalars())

    log_rows(service, session.path, session.writer, ROWS * 30, 0)
    # The last row of a batch waits for the next step (W&B's rule): 299 rows, sealed.
    assert stored() == (299, 298, [])
    for first in range(300, 500, 10):
        log_rows(service, session.path, session.writer, ROWS, first)
    assert stored() == (299, 298, list(range(299, 499)))  # 200 rows: too few to seal
    log_rows(service, session.path, session.writer, ROWS * 6, 500)
    assert stored() == (299 + 200 + 60, 558, [])  # sealed together with the tail
    whole = service.history(session.path)
    assert [row["_step"] for row in whole] == list(range(559))
    assert exact(read_json(service, session.path, ["f", "s"])) == exact(expected(whole, ["f", "s"]))


@pytest.mark.parametrize("keys", KEY_SETS, ids=lambda keys: ",".join(keys))
def test_selected_keys_as_json_equal_the_decoded_history(
    service: RunService, run: RunPath, keys: list[str]
) -> None:
    whole = service.history(run)
    assert exact(read_json(service, run, keys)) == exact(expected(whole, keys))
    # ... and the dict rows of the same read, which Python decodes.
    assert exact(service.history(run, keys=keys)) == exact(expected(whole, keys))


def test_values_come_back_as_logged(service: RunService, run: RunPath) -> None:
    keys = ["f", "i", "b", "s", "big"]
    rows = {row["_step"]: row for row in read_json(service, run, keys, max_step=9)}
    assert exact(rows[0]) == exact(
        {
            "_step": 0,
            "_timestamp": T0,
            "_runtime": rows[0]["_runtime"],
            "f": 1.5,
            "i": 3,
            "b": True,
            "s": "1.5",
            "big": 2**62 + 1,
        }
    )
    assert math.isnan(rows[1]["f"]) and rows[1]["s"] == "NaN" and rows[1]["b"] is False
    assert rows[2]["f"] == math.inf and rows[3]["f"] == -math.inf
    assert rows[3]["i"] == -(2**63) and type(rows[3]["i"]) is int
    assert "f" not in rows[4] and rows[4]["s"] == "7"
    assert rows[5]["s"] == WEIRD_STRING and math.copysign(1, rows[5]["f"]) == -1
    assert rows[6]["f"] == 1e-300 and rows[7]["f"] == 1e100 and rows[7]["s"] == "NaN"
    assert 8 not in rows
    assert rows[9]["f"] == 0.30000000000000004 and rows[9]["s"] == ""
    assert [row["_timestamp"] for row in rows.values()] == [
        T0 + step / 3 for step in (0, 1, 2, 3, 4, 5, 6, 7, 9)
    ]
    nested = read_json(service, run, ["n.x", "n.y.z", UNICODE, QUOTE], max_step=9)
    assert exact([{k: v for k, v in row.items() if k[0] != "_"} for row in nested]) == exact(
        [
            {"n.x": 2, "n.y.z": "deep", UNICODE: "ü", QUOTE: 1},
            {QUOTE: 3},
            {"n.x": 1.0},
            {UNICODE: 4},
        ]
    )


def test_step_bounds(service: RunService, run: RunPath) -> None:
    whole = service.history(run, min_step=2, max_step=7)
    for keys in (["f"], ["s", "i"]):
        read = read_json(service, run, keys, min_step=2, max_step=7)
        assert exact(read) == exact(expected(whole, keys))
        assert read[0]["_step"] >= 2


@pytest.mark.parametrize("page_points", [1, 7, 50, 1800])
def test_pages(service: RunService, run: RunPath, page_points: int) -> None:
    """Series split over many pages, cut inside blocks, with NaN rows and rows without the
    key in them."""
    with service._reading(None) as conn:
        segment = RunService._segment(conn, run, None)
        pages = list(history.read_series(conn, segment, ["f", "s"], page_points=page_points))
    assert len(pages) > 1 or segment.sealed_step is None
    assert [page.upto for page in pages] == sorted({page.upto for page in pages})
    rows = [row for page in pages for row in rows_of_series(page.series)]
    assert exact(rows) == exact(expected(service.history(run), ["f", "s"]))


def test_rewinds_and_forks(service: RunService, run: RunPath) -> None:
    # Rewind to step 4: the old rows 5.. are archived and must not come back.
    rewound = service.init("ent", "proj", resume_from=f"{run.run_id}?_step=4", started_at=T0)
    replaced = [{"f": 100.0 + i, "s": f"new {i}"} for i in range(3)] + [{"f": math.nan}]
    log_rows(service, run, rewound.writer, replaced, 5)
    service.finish(run, writer=rewound.writer)
    # Fork the rewound run at step 6: inherits 0..6 (old 0..4 and new 5, 6).
    fork = service.init("ent", "proj", "fork", fork_from=f"{run.run_id}?_step=6", started_at=T0)
    log_rows(service, fork.path, fork.writer, [{"f": -1.0, "i": 5}, {"s": "fork"}], 7)
    service.finish(fork.path, writer=fork.writer)

    for keys in (["f"], ["s"], ["f", "s", "i"], [QUOTE]):
        for path, options in (
            (run, {}),
            (run, {"version": 1}),  # the archived version, as it was
            (fork.path, {}),
            (fork.path, {"own_only": True}),
            (fork.path, {"min_step": 3, "max_step": 7}),
        ):
            whole = service.history(path, **options)
            assert exact(read_json(service, path, keys, **options)) == exact(
                expected(whole, keys)
            ), (keys, path, options)

    fs = [(row["_step"], row["f"]) for row in read_json(service, run, ["f"])]
    assert fs[4:7] == [(5, 100.0), (6, 101.0), (7, 102.0)] and math.isnan(fs[7][1])
    assert len(fs) == 8
    fork_fs = [(row["_step"], row["f"]) for row in read_json(service, fork.path, ["f"])]
    assert fork_fs[-3:] == [(5, 100.0), (6, 101.0), (7, -1.0)]


# ---- end to end: the SDK over gRPC ----------------------------------------------------


@pytest.fixture
def server(database: str) -> Iterator[Running]:
    running = start(Settings(db=database, require_keys=False), "127.0.0.1:0")
    yield running
    running.stop()


@pytest.mark.backends(*SHARED)
def test_sdk_reads_the_same_values(server: Running, database: str) -> None:
    run = runhistory.init(entity="ent", project="proj", id="sdk", address=server.address)
    for row in ROWS * 30:
        run.log(row)
    run.finish()
    with runhistory.Api(address=server.address) as api:
        read = api.run(run.path)
        whole = list(read.scan_history())
        for keys in KEY_SETS:
            # history_columns reads as the service does (rows holding any of the keys);
            # the values are never None here, so None marks a key a row does not hold.
            columns = read.history_columns(keys=keys)
            rows = [
                {key: column[i] for key, column in columns.items() if column[i] is not None}
                for i in range(len(columns.get("_step", [])))
            ]
            assert exact(rows) == exact(expected(whole, keys)), keys
            if len(set(keys) - set(SYSTEM_KEYS)) == 1:  # W&B's rule is the same for one key
                assert exact(list(read.scan_history(keys=keys))) == exact(rows), keys
