"""Helpers for the core suite: factories and direct database access for tamper tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.sql import Executable

from keyfob.clock import FrozenClock
from keyfob.settings import Settings
from keyfob.store.tables import audit_events, metadata, secret_versions
from keyfob.vault import Context, Vault
from tests.conftest import make_set


async def create_set(
    vault: Vault, ctx: Context, path: str = "openai/prod/default", **body: Any
) -> dict[str, Any]:
    """Create a secret set through the vault (body fields as for POST /v1/secret-sets)."""
    provider, environment, name = path.split("/")
    return await vault.sets.create(ctx, **make_set(provider, environment, name, **body))


async def run_sql(vault: Vault, *statements: Executable) -> None:
    """Change the database behind keyfob's back (as an attacker with DB access would)."""
    async with vault.db.engine.begin() as conn:
        for statement in statements:
            await conn.execute(statement)


async def fetch(vault: Vault, query: Executable) -> list[Any]:
    async with vault.db.engine.connect() as conn:
        return list((await conn.execute(query)).all())


async def audit_count(vault: Vault) -> int:
    return int((await fetch(vault, select(func.count()).select_from(audit_events)))[0][0])


async def version_count(vault: Vault) -> int:
    return int((await fetch(vault, select(func.count()).select_from(secret_versions)))[0][0])


async def snapshot(vault: Vault) -> dict[str, list[Any]]:
    """Every row of every table, table by table: what a failed call must leave untouched.

    The tables come from the schema, so a table added later is covered without a change here.
    """
    out = {}
    for table in metadata.sorted_tables:
        assert table.primary_key.columns, f"{table.name} has no primary key to order by"
        query = select(table).order_by(*table.primary_key.columns)
        out[table.name] = await fetch(vault, query)
    return out


@pytest.fixture
async def clocked(settings: Settings, clock: FrozenClock) -> AsyncIterator[Vault]:
    """A fresh vault on the test's ``clock`` (``clock.advance`` moves its time)."""
    vault, _ = await Vault.initialise(settings, clock=clock)
    try:
        yield vault
    finally:
        await vault.close()
