"""Rules the SDK checks before sending and the domain enforces again: steps, run names and
tags, artifacts, summary choices. Pure and light: the SDK imports this module without any of
the server's dependencies.
"""

from __future__ import annotations

from collections.abc import Sequence

from runhistory.domain.errors import InvalidArgument

SUMMARY_AGGREGATES = ("min", "max", "mean", "first", "last")
SUMMARY_CHOICES = "a comma-separated subset of min,max,mean,first,last, or 'none'"

ARTIFACT_PRODUCED = "produced"
ARTIFACT_USED = "used"

ARTIFACT_NAME_LENGTH = 256


def parse_summary_choice(summary: str) -> list[str]:
    """`"min,max"` -> `["min", "max"]`; `"none"` -> `[]` (the key is hidden from the summary)."""
    if not isinstance(summary, str):
        raise InvalidArgument(f"summary must be {SUMMARY_CHOICES}")
    parts = [part.strip() for part in summary.split(",") if part.strip()]
    if parts == ["none"]:
        return []
    unknown = [part for part in parts if part not in SUMMARY_AGGREGATES]
    if not parts or unknown:
        raise InvalidArgument(f"invalid summary {summary!r}: expected {SUMMARY_CHOICES}")
    return sorted(set(parts), key=SUMMARY_AGGREGATES.index)


def check_metric_name(name: object) -> str:
    """A metric's name for `define_metric`: a key, or W&B's glob, a prefix and a trailing
    `*` (`"val/*"`, or `"*"` for every key)."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"invalid metric name {name!r}: a non-empty string")
    if "*" in name[:-1]:
        raise InvalidArgument(
            f"invalid metric name {name!r}: a glob has its '*' at the end only ('val/*')"
        )
    return name


def check_artifact(direction: str, name: str, type: str, size: int) -> None:
    if direction not in (ARTIFACT_PRODUCED, ARTIFACT_USED):
        raise InvalidArgument(f"invalid artifact direction {direction!r}: use 'produced' or 'used'")
    for label, text in (("name", name), ("type", type)):
        if not isinstance(text, str) or not text.strip() or len(text) > ARTIFACT_NAME_LENGTH:
            raise InvalidArgument(
                f"an artifact {label} is 1-{ARTIFACT_NAME_LENGTH} characters, got {text!r}"
            )
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"an artifact size is an integer >= 0, got {size!r}")


def check_step(step: object) -> int:
    """An integer >= 0; numpy and other integer scalars are taken as ints."""
    index = getattr(step, "__index__", None)
    if isinstance(step, bool) or index is None:
        raise InvalidArgument(f"invalid step {step!r}: a step is an integer >= 0")
    value: int = index()
    if value < 0:
        raise InvalidArgument(f"invalid step {step!r}: a step is an integer >= 0")
    return value


def check_step_range(min_step: object, max_step: object) -> tuple[int | None, int | None]:
    """The bounds of a history read, each optional: integers >= 0, `min_step <= max_step`.
    The one rule for the SDK, gRPC, the command line and the web API."""
    bounds = []
    for name, bound in (("min_step", min_step), ("max_step", max_step)):
        index = getattr(bound, "__index__", None)
        value = None if bound is None or isinstance(bound, bool) or index is None else index()
        if bound is not None and (value is None or value < 0):
            raise InvalidArgument(
                f"invalid {name} {bound!r}: a step bound is an integer >= 0, or none"
            )
        bounds.append(value)
    low, high = bounds
    if low is not None and high is not None and low > high:
        raise InvalidArgument(f"min_step {low} is above max_step {high}: give min_step <= max_step")
    return low, high


def check_run_name(name: str | None) -> str | None:
    if name is not None and (not isinstance(name, str) or len(name) > 128):
        raise InvalidArgument("a run name is a string of at most 128 characters")
    return name or None


DETAIL_LENGTHS = {"notes": 65_536, "group": 128, "job_type": 64}


def check_detail(label: str, text: str | None) -> str | None:
    """A run's notes, group or job type: a string up to its length (None: not given)."""
    limit = DETAIL_LENGTHS[label]
    if text is not None and (not isinstance(text, str) or len(text) > limit):
        raise InvalidArgument(f"a run's {label} is a string of at most {limit} characters")
    return text


def check_tags(tags: Sequence[str]) -> list[str]:
    if isinstance(tags, str):
        raise InvalidArgument("tags is a list of strings, not a string")
    tags = list(tags or ())
    for tag in tags:
        if not isinstance(tag, str) or not tag or len(tag) > 64:
            raise InvalidArgument(f"invalid tag {tag!r}: tags are 1-64 character strings")
    return tags
