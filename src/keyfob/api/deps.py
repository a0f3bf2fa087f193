"""Request dependencies: the vault, the authenticated operator, the audit context."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from keyfob.errors import InvalidRequest
from keyfob.vault import Context, Principal, Vault


def get_vault(request: Request) -> Vault:
    vault: Vault = request.app.state.vault
    return vault


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""
    return token.strip()


def client_of(request: Request) -> str | None:
    return request.client.host if request.client else None


async def operator(request: Request, vault: Annotated[Vault, Depends(get_vault)]) -> Context:
    """The audit context of an authenticated operator; 401 (audited) otherwise."""
    rid = getattr(request.state, "request_id", None)
    anonymous = Context(actor="anonymous", client=client_of(request))
    if rid:
        anonymous = Context(actor="anonymous", request_id=rid, client=client_of(request))
    principal: Principal = await vault.operators.authenticate(
        bearer(request), anonymous, request.url.path
    )
    return Context(actor=principal.actor, request_id=anonymous.request_id, client=anonymous.client)


def if_match(request: Request) -> int | None:
    header = request.headers.get("if-match")
    if header is None:
        return None
    try:
        return int(header.strip().removeprefix("W/").strip('"'))
    except ValueError:
        raise InvalidRequest('If-Match must be a version number, like "3"') from None


VaultDep = Annotated[Vault, Depends(get_vault)]
OperatorDep = Annotated[Context, Depends(operator)]
