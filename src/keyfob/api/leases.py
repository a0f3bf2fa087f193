"""Lease routes: agents mint and poll, operators list, revoke and approve, leases are
checked (dry run) and used for export."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from keyfob import tokens
from keyfob.api import deps
from keyfob.api.deps import (
    AgentDep,
    AnonymousDep,
    LeaseTokenDep,
    OperatorDep,
    VaultDep,
)
from keyfob.api.models import Export, LeaseCheck, LeaseMint, LeaseRenew, LeaseRevoke
from keyfob.api.views import items
from keyfob.vault import Vault
from keyfob.vault.context import Context
from keyfob.vault.leases import AgentClaim, IssuedBatch, IssuedLease, LeaseRequestView, invalid
from keyfob.vault.operators import Principal

router = APIRouter(tags=["leases"])


def issued_json(issued: IssuedLease) -> dict[str, Any]:
    """A minted lease with its token revealed: the one answer that carries it."""
    return {**issued.lease.as_dict(), "token": issued.token.reveal(), "ttl": issued.ttl}


def render(answer: Any) -> bytes:
    """JSON as Starlette's ``JSONResponse`` renders it (compact, UTF-8)."""
    return json.dumps(
        answer, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


# Stand-ins for a lease's id and token in the batch template; JSON escapes the NULs, so
# the quoted marks below occur in the rendered text only where the stand-ins went.
_ID, _TOKEN = "\0id\0", "\0token\0"
_QUOTED_ID, _QUOTED_TOKEN = json.dumps(_ID), json.dumps(_TOKEN)
_PLAIN = re.compile(r"[0-9A-Za-z_-]*")  # text that JSON quotes as it is


def batch_json(batch: IssuedBatch) -> bytes:
    """``{"leases": [...]}`` for a batch mint, each lease as ``issued_json`` renders it.

    The leases differ only in id and token, so one lease is rendered with stand-ins and
    each lease's text is that template with its id and token put in: rendering ``count``
    dicts was a tenth of a batch mint. Ids (hex) and tokens (base62) never need escaping;
    should one ever, the batch is rendered lease by lease instead."""
    ids, secrets = batch.ids, batch.tokens.reveal()
    shape = {**batch.lease.as_dict(), "id": _ID, "token": _TOKEN, "ttl": batch.ttl}
    text = render(shape).decode("utf-8")
    if (
        text.count(_QUOTED_ID) != 1
        or text.count(_QUOTED_TOKEN) != 1
        or not _PLAIN.fullmatch("".join(ids))
        or not _PLAIN.fullmatch("".join(secrets))
    ):
        return render({"leases": [issued_json(i) for i in batch.leases()]})
    # The id comes first in a lease's JSON, the token after every shared field.
    head, _, rest = text.partition(_QUOTED_ID)
    middle, _, tail = rest.partition(_QUOTED_TOKEN)
    head += '"'
    middle = '"' + middle + '"'
    tail = '"' + tail
    items = ",".join(
        [head + i + middle + token + tail for i, token in zip(ids, secrets, strict=True)]
    )
    return ('{"leases":[' + items + "]}").encode("utf-8")


def request_json(view: LeaseRequestView) -> dict[str, Any]:
    body = view.as_dict()
    lease = body.pop("lease")
    if lease is not None:
        body["lease"] = issued_json(lease)
    return body


@router.post(
    "/v1/leases",
    summary="Mint a lease, or `count` of them (agent token); 202 with a pending request "
    "under approval",
    status_code=201,
    responses={202: {"description": "approval required: poll the request"}},
)
async def mint(body: LeaseMint, request: Request, vault: VaultDep) -> Response:
    # The common case (an agent token, one set) is answered by ``api.mint_route`` before
    # FastAPI runs; it calls ``minted`` below, as this route does.
    if body.secret_sets is not None:
        return await _mint_bundle(body, request, vault)
    if body.secret_set is None:
        raise invalid("secret_set", "name a secret set (or secret_sets for a multi-set lease)")
    principal, ctx = await _minter(request, vault)
    content, status = await minted(vault, body, principal, ctx)
    return Response(content, status_code=status, media_type="application/json")


async def minted(
    vault: Vault, body: LeaseMint, principal: Principal | AgentClaim, ctx: Context
) -> tuple[bytes, int]:
    """A single-set mint (``count``: a batch) as its rendered answer and status: 201 with
    the lease (or ``{"leases": [...]}``), or 202 with a pending request under approval."""
    assert body.secret_set is not None
    if body.count is not None:
        batch = await vault.leases.mint_many(
            principal,
            ctx,
            secret_set=body.secret_set,
            count=body.count,
            scope=body.scope,
            ttl=body.ttl,
            max_uses=body.max_uses,
            budgets=body.budgets,
        )
        return batch_json(batch), 201
    lease = await vault.leases.mint(
        principal,
        ctx,
        secret_set=body.secret_set,
        scope=body.scope,
        ttl=body.ttl,
        max_uses=body.max_uses,
        request_reason=_one_line(body.reason),
        budgets=body.budgets,
    )
    if isinstance(lease, IssuedLease):
        return render(issued_json(lease)), 201
    return render({**request_json(lease), "poll": f"/v1/me/lease-requests/{lease.id}"}), 202


def _one_line(text: str | None) -> str | None:
    """An agent's reason as the approver sees it: printable, on one line, or None."""
    if text is None:
        return None
    return " ".join("".join(c if c.isprintable() else " " for c in text).split()) or None


async def _mint_bundle(body: LeaseMint, request: Request, vault: Vault) -> JSONResponse:
    """A multi-set lease: workflow scope only, one set or the other named, never both."""
    if body.secret_set is not None or body.count is not None:
        raise invalid("secret_sets", "give secret_sets alone, without secret_set or count")
    if body.scope != "workflow":
        raise invalid("scope", "a multi-set lease is workflow-scoped")
    principal, ctx = await deps.agent(request, vault)
    issued = await vault.forwarding.mint(
        principal, ctx, secret_sets=body.secret_sets or [], ttl=body.ttl, max_uses=body.max_uses
    )
    return JSONResponse({**issued.as_dict(), "token": issued.token.reveal()}, status_code=201)


async def _minter(request: Request, vault: Vault) -> tuple[Principal | AgentClaim, Context]:
    """Who mints. A well-formed agent token is looked up (and checked, and a failure
    audited) inside the mint's grouped commit, not by a read of its own; anything else
    gets the agent routes' answer (401, or 403 for another kind of token)."""
    token = deps.bearer(request)
    if token is not None and tokens.looks_like(token, tokens.AGENT):
        claim = AgentClaim(tokens.digest(vault.core.ring.system.token_key, token))
        return claim, deps.anonymous(request)
    return await deps.agent(request, vault)


@router.get("/v1/me/grants", summary="The calling agent's grants (never values)")
async def my_grants(who: AgentDep, vault: VaultDep) -> dict[str, Any]:
    principal, _ = who
    return {"agent": principal.name, "items": items(await vault.grants.for_agent(principal.id))}


@router.post(
    "/v1/me/leases/{lease_id}/renew",
    summary="A new term for one of the agent's workflow leases (same token; capped by the grant)",
)
async def renew(
    lease_id: str, who: AgentDep, vault: VaultDep, body: LeaseRenew | None = None
) -> dict[str, Any]:
    principal, ctx = who
    ttl = body.ttl if body is not None else None
    view, new_ttl = await vault.leases.renew(principal, ctx, lease_id, ttl)
    return {**view.as_dict(), "ttl": new_ttl}


@router.delete("/v1/me/leases/{lease_id}", summary="Revoke one of the agent's own leases")
async def revoke_mine(lease_id: str, who: AgentDep, vault: VaultDep) -> dict[str, Any]:
    principal, ctx = who
    # A multi-set lease's id revokes it and each set's lease.
    bundle = await vault.forwarding.revoke(ctx, lease_id, agent_id=principal.id)
    if bundle is not None:
        return bundle
    return (await vault.leases.revoke(ctx, lease_id, agent_id=principal.id)).as_dict()


@router.get("/v1/me/lease-requests/{request_id}", summary="Poll a pending lease request")
async def poll_request(
    request_id: str,
    who: AgentDep,
    vault: VaultDep,
    wait: Annotated[float, Query(ge=0, le=30)] = 0,
) -> dict[str, Any]:
    principal, ctx = who
    return request_json(await vault.approvals.poll(principal, ctx, request_id, wait))


@router.get("/v1/lease-requests", summary="Lease requests waiting for (or given) a decision")
async def list_requests(
    ctx: OperatorDep, vault: VaultDep, status: str | None = "pending"
) -> dict[str, Any]:
    return {"items": [request_json(v) for v in await vault.approvals.requests(status or None)]}


@router.post("/v1/lease-requests/{request_id}/approve", summary="Approve a lease request")
async def approve(request_id: str, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return request_json(await vault.approvals.decide(ctx, request_id, approve=True))


@router.post("/v1/lease-requests/{request_id}/deny", summary="Deny a lease request")
async def deny(request_id: str, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return request_json(await vault.approvals.decide(ctx, request_id, approve=False))


@router.get("/v1/leases", summary="List leases (active only unless all=true)")
async def list_leases(
    ctx: OperatorDep,
    vault: VaultDep,
    agent: str | None = None,
    grant: str | None = None,
    secret_set: str | None = None,
    all: bool = False,
) -> dict[str, Any]:
    agent_id = (await vault.agents.get(agent)).id if agent else None
    items = await vault.leases.search(
        agent_id=agent_id, grant_id=grant, set_path=secret_set, active=not all
    )
    return {"items": [v.as_dict() for v in items]}


@router.post("/v1/leases/revoke", summary="Revoke every lease of an agent, grant or set")
async def revoke_many(body: LeaseRevoke, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    agent_id = (await vault.agents.get(body.agent)).id if body.agent else None
    revoked = await vault.leases.revoke_all(
        ctx, agent_id=agent_id, grant_id=body.grant, set_path=body.secret_set
    )
    return {"revoked": revoked.revoked, "lease_ids": revoked.lease_ids}


@router.delete("/v1/leases/{lease_id}", summary="Revoke one lease (or a multi-set lease)")
async def revoke_one(lease_id: str, ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    bundle = await vault.forwarding.revoke(ctx, lease_id)
    if bundle is not None:
        return bundle
    return (await vault.leases.revoke(ctx, lease_id)).as_dict()


@router.post("/v1/leases/check", summary="Dry run: would this lease allow this request?")
async def check(
    body: LeaseCheck, request: Request, token: LeaseTokenDep, ctx: AnonymousDep, vault: VaultDep
) -> dict[str, Any]:
    checked = await vault.lease_use.check(
        token,
        ctx,
        action=body.action,
        secret_set=body.secret_set,
        method=body.method,
        path=body.path,
        route=request.url.path,
    )
    return {"allowed": checked.allowed, "reason": checked.reason, "lease": checked.lease.as_dict()}


@router.post(
    "/v1/secret-sets/{provider}/{environment}/{name}/export",
    tags=["secret sets"],
    summary="Plaintext values, for a lease whose grant allows export (audited)",
)
async def export(
    provider: str,
    environment: str,
    name: str,
    request: Request,
    token: LeaseTokenDep,
    ctx: AnonymousDep,
    vault: VaultDep,
    body: Export | None = None,
) -> dict[str, Any]:
    result = await vault.lease_use.export(
        token,
        ctx,
        f"{provider}/{environment}/{name}",
        body.keys if body else None,
        request.url.path,
    )
    entries = {k: v.reveal() for k, v in result.entries.items()}
    return {"secret_set": result.secret_set, "entries": entries}
