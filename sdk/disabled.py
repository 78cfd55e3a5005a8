"""`init(mode="disabled")`: a run that accepts every call and does nothing, so a script
runs unchanged without a server and without writing anything (W&B's `mode="disabled"`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runhistory.client import default_entity, default_project


class _Anything(dict[str, Any]):
    """A config or summary that keeps what it is given, in memory, and answers anything."""

    def update(self, changes: Any = None, /, allow_val_change: bool = False, **more: Any) -> None:
        if isinstance(changes, Mapping):
            super().update(changes)
        elif changes is not None and hasattr(changes, "__dict__"):
            super().update(vars(changes))
        super().update(more)

    def setdefaults(self, defaults: Mapping[str, Any] | None = None, **more: Any) -> None:
        for key, value in {**(defaults or {}), **more}.items():
            self.setdefault(key, value)

    def as_dict(self) -> dict[str, Any]:
        return dict(self)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        return self.get(key)

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


class DisabledRun:
    """Every method accepts any arguments and does nothing; attributes have plain values."""

    offline = False
    dir = None

    def __init__(
        self,
        project: str | None = None,
        entity: str | None = None,
        config: Any = None,
        name: str | None = None,
        id: str | None = None,
    ) -> None:
        self.project = project or default_project()
        self.entity = entity or default_entity() or "default"
        self.id = id or "disabled"
        self.name = name or self.id
        self.path = f"{self.entity}/{self.project}/{self.id}"
        self.step = 0
        self.warnings: list[str] = []
        self.config = _Anything()
        self.config.update(config)
        self.summary = _Anything()

    def log(self, data: Any = None, step: int | None = None, commit: bool | None = None) -> None:
        if isinstance(step, int):
            self.step = max(self.step, step)
        elif commit is not False:
            self.step += 1

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _nothing  # flush, finish, define_metric, log_artifact, ...

    def __enter__(self) -> DisabledRun:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __repr__(self) -> str:
        return f"<runhistory.Run {self.path} disabled>"


__all__ = ["DisabledRun"]
