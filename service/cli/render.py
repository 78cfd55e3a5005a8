"""What the command line prints: tables, JSON, the progress bar, the lineage tree and
event lines. Standard library only."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from runhistory.domain.identity import RunPath

PROG = "runhistory"


# ---- JSON and tables -------------------------------------------------------------------------


def print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, default=str))


def print_json_lines(rows: Iterable[Any]) -> None:
    """A JSON array with one element per line, written as the elements arrive."""
    first = True
    for row in rows:
        sys.stdout.write(("[\n" if first else ",\n") + json.dumps(row, default=str))
        first = False
    sys.stdout.write("[]\n" if first else "\n]\n")


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return format(value, ".10g") if math.isfinite(value) else json.dumps(value)
    if isinstance(value, Mapping):
        return inline(value)
    return json.dumps(value, default=str)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def inline(mapping: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={cell(value)}" for key, value in mapping.items())


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[cell(value) for value in row] for row in rows]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(headers))]
    widths = [
        max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(padded).rstrip()

    print(line(headers))
    print(line(["─" * width for width in widths]))
    for row in cells:
        print(line(row))


def _is_number(value: Any) -> bool:
    """Right-aligned in tables; blanks (None) go with either."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def print_mapping(mapping: Mapping[str, Any], empty: str, flatten: bool) -> None:
    items = list(_flatten(mapping) if flatten else mapping.items())
    if not items:
        print(empty)
        return
    width = max(len(key) for key, _ in items)
    for key, value in sorted(items):
        print(f"{key:<{width}}  {cell(value)}")


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def print_rows(rows: list[dict[str, Any]], keys: list[str] | None) -> None:
    if not rows:
        print("no rows")
        return
    if keys is None:
        keys = sorted({key for row in rows for key in row if not key.startswith("_")})
    print_table(["_step", *keys], [[row["_step"], *(row.get(k) for k in keys)] for row in rows])
    print(f"({plural(len(rows), 'row')}, {step_span([row['_step'] for row in rows])})")


def local_time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def step_span(steps: Sequence[int]) -> str:
    return f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}..{steps[-1]}"


def plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


# ---- progress ------------------------------------------------------------------------------


class ProgressBar:
    """`label [#####-----] position/target` on stderr, redrawn at most 10 times a second."""

    def __init__(self, label: str, width: int = 30) -> None:
        self.label = label
        self.width = width
        self.drawn = 0.0
        self.pending: tuple[int, int] | None = None
        self.last: tuple[int, int] | None = None

    def show(self, applied: int, position: int, target: int) -> None:
        if (position, target) == self.last:
            return
        self.pending = (position, target)
        now = time.monotonic()
        if now - self.drawn >= 0.1 or position >= target:
            self._draw()
            self.drawn = now

    def _draw(self) -> None:
        if self.pending is None:
            return
        position, target = self.pending
        done = min(position / target, 1.0) if target else 1.0
        bar = "#" * int(done * self.width)
        sys.stderr.write(
            f"\r{self.label} [{bar:<{self.width}}] {position:,}/{target:,} ({done:.0%})"
        )
        sys.stderr.flush()
        self.last = self.pending
        self.pending = None

    def finish(self) -> None:
        self._draw()
        if self.last is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()


# ---- lineage tree --------------------------------------------------------------------------


def lineage_lines(tree: Mapping[str, Any]) -> list[str]:
    """Ancestors from the root down, the run with its versions, each version's forks (and
    their forks) below it."""
    lines: list[str] = []
    indent = ""
    chain = list(reversed(tree["ancestors"]))  # root first
    if chain:
        lines.append(chain[0]["run"])
        for index, link in enumerate(chain):
            child = chain[index + 1]["run"] if index + 1 < len(chain) else tree["run"]
            mark = "  (this run)" if index + 1 == len(chain) else ""
            lines.append(
                f"{indent}└─ fork at step {link['step']} of v{link['version']}: {child}{mark}"
            )
            indent += "   "
    else:
        lines.append(f"{tree['run']}  (this run)")

    by_version: dict[int, list[Mapping[str, Any]]] = {}
    for child in tree["descendants"]:
        by_version.setdefault(child["source_version"], []).append(child)
    known = {v["version"] for v in tree["versions"]}
    strays = [c for c in tree["descendants"] if c["source_version"] not in known]

    branches: list[tuple[str, list[Mapping[str, Any]]]] = []
    for v in tree["versions"]:
        status = f"archived, rewound to step {v['rewound_to_step']}" if v["archived"] else "live"
        branches.append((f"v{v['version']}  {status}", by_version.get(v["version"], [])))
    branches += [(_fork_label(child, True), child["descendants"]) for child in strays]

    for index, (label, children) in enumerate(branches):
        last = index == len(branches) - 1
        lines.append(f"{indent}{'└─' if last else '├─'} {label}")
        _descend(lines, children, indent + ("   " if last else "│  "), with_version=False)
    return lines


def _descend(
    lines: list[str], children: list[Mapping[str, Any]], indent: str, with_version: bool
) -> None:
    for index, child in enumerate(children):
        last = index == len(children) - 1
        lines.append(f"{indent}{'└─' if last else '├─'} {_fork_label(child, with_version)}")
        _descend(lines, child["descendants"], indent + ("   " if last else "│  "), True)


def _fork_label(child: Mapping[str, Any], with_version: bool) -> str:
    source = f" of v{child['source_version']}" if with_version else ""
    return f"fork {child['run']} at step {child['step']}{source}"


# ---- events --------------------------------------------------------------------------------


class RunNames:
    """Shows runs by path: learnt from their creation events, else a short UUID."""

    def __init__(self, path: str | None) -> None:
        self.names: dict[str, str] = {}
        if path is not None:
            self.names[str(RunPath.parse(path).aggregate_id)] = path

    def line(self, event: Mapping[str, Any]) -> str:
        payload = event.get("payload") or {}
        uuid = str(event["run_uuid"])
        if event["type"] == "Created" and {"entity", "project", "run_id"} <= payload.keys():
            self.names[uuid] = f"{payload['entity']}/{payload['project']}/{payload['run_id']}"
        run = self.names.get(uuid, uuid[:8])
        return (
            f"{event['position']:>7}  {local_time(event['timestamp'])}  {run:<28}  "
            f"{event['type']:<16}  {_describe_payload(payload)}"
        ).rstrip()


def _describe_payload(payload: Mapping[str, Any], width: int = 100) -> str:
    shown: dict[str, Any] = {}
    for key, value in payload.items():
        if key in ("writer", "seq") or value in (None, [], {}):
            continue
        if key == "rows" and isinstance(value, list):
            steps = [row[0] for row in value if isinstance(row, list | tuple) and row]
            span = f", {step_span(steps)}" if steps else ""
            shown[key] = f"<{plural(len(value), 'row')}{span}>"
        else:
            shown[key] = value
    text = " ".join(
        f"{key}={compact(value) if isinstance(value, Mapping | list) else cell(value)}"
        for key, value in shown.items()
    )
    return text if len(text) <= width else text[: width - 1] + "…"
