"""The SQLite file's write turn: first come, first served, re-entrant, refused as busy after
its timeout; and the projection runner's pages, bounded by events and by history values."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from runhistory.domain.errors import ServerBusy
from runhistory.domain.run import Run
from runhistory.projections.database import WriteTurn, write_turn
from runhistory.projections.runner import _cut


def test_turns_are_taken_in_the_order_they_were_asked_for() -> None:
    turn = WriteTurn()
    order: list[int] = []
    turn.acquire()
    threads = []
    for n in range(5):

        def wait_turn(n: int = n) -> None:
            with turn.taken():
                order.append(n)

        thread = threading.Thread(target=wait_turn)
        thread.start()
        threads.append(thread)
        while len(turn._waiting) < n + 1:  # queued before the next one asks
            time.sleep(0.001)
    # The holder asks again at once, as the read models' catch-up does page after page:
    # it queues behind the waiting threads instead of overtaking them.
    turn.release()
    with turn.taken():
        order.append(99)
    for thread in threads:
        thread.join()
    assert order == [0, 1, 2, 3, 4, 99]


def test_a_turn_is_reentrant_and_released_by_its_holder_only() -> None:
    turn = WriteTurn()
    with turn.taken(), turn.taken():
        assert turn._depth == 2
    assert turn._owner is None
    with pytest.raises(RuntimeError, match="does not hold it"):
        turn.release()


def test_a_writer_that_waits_too_long_is_refused_as_busy_and_leaves_the_queue() -> None:
    turn = WriteTurn(timeout=0.05)
    turn.acquire()
    refused: list[BaseException] = []

    def wait_turn() -> None:
        try:
            with turn.taken():
                pass
        except ServerBusy as error:
            refused.append(error)

    thread = threading.Thread(target=wait_turn)
    thread.start()
    thread.join()
    assert refused and "busy" in refused[0].message and "retry" in refused[0].message
    assert refused[0].code == "UNAVAILABLE"
    assert not turn._waiting
    turn.release()
    assert turn.acquire(timeout=0)  # free again: the refused waiter holds nothing


def test_one_turn_per_file(tmp_path) -> None:
    assert write_turn(str(tmp_path / "a.db")) is write_turn(str(tmp_path / "." / "a.db"))
    assert write_turn(str(tmp_path / "a.db")) is not write_turn(str(tmp_path / "b.db"))


def _rows_logged(rows: int, keys: int = 10) -> Run.RowsLogged:
    return Run.RowsLogged(
        originator_id=uuid.uuid4(),
        originator_version=2,
        timestamp=Run.RowsLogged.create_timestamp(),
        rows=[[s, 0.0, 0.0, {f"k{k}": 1.0 for k in range(keys)}] for s in range(rows)],
        next_step=rows,
        pending=None,
        writer=None,
        seq=None,
    )


def test_a_page_holds_at_most_its_events_and_history_values() -> None:
    events = [(p, _rows_logged(1_000)) for p in range(1, 8)]  # 10,001 values each
    page, rest = _cut(events, limit=50, points=25_000)
    assert [p for p, _ in page] == [1, 2] and [p for p, _ in rest] == [3, 4, 5, 6, 7]
    page, rest = _cut(events, limit=1, points=25_000)
    assert [p for p, _ in page] == [1] and len(rest) == 6
    # An event larger than the budget is a page of its own, not stuck.
    page, rest = _cut(events, limit=50, points=10)
    assert [p for p, _ in page] == [1] and len(rest) == 6
    assert _cut([], limit=50, points=10) == ([], [])
