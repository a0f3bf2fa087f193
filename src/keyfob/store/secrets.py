"""SQL for secret sets and their versions (ciphertext in, ciphertext out)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, func, select, tuple_, update

from keyfob.audit import canonical
from keyfob.store._asyncio import AsyncConnection
from keyfob.store.paging import prefix_of
from keyfob.store.records import SetRow, VersionRow
from keyfob.store.tables import secret_sets, secret_versions


async def get_set(
    conn: AsyncConnection, provider: str, environment: str, name: str
) -> SetRow | None:
    row = (
        await conn.execute(
            select(secret_sets).where(
                secret_sets.c.provider == provider,
                secret_sets.c.environment == environment,
                secret_sets.c.name == name,
            )
        )
    ).first()
    return SetRow.from_row(row) if row else None


_PATH = (secret_sets.c.provider, secret_sets.c.environment, secret_sets.c.name)


async def list_sets(
    conn: AsyncConnection,
    *,
    provider: str | None = None,
    environment: str | None = None,
    name: str | None = None,
    labels: dict[str, str] | None = None,
    include_deleted: bool = False,
    after: tuple[str, str, str] | None = None,
    limit: int = 100,
    prefix: str | None = None,
) -> list[SetRow]:
    """Sets by path; ``prefix`` is the start of a path (``openai/pr``), ``after`` a keyset."""
    query = select(secret_sets)
    if prefix:
        *whole, start = prefix.split("/")[:3]
        for column, value in zip(_PATH, whole, strict=False):
            query = query.where(column == value)
        query = query.where(prefix_of(_PATH[len(whole)], start))
    if provider:
        query = query.where(secret_sets.c.provider == provider)
    if environment:
        query = query.where(secret_sets.c.environment == environment)
    if name:
        query = query.where(secret_sets.c.name == name)
    if not include_deleted:
        query = query.where(secret_sets.c.deleted_at.is_(None))
    if after:
        key = tuple_(secret_sets.c.provider, secret_sets.c.environment, secret_sets.c.name)
        query = query.where(key > tuple_(*after))
    query = query.order_by(*_PATH)
    if not labels:
        return [SetRow.from_row(r) for r in (await conn.execute(query.limit(limit))).all()]
    rows = [SetRow.from_row(r) for r in (await conn.execute(query)).all()]
    # Labels are few and small; filtering here keeps the schema portable.
    rows = [r for r in rows if all(r.labels.get(k) == v for k, v in labels.items())]
    return rows[:limit]


async def count_sets(conn: AsyncConnection) -> int:
    query = select(func.count()).select_from(secret_sets).where(secret_sets.c.deleted_at.is_(None))
    return int((await conn.execute(query)).scalar_one())


async def insert_set(conn: AsyncConnection, row: SetRow) -> None:
    await conn.execute(
        secret_sets.insert().values(
            id=row.id,
            provider=row.provider,
            environment=row.environment,
            name=row.name,
            labels=canonical(row.labels),
            profile=canonical(row.profile) if row.profile is not None else None,
            version=row.version,
            created_at=row.created_at,
            updated_at=row.updated_at,
            deleted_at=row.deleted_at,
            exported_at=row.exported_at,
        )
    )


async def update_set(conn: AsyncConnection, set_id: str, **values: Any) -> None:
    if "labels" in values:
        values["labels"] = canonical(values["labels"])
    if "profile" in values and values["profile"] is not None:
        values["profile"] = canonical(values["profile"])
    await conn.execute(update(secret_sets).where(secret_sets.c.id == set_id).values(**values))


async def insert_version(conn: AsyncConnection, row: VersionRow) -> None:
    await conn.execute(
        secret_versions.insert().values(
            set_id=row.set_id,
            version=row.version,
            created_at=row.created_at,
            actor=row.actor,
            reason=row.reason,
            rollback_of=row.rollback_of,
            keys=json.dumps([k.as_dict() for k in row.keys]),
            kek_term=row.kek_term,
            wrapped_dek=row.wrapped_dek,
            ciphertext=row.ciphertext,
        )
    )


async def get_version(conn: AsyncConnection, set_id: str, version: int) -> VersionRow | None:
    row = (
        await conn.execute(
            select(secret_versions).where(
                secret_versions.c.set_id == set_id, secret_versions.c.version == version
            )
        )
    ).first()
    return VersionRow.from_row(row) if row else None


async def get_versions(
    conn: AsyncConnection, wanted: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], VersionRow]:
    """Many sets' versions in one query (a listing's current versions), by (set id, version)."""
    if not wanted:
        return {}
    key = tuple_(secret_versions.c.set_id, secret_versions.c.version)
    rows = (await conn.execute(select(secret_versions).where(key.in_(list(wanted))))).all()
    found = (VersionRow.from_row(row) for row in rows)
    return {(v.set_id, v.version): v for v in found}


async def list_versions(
    conn: AsyncConnection, set_id: str, *, below: int | None = None, limit: int | None = None
) -> list[VersionRow]:
    """A set's versions, newest first; ``below``/``limit`` page them (keyset on version)."""
    query = select(secret_versions).where(secret_versions.c.set_id == set_id)
    if below is not None:
        query = query.where(secret_versions.c.version < below)
    query = query.order_by(secret_versions.c.version.desc())
    rows = await conn.execute(query.limit(limit) if limit is not None else query)
    return [VersionRow.from_row(r) for r in rows.all()]


