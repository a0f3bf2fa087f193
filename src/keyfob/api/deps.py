"""Request dependencies: the vault, the authenticated operator, the audit context."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from keyfob import tokens
from keyfob.errors import Forbidden, InvalidRequest, Unauthorized, Unavailable
from keyfob.tls_scope import client_certificate
from keyfob.vault import Context, Principal, Vault, new_request_id


async def get_vault(request: Request) -> Vault:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a hop per request.
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
    return Context(
        actor="anonymous",
        request_id=rid,
        client=client_of(request),
        client_cert=client_certificate(request.scope),
    )


def acting(principal: Principal, ctx: Context) -> Context:
    return Context(
        actor=principal.actor,
        request_id=ctx.request_id,
        client=ctx.client,
        client_cert=ctx.client_cert,
    )


_NEEDS = {tokens.OPERATOR: "an operator", tokens.AGENT: "an agent", tokens.LEASE: "a lease"}


def _kind(token: str | None) -> str | None:
    return next((p for p in tokens.PREFIXES if token and token.startswith(p)), None)


async def _authenticate(
    vault: Vault, kind: str, token: str | None, ctx: Context, route: str
) -> Principal:
    if kind == tokens.OPERATOR:
        return await vault.operators.authenticate(token, ctx, route)
    if kind == tokens.AGENT:
        return await vault.agents.authenticate(token, ctx, route)
    return await vault.lease_use.authenticate(token, ctx, route)


async def _refuse_other_kind(
    vault: Vault, request: Request, token: str | None, needed: str
) -> None:
    """A token of another kind: 401 if it is not valid either, else 403 (audited), with
    the same body on every route."""
    kind = _kind(token)
    if kind is None or kind == needed:
        return
    ctx = anonymous(request)
    principal = await _authenticate(vault, kind, token, ctx, request.url.path)
    await vault.core.audit_access_denied(acting(principal, ctx), request.url.path, _NEEDS[needed])
    raise Forbidden(f"this route needs {_NEEDS[needed]} token")


async def operator(request: Request, vault: Annotated[Vault, Depends(get_vault)]) -> Context:
    """The audit context of an authenticated operator; 401 (audited) otherwise."""
    token = bearer(request)
    await _refuse_other_kind(vault, request, token, tokens.OPERATOR)
    ctx = anonymous(request)
    principal = await vault.operators.authenticate(token, ctx, request.url.path)
    return acting(principal, ctx)


async def operator_or_none(
    request: Request, vault: Annotated[Vault, Depends(get_vault)]
) -> Context | None:
    """The operator's audit context if the request carries a valid operator token, else
    None, never a 401: for answers that only say more to an operator (``/readyz``)."""
    token = bearer(request)
    # No token (a load balancer), or an agent's or a lease's: not an attempt to act as an
    # operator, so nothing to audit. Any other token is checked (and a failure audited)
    # as on every operator route, and gets the same answer as no token.
    if not token or _kind(token) in (tokens.AGENT, tokens.LEASE):
        return None
    try:
        return await operator(request, vault)
    except (Unauthorized, Unavailable):
        # Unavailable: the token cannot be checked now (the database is away).
        return None


async def agent(
    request: Request, vault: Annotated[Vault, Depends(get_vault)]
) -> tuple[Principal, Context]:
    """An authenticated agent (``kfa_``) and its audit context; 401 (audited) otherwise."""
    token = bearer(request)
    await _refuse_other_kind(vault, request, token, tokens.AGENT)
    ctx = anonymous(request)
    principal = await vault.agents.authenticate(token, ctx, request.url.path)
    return principal, acting(principal, ctx)


async def operator_or_agent(
    request: Request, vault: Annotated[Vault, Depends(get_vault)]
) -> Context:
    """An authenticated operator or agent (the CA certificate is for both); 401 otherwise."""
    token = bearer(request)
    ctx = anonymous(request)
    kind = tokens.AGENT if _kind(token) == tokens.AGENT else tokens.OPERATOR
    principal = await _authenticate(vault, kind, token, ctx, request.url.path)
    return acting(principal, ctx)


async def lease_token(request: Request, vault: Annotated[Vault, Depends(get_vault)]) -> str | None:
    """The lease from ``Authorization: Bearer``, ``X-Keyfob-Lease`` or ``x-api-key``; the
    lease itself is checked (and a failure audited) where it is used."""
    token = (
        bearer(request) or request.headers.get("x-keyfob-lease") or request.headers.get("x-api-key")
    )
    await _refuse_other_kind(vault, request, token, tokens.LEASE)
    return token


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
OperatorOrAgentDep = Annotated[Context, Depends(operator_or_agent)]
OperatorOrNoneDep = Annotated[Context | None, Depends(operator_or_none)]
