"""The suite's shared statement cache (tests/support/sql_cache.py): one compile per process,
not per test, and no engine configured differently from the rest may join it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from keyfob.store import Database
from keyfob.store import engine as store_engine
from keyfob.store.tables import secret_sets
from tests.support import sql_cache


async def test_a_statement_compiled_for_one_database_is_reused_by_the_next(tmp_path: Path) -> None:
    # Unique to this test, so no earlier test compiled it.
    query = select(secret_sets.c.id).where(secret_sets.c.name == "sql-cache-probe").limit(7)
    first, second = Database(f"sqlite:///{tmp_path}/a.db"), Database(f"sqlite:///{tmp_path}/b.db")
    try:
        for db in (first, second):
            await db.migrate()
        assert first.engine.sync_engine.dialect is second.engine.sync_engine.dialect
        cache = first.engine.sync_engine._compiled_cache
        assert cache is second.engine.sync_engine._compiled_cache
        async with first.engine.connect() as conn:
            await conn.execute(query)
        compiled = len(cache)
        async with second.engine.connect() as conn:
            await conn.execute(query)
        assert len(cache) == compiled  # the second database found it compiled
    finally:
        await first.close()
        await second.close()


def test_an_engine_with_a_dialect_argument_is_refused() -> None:
    assert store_engine.create_async_engine is sql_cache._create_async_engine
    with pytest.raises(AssertionError, match="json_serializer"):
        store_engine.create_async_engine("sqlite+aiosqlite://", json_serializer=str)
