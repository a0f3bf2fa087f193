"""SQL for agents, grants, leases and lease requests (uses are counted in ``batch.py``)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update

from keyfob.store._asyncio import AsyncConnection
from keyfob.store.paging import keyset, prefix_of
from keyfob.store.records import (
    AgentRow,
    GrantRow,
    LeaseRequestRow,
    LeaseRow,
    encode,
    from_columns,
    to_columns,
)
from keyfob.store.tables import (
    agents,
    budget_usage,
    grants,
    lease_bundles,
    lease_requests,
    leases,
)

# -- agents ---------------------------------------------------------------------------


async def insert_agent(conn: AsyncConnection, row: AgentRow, digest: str) -> None:
    await conn.execute(agents.insert().values(**to_columns(row), digest=digest))


async def agent_by(
    conn: AsyncConnection,
    *,
    id: str | None = None,
    name: str | None = None,
    digest: str | None = None,
) -> AgentRow | None:
    query = select(agents)
    if id is not None:
        query = query.where(agents.c.id == id)
    elif name is not None:
        query = query.where(agents.c.name == name)
    else:
        query = query.where(agents.c.digest == digest)
    row = (await conn.execute(query)).first()
    return from_columns(AgentRow, row) if row else None


async def list_agents(
    conn: AsyncConnection,
    *,
    prefix: str | None = None,
    after: Sequence[Any] | None = None,
    limit: int | None = None,
) -> list[AgentRow]:
    """Agents by name; ``prefix`` narrows by name, ``after``/``limit`` page (keyset)."""
    query = select(agents)
    if prefix:
        query = query.where(prefix_of(agents.c.name, prefix))
    rows = await conn.execute(keyset(query, [agents.c.name], after, limit))
    return [from_columns(AgentRow, r) for r in rows.all()]


async def agents_by_ids(conn: AsyncConnection, ids: Collection[str]) -> dict[str, AgentRow]:
    if not ids:
        return {}
    rows = await conn.execute(select(agents).where(agents.c.id.in_(sorted(ids))))
    return {r.id: from_columns(AgentRow, r) for r in rows.all()}


async def update_agent(conn: AsyncConnection, agent_id: str, **values: Any) -> None:
    await conn.execute(update(agents).where(agents.c.id == agent_id).values(**values))


async def delete_agent(conn: AsyncConnection, agent_id: str) -> None:
    await conn.execute(delete(agents).where(agents.c.id == agent_id))


# -- grants ---------------------------------------------------------------------------


async def insert_grant(conn: AsyncConnection, row: GrantRow) -> None:
    await conn.execute(grants.insert().values(**to_columns(row)))


async def update_grant(conn: AsyncConnection, grant_id: str, **values: Any) -> None:
    await conn.execute(update(grants).where(grants.c.id == grant_id).values(**encode(values)))


async def grant_by_id(conn: AsyncConnection, grant_id: str) -> GrantRow | None:
    row = (await conn.execute(select(grants).where(grants.c.id == grant_id))).first()
    return from_columns(GrantRow, row) if row else None


async def active_grant(conn: AsyncConnection, agent_id: str, set_id: str) -> GrantRow | None:
    row = (
        await conn.execute(
            select(grants).where(
                grants.c.agent_id == agent_id,
                grants.c.set_id == set_id,
                grants.c.revoked_at.is_(None),
            )
        )
    ).first()
    return from_columns(GrantRow, row) if row else None


async def list_grants(
    conn: AsyncConnection,
    *,
    agent_id: str | None = None,
    set_id: str | None = None,
    include_revoked: bool = False,
    after: Sequence[Any] | None = None,
    limit: int | None = None,
) -> list[GrantRow]:
    """Grants oldest first; ``after``/``limit`` page them by (created_at, id)."""
    query = select(grants)
    if agent_id is not None:
        query = query.where(grants.c.agent_id == agent_id)
    if set_id is not None:
        query = query.where(grants.c.set_id == set_id)
    if not include_revoked:
        query = query.where(grants.c.revoked_at.is_(None))
    rows = await conn.execute(keyset(query, [grants.c.created_at, grants.c.id], after, limit))
    return [from_columns(GrantRow, r) for r in rows.all()]


async def revoke_grants(
    conn: AsyncConnection, when: str, *, agent_id: str | None = None, set_id: str | None = None
) -> list[str]:
    live = await list_grants(conn, agent_id=agent_id, set_id=set_id)
    if live:
        await conn.execute(
            update(grants)
            .where(grants.c.id.in_([g.id for g in live]))
            .values(revoked_at=when, updated_at=when)
        )
    return [g.id for g in live]


# -- leases ---------------------------------------------------------------------------


async def insert_lease(conn: AsyncConnection, row: LeaseRow, digest: str) -> None:
    await conn.execute(leases.insert().values(**to_columns(row), digest=digest))


async def lease_by(
    conn: AsyncConnection, *, id: str | None = None, digest: str | None = None
) -> LeaseRow | None:
    column = leases.c.id if id is not None else leases.c.digest
    row = (await conn.execute(select(leases).where(column == (id or digest)))).first()
    return from_columns(LeaseRow, row) if row else None


def _live(when: str) -> ColumnElement[bool]:
    """Not revoked, not expired, uses left: the lease view's "active", as a SQL filter
    (the decision itself is ``vault.decision``; this only selects rows to list or revoke)."""
    return and_(
        leases.c.revoked_at.is_(None),
        leases.c.expires_at > when,
        or_(leases.c.max_uses.is_(None), leases.c.uses < leases.c.max_uses),
    )


async def list_leases(
    conn: AsyncConnection,
    *,
    agent_id: str | None = None,
    grant_id: str | None = None,
    set_id: str | None = None,
    active_at: str | None = None,
    after: Sequence[Any] | None = None,
    limit: int = 500,
) -> list[LeaseRow]:
    """Leases newest first; ``after``/``limit`` page them by (created_at, id)."""
    query = select(leases)
    if agent_id is not None:
        query = query.where(leases.c.agent_id == agent_id)
    if grant_id is not None:
        query = query.where(leases.c.grant_id == grant_id)
    if set_id is not None:
        query = query.where(leases.c.set_id == set_id)
    if active_at is not None:
        query = query.where(_live(active_at))
    order = [leases.c.created_at, leases.c.id]
    rows = await conn.execute(keyset(query, order, after, limit, descending=True))
    return [from_columns(LeaseRow, r) for r in rows.all()]


async def revoke_leases(
    conn: AsyncConnection,
    when: str,
    reason: str,
    *,
    lease_id: str | None = None,
    agent_id: str | None = None,
    grant_id: str | None = None,
    set_id: str | None = None,
) -> list[str]:
    """Revoke every live lease matching the filters; returns their ids."""
    # Live, as list_leases(active_at=...) means it: spent leases are left as they are.
    clauses = [_live(when)]
    for column, value in (
        (leases.c.id, lease_id),
        (leases.c.agent_id, agent_id),
        (leases.c.grant_id, grant_id),
        (leases.c.set_id, set_id),
    ):
        if value is not None:
            clauses.append(column == value)
    ids = [r.id for r in (await conn.execute(select(leases.c.id).where(and_(*clauses)))).all()]
    if ids:
        await conn.execute(
            update(leases).where(leases.c.id.in_(ids)).values(revoked_at=when, revoke_reason=reason)
        )
    return ids


async def renew_lease(conn: AsyncConnection, lease_id: str, when: str, expires_at: str) -> bool:
    """Start a new term for a live lease; False if it is no longer live."""
    result = await conn.execute(
        update(leases)
        .where(leases.c.id == lease_id, _live(when))
        .values(renewed_at=when, expires_at=expires_at)
    )
    return bool(result.rowcount)


async def prune_leases(
    conn: AsyncConnection, expired_before: str, limit: int
) -> tuple[int, int, int]:
    """Delete up to ``limit`` leases that expired before ``expired_before`` with their
    budget counters, and the multi-set leases and lease requests that expired before it;
    returns how many of each went. A renewed lease's ``expires_at`` is its current term's
    end; a request's is the end of its wait for approval."""
    found = select(leases.c.id).where(leases.c.expires_at < expired_before).limit(limit)
    ids = [r.id for r in (await conn.execute(found)).all()]
    if ids:
        owners = [f"lease:{lease_id}" for lease_id in ids]
        await conn.execute(delete(budget_usage).where(budget_usage.c.owner.in_(owners)))
        await conn.execute(delete(leases).where(leases.c.id.in_(ids)))
    bundles = await conn.execute(
        delete(lease_bundles).where(lease_bundles.c.expires_at < expired_before)
    )
    requests = await conn.execute(
        delete(lease_requests).where(lease_requests.c.expires_at < expired_before)
    )
    return len(ids), bundles.rowcount, requests.rowcount


