"""Dashboard pages: active leases (revoke one, or all of an agent) and pending approvals.

Only lease ids are ever shown: a lease token is given to its agent once and not stored.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyfob.dashboard.render import done, page
from keyfob.dashboard.security import checked_form, context, current_user, vault_of
from keyfob.errors import InvalidRequest
from keyfob.vault.leases import LeaseView

router = APIRouter()

PAGE = "/ui/leases"


@router.get("/leases")
async def leases_page(request: Request) -> Response:
    user = await current_user(request)
    vault = vault_of(request)
    names = {a.id: a.name for a in await vault.agents.list_all()}
    active = await vault.leases.search(active=True)
    by_agent: dict[str, list[LeaseView]] = {}
    for lease in sorted(active, key=lambda v: (names.get(v.agent_id, ""), v.expires_at)):
        by_agent.setdefault(lease.agent_id, []).append(lease)
    pending = await vault.approvals.requests("pending")
    return page(
        request,
        "leases_list.html",
        user,
        section="leases",
        names=names,
        by_agent=by_agent,
        count=len(active),
        pending=sorted(pending, key=lambda v: v.created_at),
    )


@router.post("/leases/revoke-agent")
async def revoke_agent(request: Request) -> Response:
    user = await current_user(request)
    form = await checked_form(request)
    ref = form.get("agent", "").strip()
    if not ref:
        raise InvalidRequest("Choose an agent whose leases to revoke.")
    vault = vault_of(request)
    agent = await vault.agents.get(ref)
    await vault.leases.revoke_all(context(request, user), agent_id=agent.id)
    return done(PAGE, "revoked")


@router.post("/leases/{lease_id}/revoke")
async def revoke(request: Request, lease_id: str) -> Response:
    user = await current_user(request)
    await checked_form(request)
    await vault_of(request).leases.revoke(context(request, user), lease_id)
    return done(PAGE, "revoked")


@router.post("/lease-requests/{request_id}/approve")
async def approve(request: Request, request_id: str) -> Response:
    user = await current_user(request)
    await checked_form(request)
    await vault_of(request).approvals.decide(context(request, user), request_id, approve=True)
    return done(PAGE, "approved")


@router.post("/lease-requests/{request_id}/deny")
async def deny(request: Request, request_id: str) -> Response:
    user = await current_user(request)
    await checked_form(request)
    await vault_of(request).approvals.decide(context(request, user), request_id, approve=False)
    return done(PAGE, "denied")
