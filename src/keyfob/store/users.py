"""SQL for dashboard users (argon2 hashes only) and their sessions (HMAC digests only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from keyfob.secret import SECRET, Masked
from keyfob.store.tables import sessions, users


@dataclass(frozen=True)
class UserRow(Masked):
    id: str
    name: str
    password_hash: str = field(metadata=SECRET)
    failed_count: int
    locked_until: str | None
    created_at: str
    created_by: str
    disabled_at: str | None


def _user(row: Any) -> UserRow:
    return UserRow(**{k: row._mapping[k] for k in UserRow.__dataclass_fields__})


async def insert_user(conn: AsyncConnection, row: UserRow) -> None:
    await conn.execute(users.insert().values(**row.__dict__))


async def user_by(
    conn: AsyncConnection, *, name: str | None = None, id: str | None = None
) -> UserRow | None:
    column, value = (users.c.name, name) if name is not None else (users.c.id, id)
    row = (await conn.execute(select(users).where(column == value))).first()
    return _user(row) if row else None


async def list_users(conn: AsyncConnection) -> list[UserRow]:
    return [_user(r) for r in (await conn.execute(select(users).order_by(users.c.name))).all()]


async def update_user(conn: AsyncConnection, user_id: str, **values: Any) -> None:
    await conn.execute(update(users).where(users.c.id == user_id).values(**values))


async def insert_session(
    conn: AsyncConnection, digest: str, user_id: str, created_at: str, expires_at: str
) -> None:
    await conn.execute(
        sessions.insert().values(
            digest=digest, user_id=user_id, created_at=created_at, expires_at=expires_at
        )
    )


async def session_user(conn: AsyncConnection, digest: str, now: str) -> UserRow | None:
    """The user of a live session (not expired, user not disabled)."""
    row = (
        await conn.execute(
            select(users)
            .join(sessions, sessions.c.user_id == users.c.id)
            .where(
                sessions.c.digest == digest,
                sessions.c.expires_at > now,
                users.c.disabled_at.is_(None),
            )
        )
    ).first()
    return _user(row) if row else None


async def delete_session(conn: AsyncConnection, digest: str) -> bool:
    result = await conn.execute(delete(sessions).where(sessions.c.digest == digest))
    return bool(result.rowcount)


async def delete_expired_sessions(conn: AsyncConnection, now: str) -> None:
    await conn.execute(delete(sessions).where(sessions.c.expires_at <= now))
