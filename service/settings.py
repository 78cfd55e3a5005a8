"""Service configuration, validated at the boundary."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from runhistory.domain.values import Limits

DEFAULT_DB = "runhistory.db"


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

    @field_validator("db")
    @classmethod
    def _known_form(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the database is a SQLAlchemy URL, a SQLite file path or 'memory'")
        return value.strip()

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
        )
