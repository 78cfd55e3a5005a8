"""Who is asking, and may they see this entity: the web UI's one authentication seam.

Every HTTP request passes through `Access.authenticate` exactly once, in `WebApp.handle`;
every data access passes through `Access.authorize` exactly once, in `api.WebApi._path` /
`api.WebApi._entity`. Nothing else in the web package decides access.

A request proves who it is by an API key (`Authorization: Bearer KEY`, for scripts) or by
the session cookie a browser gets when it signs in with a key. Both are checked against the
key's row on every request, so a revoked key is refused at once, sessions included. The web
UI only reads, so any role may use it, inside its own entity. A server without keys
(`Access(None)`, loopback only) lets every request through as the local operator.
"""

from __future__ import annotations

from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie

from runhistory.domain.errors import Unauthenticated
from runhistory.service.auth import (
    LOCAL_OPERATOR,
    SESSION_SECONDS,
    KeyStore,
    Principal,
    Role,
    bearer_key,
)

SESSION_COOKIE = "rh_session"


class Access:
    def __init__(self, keys: KeyStore | None = None, secure_cookies: bool = False) -> None:
        self.keys = keys
        self.secure_cookies = secure_cookies

    @property
    def open(self) -> bool:
        return self.keys is None

    def authenticate(self, headers: Mapping[str, str]) -> Principal | None:
        """The principal the request proves; None if it offers nothing (sign in first).
        A key or session that is offered but not valid raises Unauthenticated."""
        if self.keys is None:
            return LOCAL_OPERATOR
        key = bearer_key(header(headers, "authorization"))
        if key is not None:
            return self.keys.authenticate(key)
        token = session_token(headers)
        if token is not None:
            return self.keys.session(token)
        return None

    def authorize(self, principal: Principal, entity: str) -> None:
        """Raise PermissionDenied unless `principal` may read `entity`'s runs."""
        principal.require(entity, Role.READER, "read")

    # ---- signing in and out ---------------------------------------------------------------

    def sign_in(self, key: str) -> tuple[Principal, str]:
        """Check the key and open a session: the principal and the Set-Cookie value."""
        if self.keys is None:
            raise Unauthenticated("this server has no API keys: there is nothing to sign in to")
        principal, token = self.keys.open_session(key.strip())
        return principal, self._cookie(token, SESSION_SECONDS)

    def sign_out(self, headers: Mapping[str, str]) -> str:
        """End the request's session, if any; the Set-Cookie value that clears the cookie."""
        token = session_token(headers)
        if token is not None and self.keys is not None:
            self.keys.close_session(token)
        return self._cookie("", 0)

    def _cookie(self, value: str, max_age: int) -> str:
        # HttpOnly: page scripts never see it. SameSite=Strict: other sites' pages cannot
        # make the browser send it. Secure whenever the UI is served over TLS.
        secure = "; Secure" if self.secure_cookies else ""
        return (
            f"{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; "
            f"SameSite=Strict{secure}"
        )


def session_token(headers: Mapping[str, str]) -> str | None:
    raw = header(headers, "cookie")
    if not raw:
        return None
    try:
        cookie = SimpleCookie(raw)
    except CookieError:
        return None
    morsel = cookie.get(SESSION_COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value, whatever the case of its name."""
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None
