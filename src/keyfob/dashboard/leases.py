"""Dashboard pages: active leases (revoke one, or all of an agent) and pending approvals.

Only lease ids are ever shown: a lease token is given to its agent once and not stored.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyfob.dashboard.render import PER_PAGE, done, page, pager
from keyfob.dashboard.security import checked_form, context, current_user, vault_of
from keyfob.errors import InvalidRequest
from keyfob.vault.leases import LeaseView

router = APIRouter()

PAGE = "/ui/leases"


@router.get("/leases")
async def leases_page(request: Request) -> Response:
    user = await current_user(request)
    vault = vault_of(request)
    params = request.query_params
    active = await vault.leases.page(cursor=params.get("after") or None, limit=PER_PAGE)
    pending = await vault.approvals.waiting(
        cursor=params.get("requests_after") or None, limit=PER_PAGE
    )
    names = await vault.agents.names(
        {v.agent_id for v in active.items} | {r.agent_id for r in pending.items}
    )
    # Newest first across pages; within this page, grouped by agent.
    by_agent: dict[str, list[LeaseView]] = {}
    for lease in sorted(active.items, key=lambda v: (names.get(v.agent_id, ""), v.expires_at)):
        by_agent.setdefault(lease.agent_id, []).append(lease)
    return page(
        request,
        "leases_list.html",
        user,
        section="leases",
        names=names,
        by_agent=by_agent,
        count=(await vault.inventory.counts())["leases_active"],
        links=pager(request, active.next),
        pending=pending.items,
        pending_links=pager(request, pending.next, "requests_after"),
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