async def all_versions(conn: AsyncConnection) -> list[VersionRow]:
    """Every stored version of every set, deleted ones included (restore checks them all)."""
    rows = await conn.execute(
        select(secret_versions).order_by(secret_versions.c.set_id, secret_versions.c.version)
    )
    return [VersionRow.from_row(r) for r in rows.all()]


async def purge_set(conn: AsyncConnection, set_id: str) -> int:
    """Delete a set and every version; returns how many versions went."""
    gone = await conn.execute(delete(secret_versions).where(secret_versions.c.set_id == set_id))
    await conn.execute(delete(secret_sets).where(secret_sets.c.id == set_id))
    return int(gone.rowcount or 0)


async def versions_on_old_terms(
    conn: AsyncConnection, term: int, limit: int
) -> Sequence[tuple[str, int, int, bytes]]:
    """(set id, version, stored term, wrapped DEK) of versions wrapped under older terms."""
    rows = await conn.execute(
        select(
            secret_versions.c.set_id,
            secret_versions.c.version,
            secret_versions.c.kek_term,
            secret_versions.c.wrapped_dek,
        )
        .where(secret_versions.c.kek_term < term)
        .order_by(secret_versions.c.set_id, secret_versions.c.version)
        .limit(limit)
    )
    return [(r.set_id, r.version, r.kek_term, bytes(r.wrapped_dek)) for r in rows.all()]


async def set_wrapped_dek(
    conn: AsyncConnection, set_id: str, version: int, old_term: int, term: int, wrapped: bytes
) -> bool:
    """Swap one wrapped DEK, only if nobody moved it meanwhile."""
    result = await conn.execute(
        update(secret_versions)
        .where(
            and_(
                secret_versions.c.set_id == set_id,
                secret_versions.c.version == version,
                secret_versions.c.kek_term == old_term,
            )
        )
        .values(kek_term=term, wrapped_dek=wrapped)
    )
    return bool(result.rowcount)


async def records_per_term(conn: AsyncConnection) -> dict[int, int]:
    rows = await conn.execute(
        select(secret_versions.c.kek_term, func.count()).group_by(secret_versions.c.kek_term)
    )
    return {int(term): int(n) for term, n in rows.all()}


async def get_set_by_id(conn: AsyncConnection, set_id: str) -> SetRow | None:
    row = (await conn.execute(select(secret_sets).where(secret_sets.c.id == set_id))).first()
    return SetRow.from_row(row) if row else None


async def current_key_names(conn: AsyncConnection, set_id: str) -> set[str]:
    """Key names of the set's current version (names only; nothing is decrypted)."""
    row = await get_set_by_id(conn, set_id)
    if row is None:
        return set()
    current = await get_version(conn, set_id, row.version)
    return {k.name for k in current.keys} if current else set()
