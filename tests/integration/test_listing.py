"""Listing a project's runs a page at a time, on every backend: keyset cursors that stay
stable while runs are created, the orders, the filters (W&B's MongoDB-style subset) and the
refusals. The surfaces over it (gRPC, SDK, CLI, JSON API) are in tests/e2e/test_listing_surfaces.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import service_on
from sqlalchemy import text

from runhistory.domain.errors import InvalidArgument, NotFound
from runhistory.domain.identity import RunPath
from runhistory.domain.listing import ORDERS, RUN_STATES, RunFilter, from_mongo
from runhistory.domain.run import CRASHED, FINISHED, RUNNING
from runhistory.domain.values import LogCall
from runhistory.projections.runs import page_query
from runhistory.service.runs import RunService

E, P = "team", "listing"


def make_runs(service: RunService, count: int, prefix: str = "r", project: str = P) -> list[str]:
    ids = []
    for i in range(count):
        run_id = f"{prefix}{i:03d}"
        tags = ["even"] if i % 2 == 0 else ["odd"]
        if i % 3 == 0:
            tags.append("third")
        service.create(RunPath(E, project, run_id), name=f"name-{i % 4}", tags=tags)
        ids.append(run_id)
    return ids


def page_through(service: RunService, between=None, **options) -> list[list[str]]:
    pages = []
    cursor = None
    while True:
        page = service.runs_page(E, P, cursor=cursor, **options)
        pages.append([r.run_id for r in page.runs])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor
        if between is not None:
            between(len(pages))


def test_pages_give_every_run_once_in_order_while_runs_are_created(backend: str, tmp_path: Path):
    with service_on(backend, tmp_path) as service:
        ids = make_runs(service, 23)
        # Runs created between pages, and by another thread while pages are read.
        created: list[str] = []
        stop = threading.Event()

        def create_more() -> None:
            n = 0
            while not stop.is_set() and n < 40:
                service.create(RunPath(E, P, f"new{n:03d}"))
                created.append(f"new{n:03d}")
                n += 1

        writer = threading.Thread(target=create_more)
        writer.start()
        try:

            def between(prefix: str):
                return lambda done: service.create(RunPath(E, P, f"{prefix}{done}"))

            ascending = page_through(service, between("up"), page_size=5)
            descending = page_through(service, between("down"), page_size=4, order="-created_at")
        finally:
            stop.set()
            writer.join()

        seen = [run_id for page in ascending for run_id in page]
        assert len(seen) == len(set(seen)), "a run was listed twice"
        assert seen[:23] == ids  # the runs there before, in creation order...
        assert all(len(page) == 5 for page in ascending[:-1])
        # ...then those created while paging, each once, in the order they were created.
        every = [r.run_id for r in service.runs(E, P)]
        assert [r for r in every if r in set(seen)] == seen
        assert {"up1", "up2", "up3"} <= set(seen)

        # Newest first: the runs created after the first page started come before it, so
        # they are not listed; every run that was there is, once, newest first.
        down = [run_id for page in descending for run_id in page]
        assert len(down) == len(set(down))
        assert [r for r in down if r in ids] == ids[::-1]
        assert down[-23:] == ids[::-1]


def test_orders_by_creation_and_by_latest_update(service: RunService) -> None:
    ids = make_runs(service, 6)
    # r002 changes last, then r004: they move to the end of the update order.
    service.log(RunPath(E, P, "r004"), [LogCall({"x": 1}, 1.0)])
    service.log(RunPath(E, P, "r002"), [LogCall({"x": 1}, 1.0)])

    def listed(order: str) -> list[str]:
        return [r for page in page_through(service, page_size=4, order=order) for r in page]

    assert listed("+created_at") == ids
    assert listed("created_at") == ids
    assert listed("-created_at") == ids[::-1]
    updated = ["r000", "r001", "r003", "r005", "r004", "r002"]
    assert listed("+updated_at") == updated
    assert listed("-updated_at") == updated[::-1]


def test_filters(service: RunService) -> None:
    ids = make_runs(service, 12)
    service.finish(RunPath(E, P, "r001"))
    service.finish(RunPath(E, P, "r005"), exit_code=1)  # crashed
    make_runs(service, 3, project="other")  # never listed in P

    def listed(filters: dict | None, **options) -> list[str]:
        pages = page_through(service, run_filter=from_mongo(filters), **options)
        return [run_id for page in pages for run_id in page]

    assert listed(None) == ids
    assert listed({"state": "finished"}) == ["r001"]
    assert listed({"state": {"$in": ["finished", "crashed"]}}) == ["r001", "r005"]
    assert listed({"state": {"$eq": "running"}}) == [i for i in ids if i not in ("r001", "r005")]
    assert listed({"tags": "third"}) == ["r000", "r003", "r006", "r009"]
    assert listed({"tags": {"$in": ["third", "odd"]}}) == [
        "r000", "r001", "r003", "r005", "r006", "r007", "r009", "r011"
    ]  # fmt: skip
    assert listed({"display_name": "name-1"}) == ["r001", "r005", "r009"]
    assert listed({"display_name": {"$regex": "-[23]$"}}) == [
        "r002", "r003", "r006", "r007", "r010", "r011"
    ]  # fmt: skip
    assert listed({"name": "r007"}) == ["r007"]
    assert listed({"name": {"$regex": "^r01"}}) == ["r010", "r011"]
    both = {"tags": "odd", "state": "running"}
    assert listed(both) == ["r003", "r007", "r009", "r011"]
    assert listed({"$and": [{"tags": "odd"}, {"state": "running"}]}) == listed(both)
    # Filters page too: small pages of a filter give the same runs, newest first as asked.
    assert listed(both, page_size=1, order="-created_at") == ["r011", "r009", "r007", "r003"]
    # A tag given twice at creation is one tag.
    service.create(RunPath(E, P, "twice"), tags=["dup", "dup"])
    assert listed({"tags": "dup"}) == ["twice"]
    page = service.runs_page(E, P, run_filter=from_mongo({"tags": "odd"}), with_total=True)
    assert page.total == 6 and len(page.runs) == 6


def test_a_page_carries_fork_links_and_summaries(service: RunService) -> None:
    source = service.create(RunPath(E, P, "source"))
    service.log(source.path, [LogCall({"loss": float(i)}, 1.0 + i) for i in range(5)])
    service.init(E, P, "fork", fork_from="source?_step=3")
    page = service.runs_page(E, P, with_summaries=True)
    by_id = {r.run_id: r for r in page.runs}
    assert by_id["source"].forked_from is None
    assert by_id["fork"].forked_from is not None
    assert (by_id["fork"].forked_from.run, by_id["fork"].forked_from.step) == (
        f"{E}/{P}/source",
        3,
    )
    assert page.summaries is not None and page.summaries["fork"]["loss"] == 3.0
    # After a rewind, the summary is the new version's, as `summary` reads it.
    service.finish(source.path)
    again = service.init(E, P, resume_from="source?_step=1")
    service.log(source.path, [LogCall({"loss": 9.0}, 9.0)], writer=again.writer)
    page = service.runs_page(E, P, with_summaries=True)
    assert page.summaries is not None and page.summaries["source"]["loss"] == 9.0
    for run_id in ("source", "fork"):
        assert page.summaries[run_id] == service.summary(RunPath(E, P, run_id))
    # A page's series, read together, are each run's current version's, as alone.
    paths = [RunPath(E, P, "source"), RunPath(E, P, "fork")]
    together = service.series_of_runs(paths, ["loss"])
    for path in paths:
        alone = list(service.scan_series(path, ["loss"]))
        assert [s.values for p in together[path] for s in p.series] == [
            s.values for p in alone for s in p.series
        ]
    with pytest.raises(NotFound, match="run team/listing/nope does not exist"):
        service.series_of_runs([*paths, RunPath(E, P, "nope")], ["loss"])


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"state": "paused"}, "running, finished, crashed"),
        ({"created_at": {"$gt": 1}}, "cannot filter runs by 'created_at'"),
        ({"$or": [{"state": "running"}]}, "cannot filter runs by '$or'"),
        ({"tags": {"$all": ["a"]}}, "does not support '$all'"),
        ({"tags": {"$in": []}}, "non-empty"),
        ({"tags": {"$in": [1]}}, "strings"),
        ({"display_name": {"$regex": "("}}, "invalid name $regex"),
        ({"name": {"$regex": 5}}, "$regex takes a string"),
        ({"state": "running", "$and": [{"state": "finished"}]}, "name 'state' twice"),
        ({"$and": {"state": "running"}}, "$and takes a list"),
        ("state=running", "filters is a dict"),
    ],
)
def test_unsupported_filters_are_refused_with_what_is_supported(filters, message) -> None:
    with pytest.raises(InvalidArgument) as refused:
        from_mongo(filters)
    assert message in refused.value.message
    if "cannot filter" in message:
        assert "display_name" in refused.value.message  # it says what is supported


def test_bad_cursors_page_sizes_and_orders_are_refused(service: RunService) -> None:
    make_runs(service, 5)
    first = service.runs_page(E, P, page_size=2)
    assert first.next_cursor is not None
    refusals = [
        ({"cursor": "garbage!"}, "invalid cursor"),
        ({"cursor": "W1sxLDIsM10"}, "invalid cursor"),
        ({"cursor": first.next_cursor, "order": "-created_at"}, "belongs to another listing"),
        (
            {"cursor": first.next_cursor, "run_filter": RunFilter(states=("running",))},
            "belongs to another listing",
        ),
        ({"page_size": -1}, "1 to 1000"),
        ({"page_size": 1001}, "1 to 1000"),
        ({"order": "name"}, "+created_at (oldest first), -created_at"),
        ({"run_filter": RunFilter(states=("paused",))}, "running, finished, crashed"),
        ({"run_filter": RunFilter(name_regex="[")}, "invalid name $regex"),
    ]
    for options, message in refusals:
        with pytest.raises(InvalidArgument) as refused:
            service.runs_page(E, P, **options)
        assert message in refused.value.message, (options, refused.value.message)
    # The cursor of another project is refused too.
    with pytest.raises(InvalidArgument, match="belongs to another listing"):
        service.runs_page(E, "other", cursor=first.next_cursor)
    with pytest.raises(InvalidArgument, match="1 to 1000"):
        service.runs_page(E, P, page_size=0)
    # None is the default page size (50).
    assert len(service.runs_page(E, P, page_size=None).runs) == 5


@pytest.mark.backends("postgres")
def test_a_pattern_postgresql_refuses_is_invalid_argument(service: RunService) -> None:
    make_runs(service, 2)
    # Python takes named groups; PostgreSQL's POSIX expressions do not.
    with pytest.raises(InvalidArgument, match="the database refused the \\$regex"):
        service.runs_page(E, P, run_filter=RunFilter(name_regex="(?P<n>name)"))
    assert len(service.runs_page(E, P).runs) == 2  # the service reads on


@pytest.mark.backends("sqlite-file")
def test_a_page_is_a_range_scan_of_the_index(service: RunService) -> None:
    """Keyset paging: no sort of the project's runs and no OFFSET, whatever the order, with
    or without a state and tag filter."""
    make_runs(service, 3)
    with service.db.read() as conn:
        for order in ORDERS:
            for run_filter in (None, RunFilter(states=("running", "crashed"), tags=("odd",))):
                query = page_query(E, P, run_filter, order, 2, 51)
                sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
                assert "OFFSET" not in sql.replace("OFFSET 0", "")  # SQLite's rendering
                plan = " | ".join(
                    row[-1] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"))
                )
                index = "rh_runs_created" if "created" in order else "rh_runs_updated"
                assert f"USING INDEX {index}" in plan, plan
                assert "TEMP B-TREE" not in plan, plan


def test_the_listing_states_are_the_domain_states() -> None:
    assert set(RUN_STATES) == {RUNNING, FINISHED, CRASHED}
