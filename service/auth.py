"""API keys and what they allow.

A key belongs to one entity and has one role: a reader reads that entity's runs, a writer
also logs, rewinds, forks and finishes them, an admin may also read the whole event log and
rebuild the read models (the server operator's tasks). A key never reaches outside its
entity for runs.

A key reads `rh_<key id>_<secret>`: 12 hex digits, then 43 letters and digits. Keys made
before the secret was kept to letters and digits may hold `-` and `_` in it and still work;
letters, digits and underscores alone are what the `wandb` client accepts as a key (40 or
more of them), so a new key works there as it is. Only the SHA-256 of the secret is stored:
the secret is 256 random bits, so a slow password hash would add nothing, and a lookup by
key ID plus a constant-time comparison keeps the check to one primary-key read. Keys are
checked against the database on every request, so a revocation takes effect at once on
every server that shares it. Key rows are never deleted: a revoked key keeps its row, with the time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import time
from dataclasses import dataclass, replace
from enum import IntEnum

from sqlalchemy import Column, Float, MetaData, RowMapping, String, Table, select, update

from runhistory.domain.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    a_or_an,
)
from runhistory.domain.identity import check_name
from runhistory.projections.database import Database

KEY_PREFIX = "rh"
_KEY = re.compile(r"rh_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_SECRET_ALPHABET = string.ascii_letters + string.digits
SECRET_LENGTH = 43  # 43 of 62 symbols: 256 bits
MAX_LABEL_LENGTH = 200

# Not in the read models' metadata: a rebuild drops and refills those tables, never these.
keys_metadata = MetaData()
api_keys = Table(
    "rh_api_keys",
    keys_metadata,
    Column("key_id", String(12), primary_key=True),
    Column("entity", String(64), nullable=False, index=True),
    Column("role", String(16), nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("label", String(MAX_LABEL_LENGTH), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

# Browser sessions of the web UI, each made by signing in with a key. The cookie holds a
# random token; the table only its hash. A session is as good as its key, checked on every
# request, so revoking the key ends its sessions on every server too.
web_sessions = Table(
    "rh_web_sessions",
    keys_metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("key_id", String(12), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)
SESSION_SECONDS = 12 * 3600


class Role(IntEnum):
    READER = 1
    WRITER = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.upper()]
        except (KeyError, AttributeError):
            raise InvalidArgument(f"invalid role {text!r}: use reader, writer or admin") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking. `entity=None` is the local operator of a server without keys."""

    entity: str | None
    role: Role
    key_id: str = ""

    @property
    def own_entity(self) -> str:
        """The entity of a run named without one: the key's ("default" without keys)."""
        return self.entity or KEYLESS_ENTITY

    def require(self, entity: str, role: Role, action: str) -> None:
        """Refuse unless this caller may do `action` on `entity`'s runs. Decided on the
        entity alone, before any lookup, so a refusal says nothing about what exists."""
        if self.entity is not None and self.entity != entity:
            raise PermissionDenied(
                f"this key belongs to entity {self.entity!r}; it may not {action} runs of "
                f"entity {entity!r}"
            )
        self.require_role(role, f"{action} runs of entity {entity!r}")

    def require_role(self, role: Role, action: str) -> None:
        if self.role < role:
            allowed = " or ".join(r.label for r in Role if r >= role)
            raise PermissionDenied(
                f"{a_or_an(self.role.label)} key may not {action}; that needs "
                f"{a_or_an(allowed)} key"
            )


