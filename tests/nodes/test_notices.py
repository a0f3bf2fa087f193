"""Cache notices between nodes: two vaults on one PostgreSQL database, in this process.

Every exact decision reads the database; these tests cover what a node keeps in memory
(KEK terms and data keys, the price table, the CA signer, a purged set's data keys) and
show that a change made on one node leaves the other's memory within a second, and that a
node whose listener connection dies drops everything and listens again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from keyfob.settings import Settings
from keyfob.vault import Context, Vault
from keyfob.vault import backup as backup_file
from tests.conftest import make_set
from tests.support.backends import PG_SKIP_REASON, PG_URL, reset_postgres
from tests.support.hashing import FAST_HASHING

pytestmark = [pytest.mark.postgres, pytest.mark.skipif(PG_URL is None, reason=PG_SKIP_REASON)]

TTL = 0.2


async def within(seconds: float, check: Callable[[], bool]) -> float:
    """Poll ``check`` until true, at most ``seconds``; how long it took (fails otherwise)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            pytest.fail(f"not within {seconds} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
def pg_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=reset_postgres(), **FAST_HASHING)


@pytest.fixture
async def pair(pg_settings: Settings) -> AsyncIterator[tuple[Vault, Vault]]:
    """Two nodes, both listening, on one freshly emptied database and one master key."""
    settings = pg_settings
    one, _ = await Vault.initialise(settings)
    two = await Vault.open(settings)
    try:
        await one.caches.start(TTL)
        await two.caches.start(TTL)
        assert one.caches.listening
        assert two.caches.listening
        yield one, two
    finally:
        await two.close()
        await one.close()


async def test_a_term_retired_on_one_node_leaves_the_others_memory(
    pair: tuple[Vault, Vault], ctx: Context
) -> None:
    one, two = pair
    await one.sets.create(ctx, **make_set(entries={"OPENAI_API_KEY": "v1"}))
    await two.sets.reveal("openai/prod/default")
    assert len(two.core.data_keys) == 1

    await one.keys.rotate(ctx)
    await within(1.0, lambda: two.core.ring.terms == [1, 2])
    assert len(two.core.data_keys) == 0  # unwrapped under a term that may go
    await one.keys.rewrap(ctx)
    await one.keys.retire(ctx, 1)

    await within(1.0, lambda: two.core.ring.terms == [2])
    assert (await two.sets.reveal("openai/prod/default"))["OPENAI_API_KEY"].reveal() == "v1"


async def test_a_purged_set_leaves_the_other_nodes_data_keys(
    pair: tuple[Vault, Vault], ctx: Context
) -> None:
    one, two = pair
    await one.sets.create(ctx, **make_set())
    await one.sets.create(ctx, **make_set(name="kept"))
    await two.sets.reveal("openai/prod/default")
    await two.sets.reveal("openai/prod/kept")
    assert len(two.core.data_keys) == 2

    await one.sets.delete(ctx, "openai/prod/default")
    await one.sets.purge(ctx, "openai/prod/default")

    await within(1.0, lambda: len(two.core.data_keys) == 1)


async def test_prices_set_on_one_node_meter_on_the_other(
    pair: tuple[Vault, Vault], ctx: Context
) -> None:
    one, two = pair
    assert "house-model-1" not in dict(two.pricing.table.rows())

    await one.pricing.set(ctx, {"model": "house-model-1", "input": "1.5", "output": "2"})

    await within(1.0, lambda: "house-model-1" in dict(two.pricing.table.rows()))


async def test_a_ca_rotated_on_one_node_signs_the_others_new_leaves(
    pair: tuple[Vault, Vault], ctx: Context
) -> None:
    one, two = pair
    before = await two.authority.server_context("api.example.com")
    assert await two.authority.server_context("api.example.com") is before  # cached

    await one.authority.rotate(ctx, overlap=0)

    await within(1.0, lambda: two.caches.dropped["ca"] >= 1)
    assert await two.authority.server_context("api.example.com") is not before


async def test_a_node_whose_listener_dies_drops_its_caches_and_listens_again(
    pair: tuple[Vault, Vault], ctx: Context
) -> None:
    one, two = pair
    await one.sets.create(ctx, **make_set())
    await two.sets.reveal("openai/prod/default")
    resets = two.caches.dropped["reset"]
    assert PG_URL is not None
    admin = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'keyfob-listener' AND datname = current_database()"
        )
    finally:
        await admin.close()
    assert killed == 2

    await within(3.0, lambda: two.caches.dropped["reset"] > resets)
    assert len(two.core.data_keys) == 0
    await within(3.0, lambda: two.caches.listening)
    await one.keys.rotate(ctx)
    await within(1.0, lambda: two.core.ring.terms == [1, 2])


async def test_a_forced_restore_makes_running_nodes_drop_what_they_hold(
    pair: tuple[Vault, Vault], pg_settings: Settings, ctx: Context, tmp_path: Path
) -> None:
    one, two = pair
    await one.sets.create(ctx, **make_set())
    saved = tmp_path / "before-rotation.kfb"
    await backup_file.backup(pg_settings, saved)
    await one.keys.rotate(ctx)  # term 2 exists only in the live database
    await within(1.0, lambda: two.core.ring.terms == [1, 2])

    await backup_file.restore(pg_settings, saved, force=True)

    await within(1.0, lambda: two.core.ring.terms == [1])
    assert len(two.core.data_keys) == 0
