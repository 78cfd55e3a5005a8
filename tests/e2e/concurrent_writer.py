"""One SDK writer, run as a script in a process of its own by test_concurrent_writers.py:
`python concurrent_writer.py RUN_ID ROWS GO_FILE`, against the server that
RUNHISTORY_ADDRESS, RUNHISTORY_API_KEY and RUNHISTORY_ENTITY name.

It starts its run, waits until GO_FILE exists (so that every writer logs at once), logs ROWS
rows of 10 keys whose values say which writer and step they belong to, and finishes. It
exits 0 only if no call failed and the SDK logged no error, else 1 with what went wrong.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

KEYS = 10


def row(writer: str, step: int) -> dict[str, object]:
    """The values of one row; the test checks them back."""
    return {"writer": writer, **{f"k{k}": float(step * KEYS + k) for k in range(KEYS)}}


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


def main() -> int:
    run_id, rows, go_file = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    import runhistory

    errors = _Errors()
    logging.getLogger("runhistory").addHandler(errors)
    run = runhistory.init(project="concurrent", id=run_id)
    while not go_file.exists():
        time.sleep(0.01)
    try:
        for step in range(rows):
            run.log(row(run_id, step))
        run.finish()
    except Exception as error:
        print(f"{run_id}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if errors.seen:
        print(f"{run_id}: the SDK logged errors: {errors.seen}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
