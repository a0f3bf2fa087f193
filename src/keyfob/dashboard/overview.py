"""The overview: counts, latest audit events, chain and key status."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyfob.dashboard.render import page
from keyfob.dashboard.security import current_user, vault_of

router = APIRouter()


@router.get("/")
async def overview(request: Request) -> Response:
    user = await current_user(request)
    vault = vault_of(request)
    sets, _ = await vault.sets.search(limit=500)
    agents = await vault.agents.list_all()
    leases = await vault.leases.search(active=True)
    pending = await vault.approvals.requests("pending")
    latest = await vault.audit.query(newest_first=True, limit=10)
    chain = await vault.audit.verify()
    keys = await vault.keys.status()
    return page(
        request,
        "overview.html",
        user,
        section="overview",
        counts={
            "Secret sets": len(sets),
            "Agents": len(agents),
            "Active leases": len(leases),
            "Pending approvals": len(pending),
        },
        latest=latest,
        chain=chain,
        keys=keys,
    )
