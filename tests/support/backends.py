"""Database backends for tests: SQLite always, PostgreSQL when KEYFOB_TEST_DATABASE_URL is set."""

from __future__ import annotations

import asyncio
import os

import pytest

PG_URL = os.environ.get("KEYFOB_TEST_DATABASE_URL")
PG_SKIP_REASON = "PostgreSQL tests need KEYFOB_TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)"

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgresql",
        id="postgresql",
        marks=[pytest.mark.postgres, pytest.mark.skipif(PG_URL is None, reason=PG_SKIP_REASON)],
    ),
]

_TABLES = (
    "audit_head",
    "audit_events",
    "operator_tokens",
    "keyring_meta",
    "kek_terms",
    "secret_versions",
    "secret_sets",
    "alembic_version",
)


async def _reset_pg(url: str) -> None:
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
        names = [r["tablename"] for r in rows]
        if names:
            quoted = ", ".join(f'"{n}"' for n in names)
            await conn.execute(f"DROP TABLE IF EXISTS {quoted} CASCADE")
    finally:
        await conn.close()


def reset_postgres() -> str:
    """Empty the test database (every table in its schema) and return its URL."""
    assert PG_URL is not None
    asyncio.run(_reset_pg(PG_URL))
    return PG_URL
