"""The overview: counts, latest audit events, the chain's head, key terms; a first-run guide.

Nothing here grows with the vault: counts are SQL counts, the chain is its one-row head
(verifying a million records takes seconds, so that stays a button on the audit page).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyfob.dashboard.render import page
from keyfob.dashboard.security import current_user, vault_of

router = APIRouter()


def guide(counts: dict[str, int]) -> list[dict[str, object]]:
    """The first-run steps, each with whether this vault has done it yet."""
    return [
        {
            "title": "Add a credential",
            "href": "/ui/credentials/new",
            "text": "Pick the service (OpenAI, Anthropic, Stripe, …) and paste its key. "
            "It is encrypted at once and never shown again.",
            "done": counts["sets"] > 0,
        },
        {
            "title": "Create an agent",
            "href": "/ui/agents",
            "text": "An identity for your program. Its token (kfa_…) can only mint leases.",
            "done": counts["agents"] > 0,
        },
        {
            "title": "Grant the agent the credential",
            "href": "/ui/grants/new",
            "text": "Say which agent may use which credential, and under what limits.",
            "done": counts["grants"] > 0,
        },
        {
            "title": "Use it from the agent",
            "href": "/ui/credentials",
            "text": "Open the credential and copy a snippet from “Use it from an agent”: "
            "the agent sends requests through keyfob, which injects the key.",
            "done": counts["leases_minted"] > 0,
        },
    ]


@router.get("/")
async def overview(request: Request) -> Response:
    user = await current_user(request)
    vault = vault_of(request)
    counts = await vault.inventory.counts()
    steps = guide(counts)
    return page(
        request,
        "overview.html",
        user,
        section="overview",
        counts={
            "Secret sets": counts["sets"],
            "Agents": counts["agents"],
            "Active leases": counts["leases_active"],
            "Pending approvals": counts["pending"],
        },
        guide=steps if not all(s["done"] for s in steps) else None,
        first_run=counts["sets"] == 0,
        latest=await vault.audit.query(newest_first=True, limit=10),
        chain=await vault.audit.head(),
        keys=await vault.keys.status(),
    )