LOCAL_OPERATOR = Principal(entity=None, role=Role.ADMIN)
# A run created without an entity goes to the key's; on a server without keys, here.
KEYLESS_ENTITY = "default"


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    entity: str
    role: Role
    label: str
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeyStore:
    """API keys in the service's database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # In a write transaction: on SQLite a deferred one that reads the schema and then
        # creates the table fails at once, without waiting, if another writer is active.
        with db.making_tables(), db.write() as conn:
            keys_metadata.create_all(conn)

    def create(self, entity: str, role: Role, label: str = "") -> tuple[ApiKey, str]:
        """A new key: its record and the key itself, which is shown once and never stored."""
        check_name("entity", entity)
        if len(label) > MAX_LABEL_LENGTH:
            raise InvalidArgument(f"a key label is at most {MAX_LABEL_LENGTH} characters")
        key_id = secrets.token_hex(6)
        secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
        record = ApiKey(key_id, entity, role, label, time.time(), None)
        with self.db.write() as conn:
            conn.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    entity=entity,
                    role=role.label,
                    secret_sha256=_digest(secret),
                    label=label,
                    created_at=record.created_at,
                )
            )
        return record, f"{KEY_PREFIX}_{key_id}_{secret}"

    def list(self, entity: str | None = None) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        if entity is not None:
            query = query.where(api_keys.c.entity == entity)
        with self.db.read() as conn:
            return [_record(row) for row in conn.execute(query).mappings()]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key by its ID (the part after `rh_`, as `keys list` shows it)."""
        with self.db.write() as conn:
            row = (
                conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()
            )
            if row is None:
                raise NotFound(f"no API key {key_id!r}; `runhistory keys list` shows them")
            revoked_at = row["revoked_at"]
            if revoked_at is None:
                revoked_at = time.time()
                conn.execute(
                    update(api_keys)
                    .where(api_keys.c.key_id == key_id)
                    .values(revoked_at=revoked_at)
                )
        return replace(_record(row), revoked_at=revoked_at)

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise Unauthenticated(
                "no API key: send 'authorization: Bearer KEY' (the SDK reads api_key= or "
                "RUNHISTORY_API_KEY; `runhistory keys create` makes one)"
            )
        match = _KEY.fullmatch(key)
        if match is None:
            raise Unauthenticated("the API key is not valid: keys read 'rh_<id>_<secret>'")
        key_id, secret = match.groups()
        with self.db.read() as conn:
            row = (
                conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()
            )
        if row is None or not hmac.compare_digest(row["secret_sha256"], _digest(secret)):
            raise Unauthenticated("the API key is not valid: no such key")
        return _principal(row)

    # ---- web UI sessions ------------------------------------------------------------------

    def open_session(self, key: str) -> tuple[Principal, str]:
        """Sign in with a key: the principal and a new session token for a cookie."""
        principal = self.authenticate(key)
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self.db.write() as conn:
            conn.execute(
                web_sessions.insert().values(
                    token_sha256=_digest(token),
                    key_id=principal.key_id,
                    created_at=now,
                    expires_at=now + SESSION_SECONDS,
                )
            )
        return principal, token

    def session(self, token: str) -> Principal:
        """The principal of a live session, its key checked again (revocation ends it)."""
        query = (
            select(api_keys)
            .join(web_sessions, web_sessions.c.key_id == api_keys.c.key_id)
            .where(web_sessions.c.token_sha256 == _digest(token))
            .where(web_sessions.c.expires_at > time.time())
        )
        with self.db.read() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            raise Unauthenticated("the session has ended: sign in again")
        return _principal(row)

    def close_session(self, token: str) -> None:
        with self.db.write() as conn:
            conn.execute(
                update(web_sessions)
                .where(web_sessions.c.token_sha256 == _digest(token))
                .values(expires_at=time.time())
            )


def _principal(row: RowMapping) -> Principal:
    if row["revoked_at"] is not None:
        raise Unauthenticated(f"the API key {row['key_id']} was revoked")
    return Principal(entity=row["entity"], role=Role.parse(row["role"]), key_id=row["key_id"])


def bearer_key(authorization: str | None) -> str | None:
    """The key in an `authorization: Bearer KEY` header, or None if there is none."""
    if not authorization:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated("the authorization header must read 'Bearer KEY'")
    return key.strip()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _record(row: RowMapping) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        entity=row["entity"],
        role=Role.parse(row["role"]),
        label=row["label"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )
