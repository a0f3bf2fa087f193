"""SQL for refreshed credentials' token rows (sealed access token, claim, reconnect mark)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, delete, or_, select, update

from keyfob.secret import SECRET, Masked
from keyfob.store._asyncio import AsyncConnection
from keyfob.store.tables import credential_tokens as t


@dataclass(frozen=True)
class TokenState(Masked):
    """A token row: ciphertext only; ``version`` is the set version the token serves."""

    set_id: str
    version: int | None
    kek_term: int | None
    wrapped_dek: bytes | None = field(metadata=SECRET)
    ciphertext: bytes | None = field(metadata=SECRET)
    expires_at: str | None
    lifetime: int | None
    claim: str | None
    claim_until: str | None
    reconnect: str | None
    reconnect_version: int | None

    @classmethod
    def from_row(cls, row: Any) -> TokenState:
        return cls(
            row.set_id,
            row.version,
            row.kek_term,
            bytes(row.wrapped_dek) if row.wrapped_dek is not None else None,
            bytes(row.ciphertext) if row.ciphertext is not None else None,
            row.expires_at,
            row.lifetime,
            row.claim,
            row.claim_until,
            row.reconnect,
            row.reconnect_version,
        )


async def get(conn: AsyncConnection, set_id: str) -> TokenState | None:
    row = (await conn.execute(select(t).where(t.c.set_id == set_id))).first()
    return TokenState.from_row(row) if row else None


async def reconnect_marks(conn: AsyncConnection) -> dict[str, tuple[str, int | None]]:
    """Set id → (reason, version marked) for every set that needs a reconnect."""
    rows = await conn.execute(
        select(t.c.set_id, t.c.reconnect, t.c.reconnect_version).where(t.c.reconnect.is_not(None))
    )
    return {r.set_id: (r.reconnect, r.reconnect_version) for r in rows.all()}


async def claim(conn: AsyncConnection, set_id: str, who: str, now: str, until: str) -> bool:
    """Take the refresh claim if nobody holds a live one (a conditional update)."""
    if await get(conn, set_id) is None:
        await conn.execute(t.insert().values(set_id=set_id, updated_at=now))
    result = await conn.execute(
        update(t)
        .where(
            and_(
                t.c.set_id == set_id,
                or_(t.c.claim.is_(None), t.c.claim_until < now),
            )
        )
        .values(claim=who, claim_until=until, updated_at=now)
    )
    return bool(result.rowcount)


async def release(conn: AsyncConnection, set_id: str, who: str, now: str, **values: Any) -> None:
    """Drop ``who``'s claim, writing ``values`` with it (only if the claim is still theirs)."""
    await conn.execute(
        update(t)
        .where(and_(t.c.set_id == set_id, t.c.claim == who))
        .values(claim=None, claim_until=None, updated_at=now, **values)
    )


async def purge(conn: AsyncConnection, set_id: str) -> None:
    await conn.execute(delete(t).where(t.c.set_id == set_id))


async def on_old_terms(conn: AsyncConnection, term: int) -> list[tuple[str, int, int, bytes]]:
    """(set id, set version, stored term, wrapped DEK) of sealed tokens under older terms."""
    rows = await conn.execute(
        select(t.c.set_id, t.c.version, t.c.kek_term, t.c.wrapped_dek).where(
            and_(t.c.kek_term < term, t.c.wrapped_dek.is_not(None), t.c.version.is_not(None))
        )
    )
    return [(r.set_id, r.version, r.kek_term, bytes(r.wrapped_dek)) for r in rows.all()]


async def set_wrapped(
    conn: AsyncConnection, set_id: str, old_term: int, term: int, wrapped: bytes
) -> None:
    """Swap a sealed token's wrapped DEK, only if nobody moved or replaced it meanwhile."""
    await conn.execute(
        update(t)
        .where(and_(t.c.set_id == set_id, t.c.kek_term == old_term))
        .values(kek_term=term, wrapped_dek=wrapped)
    )