# -- lease requests -------------------------------------------------------------------


async def insert_request(conn: AsyncConnection, row: LeaseRequestRow) -> None:
    await conn.execute(lease_requests.insert().values(**to_columns(row)))


async def request_by_id(conn: AsyncConnection, request_id: str) -> LeaseRequestRow | None:
    row = (
        await conn.execute(select(lease_requests).where(lease_requests.c.id == request_id))
    ).first()
    return from_columns(LeaseRequestRow, row) if row else None


async def list_requests(
    conn: AsyncConnection, *, status: str | None = None, agent_id: str | None = None
) -> list[LeaseRequestRow]:
    query = select(lease_requests)
    if status is not None:
        query = query.where(lease_requests.c.status == status)
    if agent_id is not None:
        query = query.where(lease_requests.c.agent_id == agent_id)
    rows = await conn.execute(query.order_by(lease_requests.c.created_at.desc()).limit(500))
    return [from_columns(LeaseRequestRow, r) for r in rows.all()]


async def waiting_requests(
    conn: AsyncConnection, now: str, *, after: Sequence[Any] | None, limit: int
) -> list[LeaseRequestRow]:
    """Requests still waiting for a decision (pending, not expired), oldest first, a page."""
    query = select(lease_requests).where(
        lease_requests.c.status == "pending", lease_requests.c.expires_at > now
    )
    order = [lease_requests.c.created_at, lease_requests.c.id]
    rows = await conn.execute(keyset(query, order, after, limit))
    return [from_columns(LeaseRequestRow, r) for r in rows.all()]


