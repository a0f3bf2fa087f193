"""The Alembic migrations build exactly the schema ``store/tables.py`` describes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from keyfob.settings import Settings
from keyfob.store import Database
from keyfob.store.tables import metadata
from tests.support.backends import blank_postgres


@pytest.fixture
def blank(backend: str, tmp_path: Path) -> Settings:
    """A database with no schema at all (the ``settings`` fixture's is already migrated)."""
    url = blank_postgres() if backend == "postgresql" else None
    return Settings(data_dir=tmp_path / "data", database_url=url)


async def test_migrations_match_table_definitions(blank: Settings) -> None:
    db = Database(blank.resolved_database_url)
    try:
        await db.migrate()

        def diff(sync_conn: Any) -> list[Any]:
            return list(compare_metadata(MigrationContext.configure(sync_conn), metadata))

        async with db.engine.connect() as conn:
            changes = await conn.run_sync(diff)
    finally:
        await db.close()
    assert changes == []


async def test_migrating_twice_changes_nothing(blank: Settings) -> None:
    db = Database(blank.resolved_database_url)
    try:
        await db.migrate()
        await db.migrate()
        async with db.read() as conn:
            from keyfob.store import audit_log

            assert await audit_log.head(conn) == (0, "0" * 64)
    finally:
        await db.close()


def test_the_head_read_without_alembic_is_alembics_head() -> None:
    """Start-up finds the head from the scripts' assignments (Alembic stays unloaded)."""
    from alembic.script import ScriptDirectory

    from keyfob.store import engine

    scripts = ScriptDirectory.from_config(engine._alembic_config())
    assert engine._head_revision() == scripts.get_current_head()
    assert len(scripts.get_heads()) == 1


def test_a_serving_process_does_not_import_alembic() -> None:
    import subprocess
    import sys

    code = (
        "import sys, keyfob.app.bootstrap, keyfob.store.engine as e; "
        "e._head_revision(); print('alembic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
