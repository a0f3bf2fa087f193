"""SQL for audit shipping cursors: where each sink is in the log, and who ships it.

Each change is a conditional update, so two nodes on one database never both ship a
sink: ``claim`` succeeds only for the holder or once the holder's claim has lapsed, and
``advance`` only for the holder and only from the position it read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from keyfob.audit import GENESIS
from keyfob.store._asyncio import AsyncConnection
from keyfob.store.tables import audit_ship_cursors as t


@dataclass(frozen=True)
class Cursor:
    sink: str
    seq: int
    hash: str
    claimed_by: str | None
    claimed_until: str | None
    failing_since: str | None
    last_error: str | None
    updated_at: str

    @classmethod
    def from_row(cls, row: Any) -> Cursor:
        return cls(
            row.sink,
            int(row.seq),
            row.hash,
            row.claimed_by,
            row.claimed_until,
            row.failing_since,
            row.last_error,
            row.updated_at,
        )


async def get(conn: AsyncConnection, sink: str) -> Cursor | None:
    row = (await conn.execute(select(t).where(t.c.sink == sink))).first()
    return Cursor.from_row(row) if row else None


async def every(conn: AsyncConnection) -> dict[str, Cursor]:
    return {r.sink: Cursor.from_row(r) for r in (await conn.execute(select(t))).all()}


async def ensure(conn: AsyncConnection, sink: str, now: str) -> None:
    """Create ``sink``'s cursor at the start of the log (inside a write transaction,
    which serialises this check-then-insert across nodes)."""
    if await get(conn, sink) is None:
        await conn.execute(t.insert().values(sink=sink, seq=0, hash=GENESIS, updated_at=now))


async def claim(conn: AsyncConnection, sink: str, who: str, now: str, until: str) -> bool:
    """Take or renew the right to ship ``sink`` if nobody else holds a live claim."""
    result = await conn.execute(
        update(t)
        .where(
            and_(
                t.c.sink == sink,
                or_(t.c.claimed_by.is_(None), t.c.claimed_by == who, t.c.claimed_until < now),
            )
        )
        .values(claimed_by=who, claimed_until=until)
    )
    return bool(result.rowcount)


async def advance(
    conn: AsyncConnection,
    sink: str,
    who: str,
    *,
    after: int,
    seq: int,
    digest: str,
    now: str,
    until: str,
) -> bool:
    """Move the cursor from ``after`` to ``seq`` (delivered); False if the claim was lost."""
    result = await conn.execute(
        update(t)
        .where(and_(t.c.sink == sink, t.c.claimed_by == who, t.c.seq == after))
        .values(
            seq=seq,
            hash=digest,
            claimed_until=until,
            failing_since=None,
            last_error=None,
            updated_at=now,
        )
    )
    return bool(result.rowcount)


async def failed(conn: AsyncConnection, sink: str, who: str, now: str, error: str) -> None:
    """Note a failed delivery; ``failing_since`` keeps the first failure of a run."""
    await conn.execute(
        update(t)
        .where(and_(t.c.sink == sink, t.c.claimed_by == who))
        .values(
            failing_since=func.coalesce(t.c.failing_since, now),
            last_error=error[:300],
            updated_at=now,
        )
    )


async def release(conn: AsyncConnection, sink: str, who: str) -> None:
    """Give the claim up (a clean stop), so another node can take over at once."""
    await conn.execute(
        update(t)
        .where(and_(t.c.sink == sink, t.c.claimed_by == who))
        .values(claimed_by=None, claimed_until=None)
    )
