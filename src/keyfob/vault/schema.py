"""``keyfob db status`` and ``keyfob db upgrade``: the schema's revision against this code's."""

from __future__ import annotations

from typing import Any

from keyfob.errors import ConfigurationError
from keyfob.settings import Settings
from keyfob.store import Database
from keyfob.store.engine import _head_revision, known_revisions


def _database(settings: Settings) -> Database:
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Database(settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous)


async def _status(db: Database) -> dict[str, Any]:
    current = await db.revision()
    head = _head_revision()
    known = known_revisions()
    if current is None:
        state, pending = "empty", known
    elif current == head:
        state, pending = "current", []
    elif current in known:
        state, pending = "behind", known[known.index(current) + 1 :]
    else:
        try:
            await db.newer_schema()
            state = "ahead"
        except ConfigurationError:
            state = "ahead-incompatible"
        pending = []
    return {
        "database": db.display_url,
        "revision": current,
        "head": head,
        "state": state,
        "pending": pending,
        "oldest_code": await db.oldest_code(),
    }


async def status(settings: Settings) -> dict[str, Any]:
    """Where the schema is: ``empty``, ``behind``, ``current``, ``ahead`` (a newer keyfob
    migrated it and this one may still serve on it) or ``ahead-incompatible``."""
    db = _database(settings)
    try:
        return await _status(db)
    finally:
        await db.close()


async def upgrade(settings: Settings) -> dict[str, Any]:
    """Apply every pending migration (expand-only: nodes on the previous release keep
    serving); a no-op at head or on a newer, compatible schema."""
    db = _database(settings)
    try:
        before = await db.revision()
        await db.migrate()
        after = await _status(db)
    finally:
        await db.close()
    return {**after, "previous": before}
