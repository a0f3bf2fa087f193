"""Request dependencies: the vault, the authenticated operator, the audit context."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from keyfob import tokens
from keyfob.errors import Forbidden, InvalidRequest
from keyfob.vault import Context, Principal, Vault, new_request_id


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


def anonymous(request: Request) -> Context:
    rid = getattr(request.state, "request_id", None) or new_request_id()
    return Context(actor="anonymous", request_id=rid, client=client_of(request))


def acting(principal: Principal, ctx: Context) -> Context:
    return Context(actor=principal.actor, request_id=ctx.request_id, client=ctx.client)


async def _wrong_kind(vault: Vault, request: Request, token: str, needed: str) -> None:
    """A valid token of the wrong kind: 403 (audited), the same body on every route."""
    ctx = anonymous(request)
    if token.startswith(tokens.AGENT):
        principal = await vault.agents.authenticate(token, ctx, request.url.path)
    else:
        principal = await vault.operators.authenticate(token, ctx, request.url.path)
    await vault.core.audit_access_denied(acting(principal, ctx), request.url.path, needed)
    raise Forbidden(f"this route needs {needed} token")


async def operator(request: Request, vault: Annotated[Vault, Depends(get_vault)]) -> Context:
    """The audit context of an authenticated operator; 401 (audited) otherwise."""
    token = bearer(request)
    if token and token.startswith((tokens.AGENT, tokens.LEASE)):
        if token.startswith(tokens.LEASE):
            await vault.core.audit_access_denied(
                anonymous(request), request.url.path, "an operator"
            )
            raise Forbidden("this route needs an operator token")
        await _wrong_kind(vault, request, token, "an operator")
    ctx = anonymous(request)
    principal = await vault.operators.authenticate(token, ctx, request.url.path)
    return acting(principal, ctx)


async def agent(
    request: Request, vault: Annotated[Vault, Depends(get_vault)]
) -> tuple[Principal, Context]:
    """An authenticated agent (``kfa_``) and its audit context; 401 (audited) otherwise."""
    token = bearer(request)
    if token and token.startswith(tokens.OPERATOR):
        await _wrong_kind(vault, request, token, "an agent")
    ctx = anonymous(request)
    principal = await vault.agents.authenticate(token, ctx, request.url.path)
    return principal, acting(principal, ctx)


def lease_token(request: Request) -> str | None:
    """The lease from ``Authorization: Bearer``, ``x-api-key`` or ``X-Keyfob-Lease``."""
    return (
        bearer(request) or request.headers.get("x-keyfob-lease") or request.headers.get("x-api-key")
    )


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
AgentDep = Annotated[tuple[Principal, Context], Depends(agent)]
LeaseTokenDep = Annotated[str | None, Depends(lease_token)]
AnonymousDep = Annotated[Context, Depends(anonymous)]