async def count_pending(
    conn: AsyncConnection, now: str, agent_id: str, grant_id: str
) -> tuple[int, int]:
    """Requests still waiting for approval (pending, not expired): the agent's, the grant's."""
    waiting = (lease_requests.c.status == "pending") & (lease_requests.c.expires_at > now)
    row = (
        await conn.execute(
            select(
                func.count().filter(lease_requests.c.agent_id == agent_id),
                func.count().filter(lease_requests.c.grant_id == grant_id),
            ).where(
                waiting,
                or_(lease_requests.c.agent_id == agent_id, lease_requests.c.grant_id == grant_id),
            )
        )
    ).one()
    return int(row[0]), int(row[1])


async def decide_request(
    conn: AsyncConnection, request_id: str, *, from_status: str, to_status: str, **values: Any
) -> bool:
    """Move a request between states only if it is still in ``from_status``."""
    result = await conn.execute(
        update(lease_requests)
        .where(lease_requests.c.id == request_id, lease_requests.c.status == from_status)
        .values(status=to_status, **values)
    )
    return bool(result.rowcount)


async def deny_pending(
    conn: AsyncConnection,
    when: str,
    by: str,
    *,
    agent_id: str | None = None,
    grant_id: str | None = None,
) -> int:
    """Deny requests not yet turned into a lease (pending, or approved but not collected)."""
    query = update(lease_requests).where(lease_requests.c.status.in_(("pending", "approved")))
    if agent_id is not None:
        query = query.where(lease_requests.c.agent_id == agent_id)
    if grant_id is not None:
        query = query.where(lease_requests.c.grant_id == grant_id)
    result = await conn.execute(query.values(status="denied", decided_at=when, decided_by=by))
    return int(result.rowcount or 0)
