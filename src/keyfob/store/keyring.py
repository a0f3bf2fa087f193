"""SQL for KEK terms and the wrapped system keys (wrapped bytes only)."""

from __future__ import annotations

from sqlalchemy import select, update

from keyfob.store._asyncio import AsyncConnection
from keyfob.store.records import KekRow
from keyfob.store.tables import kek_terms, keyring_meta

SYSTEM = "system"


async def get_system(conn: AsyncConnection) -> bytes | None:
    row = (
        await conn.execute(select(keyring_meta.c.value).where(keyring_meta.c.name == SYSTEM))
    ).first()
    return bytes(row.value) if row else None


async def put_system(conn: AsyncConnection, wrapped: bytes) -> None:
    await conn.execute(keyring_meta.insert().values(name=SYSTEM, value=wrapped))


async def list_terms(conn: AsyncConnection) -> list[KekRow]:
    rows = await conn.execute(select(kek_terms).order_by(kek_terms.c.term))
    return [
        KekRow(
            r.term, bytes(r.wrapped) if r.wrapped is not None else None, r.created_at, r.retired_at
        )
        for r in rows.all()
    ]


async def add_term(conn: AsyncConnection, term: int, wrapped: bytes, created_at: str) -> None:
    await conn.execute(kek_terms.insert().values(term=term, wrapped=wrapped, created_at=created_at))


async def retire_term(conn: AsyncConnection, term: int, retired_at: str) -> None:
    """Destroy the wrapped KEK: data it alone protected can never be opened again."""
    await conn.execute(
        update(kek_terms)
        .where(kek_terms.c.term == term)
        .values(wrapped=None, retired_at=retired_at)
    )
