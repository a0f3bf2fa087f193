"""SQL for reading the audit chain (``audit_writer`` appends to it)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from keyfob.audit import Event
from keyfob.store.tables import audit_events, audit_head


def _details(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        # Edited outside keyfob: pass the text on so verify names this record (its hash
        # cannot match) instead of failing outright.
        return raw


def _event(row: Any) -> Event:
    return Event(
        seq=int(row.seq),
        ts=row.ts,
        actor=row.actor,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        request_id=row.request_id,
        details=_details(row.details),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


async def query(
    conn: AsyncConnection,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    outcome: str | None = None,
    since: str | None = None,
    until: str | None = None,
    after: int = 0,
    limit: int = 100,
    newest_first: bool = False,
) -> list[Event]:
    q = select(audit_events)
    if actor:
        q = q.where(audit_events.c.actor == actor)
    if action:
        # "secret_set." matches every action of that family.
        if action.endswith("."):
            q = q.where(audit_events.c.action.startswith(action, autoescape=True))
        else:
            q = q.where(audit_events.c.action == action)
    if target:
        q = q.where(audit_events.c.target == target)
    if outcome:
        q = q.where(audit_events.c.outcome == outcome)
    if since:
        q = q.where(audit_events.c.ts >= since)
    if until:
        q = q.where(audit_events.c.ts < until)
    if newest_first:
        if after:
            q = q.where(audit_events.c.seq < after)
        q = q.order_by(audit_events.c.seq.desc())
    else:
        q = q.where(audit_events.c.seq > after).order_by(audit_events.c.seq)
    return [_event(r) for r in (await conn.execute(q.limit(limit))).all()]


async def stream(conn: AsyncConnection, batch: int = 1000) -> AsyncIterator[Event]:
    """Every event in seq order, a batch at a time."""
    after = 0
    while True:
        rows = (
            await conn.execute(
                select(audit_events)
                .where(audit_events.c.seq > after)
                .order_by(audit_events.c.seq)
                .limit(batch)
            )
        ).all()
        if not rows:
            return
        for row in rows:
            yield _event(row)
        after = int(rows[-1].seq)


async def head(conn: AsyncConnection) -> tuple[int, str] | None:
    """The chain head as recorded, or None if its row is gone (tampering)."""
    row = (await conn.execute(select(audit_head.c.seq, audit_head.c.head))).first()
    return (int(row.seq), str(row.head)) if row else None


async def count(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(audit_events))).scalar_one())
