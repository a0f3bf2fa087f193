"""SQL for how much of everything a vault holds: counts for the dashboard's overview."""

from __future__ import annotations

from sqlalchemy import func, select

from keyfob.store._asyncio import AsyncConnection
from keyfob.store.access import _live
from keyfob.store.tables import agents, grants, lease_requests, leases, secret_sets


async def counts(conn: AsyncConnection, now: str) -> dict[str, int]:
    """Live sets, agents, live grants, leases ever minted and active now, pending requests."""
    one = func.count()
    query = select(
        select(one).select_from(secret_sets).where(secret_sets.c.deleted_at.is_(None))
        .scalar_subquery().label("sets"),
        select(one).select_from(agents).scalar_subquery().label("agents"),
        select(one).select_from(grants).where(grants.c.revoked_at.is_(None))
        .scalar_subquery().label("grants"),
        select(one).select_from(leases).scalar_subquery().label("leases_minted"),
        select(one).select_from(leases).where(_live(now))
        .scalar_subquery().label("leases_active"),
        select(one).select_from(lease_requests)
        .where(lease_requests.c.status == "pending", lease_requests.c.expires_at > now)
        .scalar_subquery().label("pending"),
    )  # fmt: skip
    row = (await conn.execute(query)).one()
    return {k: int(v) for k, v in row._mapping.items()}
