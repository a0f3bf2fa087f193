"""Database backends for tests: SQLite always, PostgreSQL when KEYFOB_TEST_DATABASE_URL is set.

Migrating costs more than most tests, so each test process migrates once into a
template and every test starts from a copy of it: a copied file on SQLite, emptied
tables (plus the rows the migrations seed) on PostgreSQL. Under pytest-xdist each
worker has its own PostgreSQL database, ``<name>_<worker>``, created on first use and
dropped when the worker ends.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keyfob.store import Database

BASE_PG_URL = os.environ.get("KEYFOB_TEST_DATABASE_URL")
PG_SKIP_REASON = "PostgreSQL tests need KEYFOB_TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)"
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def _worker_url(url: str | None) -> str | None:
    """This process's database: the given one, or ``<name>_<worker>`` under xdist."""
    if url is None or not WORKER:
        return url
    base, _, name = url.rpartition("/")
    name, mark, query = name.partition("?")
    return f"{base}/{name}_{WORKER}{mark}{query}"


PG_URL = _worker_url(BASE_PG_URL)

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgresql",
        id="postgresql",
        marks=[pytest.mark.postgres, pytest.mark.skipif(PG_URL is None, reason=PG_SKIP_REASON)],
    ),
]


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _quoted(names: list[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


# --- SQLite: one migrated file per process, copied for each test ---------------------------

_sqlite_template: Path | None = None


async def _migrate(url: str) -> None:
    db = Database(url)
    try:
        await db.migrate()
    finally:
        await db.close()


def _sqlite_template_file() -> Path:
    global _sqlite_template
    if _sqlite_template is None:
        folder = Path(tempfile.mkdtemp(prefix="keyfob-template-"))
        atexit.register(shutil.rmtree, folder, True)
        path = folder / "keyfob.db"
        asyncio.run(_migrate(f"sqlite:///{path}"))
        # One self-contained file (no -wal beside it), so a plain copy is the database.
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA journal_mode=DELETE")
        conn.close()
        _sqlite_template = path
    return _sqlite_template


def fresh_sqlite(data_dir: Path) -> None:
    """Put an empty, migrated ``keyfob.db`` in ``data_dir`` (created 0700 as keyfob does)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(_sqlite_template_file(), data_dir / "keyfob.db")


# --- PostgreSQL: migrate once, then empty the tables for each test --------------------------


@dataclass
class _PgTemplate:
    tables: list[str]
    triggers: int
    seeded: dict[str, tuple[list[str], list[tuple[Any, ...]]]]


_pg_template: _PgTemplate | None = None

# One event loop and one connection kept for the whole process: a reset is then a few
# round trips (~10 ms) instead of a connection, a TRUNCATE of every table (new files for
# each, ~0.4 s) and a disconnect. The loop is never the thread's current loop, so the
# tests' own loops are untouched.
_runner: asyncio.Runner | None = None
_kept: Any = None


def _run(coro: Any) -> Any:
    global _runner
    if _runner is None:
        _runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        atexit.register(_close_runner)
    return _runner.run(coro)


def _close_runner() -> None:
    global _runner
    if _runner is not None:
        _runner.run(_forget_connection())
        _runner.close()
        _runner = None


async def _connection(url: str) -> Any:
    global _kept
    import asyncpg

    if _kept is None or _kept.is_closed():
        _kept = await asyncpg.connect(_dsn(url))
        await _kept.execute("SET lock_timeout = '20s'")
    return _kept


async def _forget_connection() -> None:
    global _kept
    kept, _kept = _kept, None
    if kept is not None:
        try:
            await kept.close(timeout=5)
        except Exception:
            kept.terminate()


_TRIGGERS = "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal"
_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"


async def _ensure_database(url: str) -> None:
    import asyncpg

    try:
        conn = await asyncpg.connect(_dsn(url))
    except asyncpg.InvalidCatalogNameError:
        assert BASE_PG_URL is not None
        admin = await asyncpg.connect(_dsn(BASE_PG_URL))
        try:
            name = url.rpartition("/")[2].partition("?")[0]
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            pass
        finally:
            await admin.close()
        atexit.register(drop_worker_database)
    else:
        await conn.close()


async def _rebuild(url: str) -> _PgTemplate:
    """Drop every table, migrate, and remember what the migrations left behind."""
    import asyncpg

    await _ensure_database(url)
    conn = await asyncpg.connect(_dsn(url))
    try:
        names = [r["tablename"] for r in await conn.fetch(_TABLES)]
        if names:
            await conn.execute(f"DROP TABLE IF EXISTS {_quoted(names)} CASCADE")
    finally:
        await conn.close()
    await _migrate(url)
    conn = await asyncpg.connect(_dsn(url))
    try:
        tables = [r["tablename"] for r in await conn.fetch(_TABLES)]
        seeded = {}
        for table in tables:
            rows = await conn.fetch(f'SELECT * FROM "{table}"')
            if rows:
                seeded[table] = (list(rows[0].keys()), [tuple(r.values()) for r in rows])
        triggers = int(await conn.fetchval(_TRIGGERS))
    finally:
        await conn.close()
    return _PgTemplate(tables, triggers, seeded)


async def _empty(url: str, template: _PgTemplate) -> bool:
    """Empty every table and put the seeded rows back; False if the schema was changed.

    DELETE with the foreign keys' checks off (``session_replication_role = replica``)
    does what ``TRUNCATE`` did, without a new file per table. (The schema has no
    sequences: keyfob makes its ids.)
    """
    conn = await _connection(url)
    tables = [r["tablename"] for r in await conn.fetch(_TABLES)]
    if tables != template.tables or await conn.fetchval(_TRIGGERS) != template.triggers:
        return False
    statements = ["SET LOCAL session_replication_role = replica"]
    statements += [f'DELETE FROM "{table}"' for table in tables]
    async with conn.transaction():
        await conn.execute(";\n".join(statements))
        for table, (columns, rows) in template.seeded.items():
            await conn.copy_records_to_table(table, records=rows, columns=columns)
    return True


async def _reset_pg(url: str) -> None:
    global _pg_template
    try:
        if _pg_template is not None and await _empty(url, _pg_template):
            return
    except Exception:
        await _forget_connection()
        raise
    await _forget_connection()  # the schema changes: no statement cached against the old one
    _pg_template = await _rebuild(url)


def reset_postgres() -> str:
    """Empty this process's test database (migrated, as a fresh one would be); its URL."""
    assert PG_URL is not None
    _run(_reset_pg(PG_URL))
    return PG_URL


def drop_worker_database() -> None:
    """Drop the per-worker database (never the one KEYFOB_TEST_DATABASE_URL names)."""
    if PG_URL is None or PG_URL == BASE_PG_URL:
        return
    _close_runner()

    async def drop() -> None:
        import asyncpg

        assert BASE_PG_URL is not None
        assert PG_URL is not None
        admin = await asyncpg.connect(_dsn(BASE_PG_URL))
        try:
            name = PG_URL.rpartition("/")[2].partition("?")[0]
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(drop())


def blank_postgres() -> str:
    """This process's test database with no tables at all (for tests of the migrations)."""
    global _pg_template
    assert PG_URL is not None

    async def blank() -> None:
        import asyncpg

        await _ensure_database(PG_URL)
        conn = await asyncpg.connect(_dsn(PG_URL))
        try:
            names = [r["tablename"] for r in await conn.fetch(_TABLES)]
            if names:
                await conn.execute(f"DROP TABLE IF EXISTS {_quoted(names)} CASCADE")
        finally:
            await conn.close()

    _pg_template = None  # the next test rebuilds the schema
    asyncio.run(blank())
    return PG_URL
