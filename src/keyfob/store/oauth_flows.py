"""SQL for the dashboard's OAuth connect flows in progress (sealed rows, used once)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import and_, delete, func, select, update

from keyfob.secret import SECRET, Masked
from keyfob.store._asyncio import AsyncConnection
from keyfob.store.tables import oauth_flows as t


@dataclass(frozen=True)
class FlowRow(Masked):
    """A stored flow: ciphertext only."""

    state_digest: str
    kek_term: int
    wrapped_dek: bytes = field(metadata=SECRET)
    ciphertext: bytes = field(metadata=SECRET)


async def purge_expired(conn: AsyncConnection, now: str) -> None:
    await conn.execute(delete(t).where(t.c.expires_at <= now))


async def count(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(t))).scalar_one())


async def insert(
    conn: AsyncConnection,
    *,
    state_digest: str,
    browser_digest: str,
    kek_term: int,
    wrapped_dek: bytes,
    ciphertext: bytes,
    created_at: str,
    expires_at: str,
) -> None:
    await conn.execute(
        t.insert().values(
            state_digest=state_digest,
            browser_digest=browser_digest,
            kek_term=kek_term,
            wrapped_dek=wrapped_dek,
            ciphertext=ciphertext,
            created_at=created_at,
            expires_at=expires_at,
        )
    )


async def take(
    conn: AsyncConnection, state_digest: str, browser_digest: str, now: str
) -> FlowRow | None:
    """The live flow for this state and browser, deleted in the same transaction; None
    if there is none or a concurrent caller deleted it first (the delete's row count
    decides: on PostgreSQL the loser's DELETE waits on the row lock, then finds nothing)."""
    match = and_(
        t.c.state_digest == state_digest,
        t.c.browser_digest == browser_digest,
        t.c.expires_at > now,
    )
    row = (await conn.execute(select(t).where(match))).first()
    if row is None:
        return None
    if (await conn.execute(delete(t).where(match))).rowcount != 1:
        return None
    return FlowRow(row.state_digest, row.kek_term, bytes(row.wrapped_dek), bytes(row.ciphertext))


async def on_old_terms(conn: AsyncConnection, term: int) -> list[tuple[str, int, bytes]]:
    """(state digest, stored term, wrapped DEK) of flows sealed under older terms."""
    rows = await conn.execute(
        select(t.c.state_digest, t.c.kek_term, t.c.wrapped_dek).where(t.c.kek_term < term)
    )
    return [(r.state_digest, r.kek_term, bytes(r.wrapped_dek)) for r in rows.all()]


async def set_wrapped(
    conn: AsyncConnection, state_digest: str, old_term: int, term: int, wrapped: bytes
) -> None:
    """Swap a flow's wrapped DEK, only if nobody moved or took it meanwhile."""
    await conn.execute(
        update(t)
        .where(and_(t.c.state_digest == state_digest, t.c.kek_term == old_term))
        .values(kek_term=term, wrapped_dek=wrapped)
    )
