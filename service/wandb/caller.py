"""Who asks through the W&B API, and what they may touch: the same keys and rules as gRPC.

The SDK sends its key as HTTP Basic auth, `api:KEY`. A key acts only in its entity, and the
entity the SDK leaves out (`null` until the server names one) is the key's. A reader key
reads; logging, resuming, rewinding and forking need a writer key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

from runhistory.domain.errors import Unauthenticated
from runhistory.domain.identity import RunPath, check_name
from runhistory.service.auth import LOCAL_OPERATOR, Principal, Role
from runhistory.service.wandb.protocol import DEFAULT_PROJECT
from runhistory.service.web.access import Access, header

READ = (Role.READER, "read")
WRITE = (Role.WRITER, "log, resume, rewind or fork")


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal

    @property
    def entity(self) -> str:
        """The entity W&B's `entity: null` stands for."""
        return self.principal.own_entity

    @property
    def key_id(self) -> str:
        return self.principal.key_id

    def run(
        self,
        entity: object,
        project: object,
        run_id: object,
        access: tuple[Role, str],
    ) -> RunPath:
        """The run a request names, once the key may `access` its entity. The entity is
        checked before anything is looked up, so a refusal tells nothing of what exists."""
        self.allow(entity, access)
        return RunPath(
            str(entity or self.entity),
            str(project or DEFAULT_PROJECT),
            run_id if isinstance(run_id, str) else "",
        )

    def allow(self, entity: object, access: tuple[Role, str]) -> None:
        name = check_name("entity", entity or self.entity)
        self.principal.require(name, *access)


def authenticate(access: Access, headers: Mapping[str, str]) -> Caller:
    """The caller a request proves by its key; Unauthenticated without a valid one."""
    if access.keys is None:
        return Caller(LOCAL_OPERATOR)
    key = api_key(header(headers, "authorization"))
    if key is None:
        raise Unauthenticated(
            "no API key: set WANDB_API_KEY to a runhistory key (`runhistory keys create`)"
        )
    return Caller(access.keys.authenticate(key))


def api_key(authorization: str | None) -> str | None:
    """The key of `Authorization: Basic base64(api:KEY)`, as the SDK sends it, or of
    `Authorization: Bearer KEY`."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip() or None
    if scheme.lower() != "basic":
        raise Unauthenticated("the authorization header must read 'Basic ...' or 'Bearer KEY'")
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthenticated("the Basic authorization is not base64 of 'api:KEY'") from None
    _user, _, key = decoded.partition(":")
    return key or None
