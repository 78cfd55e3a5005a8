"""Who is asking, and may they see this entity: the web UI's one authentication seam.

THE AUTH HOOK. Every HTTP request (pages, JSON, static files) passes through
`Access.authenticate` exactly once, in `server.WebHandler._dispatch`; every data access
passes through `Access.authorize` exactly once, in `api.WebApi._path` / `api.WebApi._entity`.
For now both allow everything: runhistory has no accounts yet. API keys (an
`Authorization: Bearer ...` header) and a session cookie for browser logins plug in here:
`authenticate` returns None for a request that proved nobody (the server answers 401) and
`authorize` raises `PermissionDenied` (403). Nothing else in the web package decides access.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from runhistory.domain.errors import RunHistoryError


class Unauthenticated(RunHistoryError):
    code = "UNAUTHENTICATED"


class PermissionDenied(RunHistoryError):
    code = "PERMISSION_DENIED"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a request; `anonymous` until API keys and logins exist."""

    name: str
    anonymous: bool = True


ANONYMOUS = Principal("anonymous")


class Access:
    def authenticate(self, headers: Mapping[str, str]) -> Principal | None:
        """The principal the request's headers prove, or None to refuse it (401).
        Open for now: every request is the anonymous principal."""
        return ANONYMOUS

    def authorize(self, principal: Principal, entity: str) -> None:
        """Raise PermissionDenied unless `principal` may read `entity`'s runs. Open for now."""
        return None
