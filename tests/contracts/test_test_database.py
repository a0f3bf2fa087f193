"""The PostgreSQL test database is reset between tests to what the migrations leave.

Every PostgreSQL test relies on starting from an empty, migrated database; the reset
(tests/support/backends.py) deletes rows over a kept connection instead of truncating, so
this checks that nothing a vault writes survives it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from keyfob.settings import Settings
from keyfob.vault import Vault
from tests.support import backends
from tests.support.backends import PG_SKIP_REASON, PG_URL, reset_postgres
from tests.support.hashing import FAST_HASHING

pytestmark = [pytest.mark.postgres, pytest.mark.skipif(PG_URL is None, reason=PG_SKIP_REASON)]


async def row_counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        tables = [r["tablename"] for r in await conn.fetch(backends._TABLES)]
        return {t: int(await conn.fetchval(f'SELECT count(*) FROM "{t}"')) for t in tables}
    finally:
        await conn.close()


async def test_a_reset_leaves_only_the_rows_the_migrations_seed(tmp_path: Path) -> None:
    url = await asyncio.to_thread(reset_postgres)  # it runs its own event loop
    empty = await row_counts(url)
    settings = Settings(data_dir=tmp_path / "data", database_url=url, **FAST_HASHING)
    vault, _ = await Vault.initialise(settings)
    await vault.close()
    written = await row_counts(url)
    assert sum(written.values()) > sum(empty.values())  # the vault wrote rows somewhere

    await asyncio.to_thread(reset_postgres)

    assert await row_counts(url) == empty
    vault, _ = await Vault.initialise(settings)  # refused if anything of the first one were left
    await vault.close()
