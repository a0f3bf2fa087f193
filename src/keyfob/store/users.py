"""SQL for dashboard users (argon2 hashes only), their sessions (HMAC digests only) and the
sign-in limits (failure counters per typed name and per client address)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, delete, or_, select, update

from keyfob.secret import SECRET, Masked
from keyfob.store._asyncio import AsyncConnection
from keyfob.store.paging import keyset, prefix_of
from keyfob.store.tables import sessions, signin_limits, users

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.dialects import postgresql, sqlite


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


async def list_users(
    conn: AsyncConnection,
    *,
    prefix: str | None = None,
    after: Sequence[Any] | None = None,
    limit: int | None = None,
) -> list[UserRow]:
    """Users by name; ``prefix`` narrows by name, ``after``/``limit`` page (keyset)."""
    query = select(users)
    if prefix:
        query = query.where(prefix_of(users.c.name, prefix))
    rows = await conn.execute(keyset(query, [users.c.name], after, limit))
    return [_user(r) for r in rows.all()]


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


async def delete_user_sessions(
    conn: AsyncConnection, user_id: str, *, keep: str | None = None
) -> int:
    """End every session of a user (but ``keep``, a session digest); how many ended."""
    query = delete(sessions).where(sessions.c.user_id == user_id)
    if keep is not None:
        query = query.where(sessions.c.digest != keep)
    return int((await conn.execute(query)).rowcount or 0)


async def delete_user(conn: AsyncConnection, user_id: str) -> None:
    await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
    await conn.execute(delete(users).where(users.c.id == user_id))


# -- sign-in limits -----------------------------------------------------------------------


def _upsertable(conn: AsyncConnection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's ``INSERT`` with ``ON CONFLICT``; the dialect module is imported here,
    so a SQLite server never loads PostgreSQL's (~2 MB of its idle memory)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


async def take_attempt(conn: AsyncConnection, key: str, now: str, forget_at: str) -> int | None:
    """Count one attempt against ``key`` unless it is locked: the new count, or ``None``.

    One conditional UPDATE … RETURNING, taken before the password is checked: however
    many sign-ins run at once, none gets past a lock and each one is counted.
    """
    await conn.execute(
        _upsertable(conn, signin_limits)
        .values(key=key, failures=0, locked_until=None, expires_at=now)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    c = signin_limits.c
    row = (
        await conn.execute(
            update(signin_limits)
            .where(c.key == key, or_(c.locked_until.is_(None), c.locked_until <= now))
            .values(
                # A row past its expiry starts again (and any old lock ran out before).
                failures=case((c.expires_at <= now, 1), else_=c.failures + 1),
                expires_at=forget_at,
            )
            .returning(c.failures)
        )
    ).first()
    return int(row.failures) if row else None


async def lock(conn: AsyncConnection, key: str, until: str, expires_at: str) -> None:
    await conn.execute(
        update(signin_limits)
        .where(signin_limits.c.key == key)
        .values(locked_until=until, expires_at=expires_at)
    )


async def locked_until(conn: AsyncConnection, key: str) -> str | None:
    row = (
        await conn.execute(select(signin_limits.c.locked_until).where(signin_limits.c.key == key))
    ).first()
    return row.locked_until if row else None


async def limits(conn: AsyncConnection, keys: list[str]) -> dict[str, str | None]:
    """``locked_until`` of each key that has a row."""
    c = signin_limits.c
    rows = (await conn.execute(select(c.key, c.locked_until).where(c.key.in_(keys)))).all()
    return {r.key: r.locked_until for r in rows}


async def clear_limit(conn: AsyncConnection, key: str) -> None:
    await conn.execute(delete(signin_limits).where(signin_limits.c.key == key))


async def forgive(conn: AsyncConnection, key: str, free: int) -> None:
    """Give back the attempt a successful sign-in took (and the lock it alone caused)."""
    c = signin_limits.c
    await conn.execute(
        update(signin_limits)
        .where(c.key == key, c.failures > 0)
        .values(
            failures=c.failures - 1,
            locked_until=case((c.failures - 1 < free, None), else_=c.locked_until),
        )
    )


async def purge_limits(conn: AsyncConnection, now: str) -> None:
    """Drop counters that have run out (every typed name makes one)."""
    await conn.execute(delete(signin_limits).where(signin_limits.c.expires_at <= now))
