"""SQL for operator tokens (HMAC digests only)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from keyfob.store._asyncio import AsyncConnection
from keyfob.store.records import TokenRow
from keyfob.store.tables import operator_tokens


def _row(r: Any) -> TokenRow:
    return TokenRow(r.id, r.name, r.created_at, r.created_by, r.revoked_at)


async def insert(conn: AsyncConnection, row: TokenRow, digest: str) -> None:
    await conn.execute(
        operator_tokens.insert().values(
            id=row.id,
            name=row.name,
            digest=digest,
            created_at=row.created_at,
            created_by=row.created_by,
            revoked_at=None,
        )
    )


async def by_digest(conn: AsyncConnection, digest: str) -> TokenRow | None:
    row = (
        await conn.execute(select(operator_tokens).where(operator_tokens.c.digest == digest))
    ).first()
    return _row(row) if row else None


async def by_id(conn: AsyncConnection, token_id: str) -> TokenRow | None:
    row = (
        await conn.execute(select(operator_tokens).where(operator_tokens.c.id == token_id))
    ).first()
    return _row(row) if row else None


async def list_all(conn: AsyncConnection) -> list[TokenRow]:
    rows = await conn.execute(select(operator_tokens).order_by(operator_tokens.c.created_at))
    return [_row(r) for r in rows.all()]


async def revoke(conn: AsyncConnection, token_id: str, when: str) -> None:
    await conn.execute(
        update(operator_tokens).where(operator_tokens.c.id == token_id).values(revoked_at=when)
    )
