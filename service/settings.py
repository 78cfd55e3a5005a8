"""Service configuration, validated at the boundary."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from runhistory.domain.values import Limits
from runhistory.service.limits import SIZE_LIMITS, variable

DEFAULT_DB = "runhistory.db"
DEFAULT_CRASH_AFTER = 300.0


class Settings(BaseModel):
    """Where the data lives and how large a write may be.

    `db` is a SQLAlchemy URL (`sqlite:///runhistory.db`, ...), a plain file path (a SQLite
    file), or `memory` for a throwaway in-memory store.
    """

    db: str = Field(default_factory=lambda: os.environ.get("RUNHISTORY_DB", DEFAULT_DB))
    max_key_length: int = Field(default=256, ge=1)
    max_keys_per_row: int = Field(default=10_000, ge=1)
    max_row_bytes: int = Field(default=10 * 1024 * 1024, ge=64)
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=64)
    max_depth: int = Field(default=32, ge=1)
    max_calls_per_batch: int = Field(default=10_000, ge=1)
    # Follow streams (ReadEvents with follow) and log streams hold a worker thread each for
    # as long as the client keeps them open; a cap keeps threads free for everything else.
    max_open_streams: int = Field(default=8, ge=1)
    max_stream_batches: int = Field(default=100_000, ge=1)
    # Every request needs an API key; turning this off is only allowed on loopback.
    require_keys: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Set to require client certificates signed by this CA.
    tls_client_ca: Path | None = None
    # A running run whose writer has been silent this long (no write, no heartbeat) is
    # marked crashed; 0 turns crash detection off.
    crash_after: float = Field(
        default_factory=lambda: os.environ.get("RUNHISTORY_CRASH_AFTER") or DEFAULT_CRASH_AFTER,
        validate_default=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _limits_from_environment(cls, data: Any) -> Any:
        """A size limit not given is taken from its RUNHISTORY_MAX_... variable, if set;
        validated as if given (`serve --max-row-bytes` passes it in)."""
        if not isinstance(data, dict):
            return data
        found = {
            name: os.environ[variable(name)].strip()
            for name in SIZE_LIMITS
            if name not in data and os.environ.get(variable(name), "").strip()
        }
        return {**data, **found} if found else data

    @field_validator("db")
    @classmethod
    def _known_form(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the database is a SQLAlchemy URL, a SQLite file path or 'memory'")
        return value.strip()

    @field_validator("crash_after", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> float:
        try:
            # Whatever the setting was given: float() takes what it can, else TypeError.
            seconds = float(value) if not isinstance(value, bool) else math.nan  # type: ignore[arg-type]
        except (TypeError, ValueError):
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(
                "the crash timeout (--crash-after, RUNHISTORY_CRASH_AFTER) is a number of "
                f"seconds >= 0, 0 to never mark runs crashed; got {value!r}"
            )
        return seconds

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and its private key")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("client certificates need the server's own TLS certificate too")
        for name in ("tls_cert", "tls_key", "tls_client_ca"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file {str(path)!r}")
        return self

    @property
    def db_url(self) -> str:
        if self.db == "memory" or self.db in ("sqlite://", "sqlite:///:memory:"):
            return "sqlite://"
        if "://" in self.db:
            return self.db
        return "sqlite:///" + str(Path(self.db).expanduser().resolve())

    @property
    def limits(self) -> Limits:
        return Limits(
            max_key_length=self.max_key_length,
            max_keys_per_row=self.max_keys_per_row,
            max_row_bytes=self.max_row_bytes,
            max_request_bytes=self.max_request_bytes,
            max_depth=self.max_depth,
            max_calls_per_batch=self.max_calls_per_batch,
        )
