"""SQL for prices, budget counters and the metered requests usage reports are made of."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import delete, func, select

from keyfob.store._asyncio import AsyncConnection
from keyfob.store.tables import audit_events, budget_usage, prices

PriceRow = dict[str, str]


async def list_prices(conn: AsyncConnection) -> list[PriceRow]:
    rows = await conn.execute(select(prices).order_by(prices.c.model))
    return [dict(r._mapping) for r in rows]


async def prices_stamp(conn: AsyncConnection) -> tuple[str | None, int]:
    """The latest price change's time and the number of price rows (cheap: one row)."""
    row = (await conn.execute(select(func.max(prices.c.updated_at), func.count()))).one()
    return row[0], int(row[1])


async def put_prices(conn: AsyncConnection, rows: Iterable[PriceRow]) -> None:
    """Insert or replace price rows by model."""
    rows = list(rows)
    if not rows:
        return
    await conn.execute(delete(prices).where(prices.c.model.in_([r["model"] for r in rows])))
    await conn.execute(prices.insert(), rows)


async def budget_counters(
    conn: AsyncConnection, owners: Collection[str]
) -> dict[tuple[str, str, str], int]:
    """Every counter of the given owners (``grant:<id>``, ``lease:<id>``)."""
    if not owners:
        return {}
    rows = await conn.execute(select(budget_usage).where(budget_usage.c.owner.in_(list(owners))))
    return {(r.owner, r.unit, r.period): int(r.used) for r in rows}


async def proxy_records(conn: AsyncConnection, since: str, until: str) -> list[dict[str, Any]]:
    """The ``proxy.request`` records between two moments: when, who, which set, and the
    metered details (counts and cost only; records never hold content)."""
    rows = await conn.execute(
        select(
            audit_events.c.ts, audit_events.c.actor, audit_events.c.target, audit_events.c.details
        )
        .where(
            audit_events.c.action == "proxy.request",
            audit_events.c.ts >= since,
            audit_events.c.ts < until,
        )
        .order_by(audit_events.c.seq)
    )
    out = []
    for r in rows:
        try:
            details = json.loads(r.details)
        except ValueError:
            continue
        out.append({"ts": r.ts, "actor": r.actor, "target": r.target, "details": details})
    return out
