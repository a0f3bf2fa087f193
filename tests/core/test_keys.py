"""Key rotation, rewrap and retirement; opening a vault with the right and wrong master key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import update

from keyfob.crypto import master
from keyfob.errors import ConfigurationError, Conflict, NotFound
from keyfob.settings import Settings
from keyfob.store.tables import secret_versions
from keyfob.vault import Context, Vault
from keyfob.vault.views import Rewrapped, Rotated, TermRetired
from tests.conftest import CANARY

from .conftest import create_set, run_sql, snapshot

Written = dict[tuple[str, int], str]


async def write(vault: Vault, ctx: Context, written: Written, path: str, value: str) -> int:
    """Create or update ``path`` so OPENAI_API_KEY=value; remember what each version holds."""
    try:
        view = await vault.sets.update(ctx, path, entries={"OPENAI_API_KEY": value})
    except NotFound:
        view = await create_set(vault, ctx, path, entries={"OPENAI_API_KEY": value})
    written[(path, view.version)] = value
    return int(view.version)


async def assert_all_readable(vault: Vault, written: Written) -> None:
    for (path, version), value in written.items():
        entries = await vault.sets.reveal(path, version)
        assert entries["OPENAI_API_KEY"].reveal() == value, (path, version)


def terms(status: dict[str, Any]) -> dict[int, tuple[str, int]]:
    return {t.term: (t.status, t.records) for t in status.terms}


def with_master_key(settings: Settings, key: str) -> Settings:
    return Settings(
        data_dir=settings.data_dir, database_url=settings.database_url, master_key=SecretStr(key)
    )


@pytest.fixture
async def second_node(vault: Vault, settings: Settings) -> AsyncIterator[Vault]:
    """Another keyfob process on the same database, opened before the test's changes."""
    node = await Vault.open(settings)
    try:
        yield node
    finally:
        await node.close()


async def test_rotate_rewrap_retire_keeps_every_version_readable(
    vault: Vault, ctx: Context, settings: Settings
):
    written: Written = {}
    await write(vault, ctx, written, "openai/prod/default", CANARY)
    await write(vault, ctx, written, "openai/prod/default", CANARY + "-2")
    await write(vault, ctx, written, "openai/dev/default", "dev-1")

    assert await vault.keys.rotate(ctx) == Rotated(term=2)
    await write(vault, ctx, written, "openai/prod/default", CANARY + "-3")
    await write(vault, ctx, written, "openai/test/default", "test-1")

    assert terms(await vault.keys.status()) == {1: ("previous", 3), 2: ("active", 2)}
    assert await vault.keys.rewrap(ctx) == Rewrapped(rewrapped=3, term=2)
    status = await vault.keys.status()
    assert status.active_term == 2
    assert terms(status) == {1: ("previous", 0), 2: ("active", 5)}
    await assert_all_readable(vault, written)

    assert await vault.keys.retire(ctx, 1) == TermRetired(term=1, status="retired")
    status = await vault.keys.status()
    assert terms(status) == {1: ("retired", 0), 2: ("active", 5)}
    assert status.terms[0].retired_at is not None
    await assert_all_readable(vault, written)
    reopened = await Vault.open(settings)
    try:
        await assert_all_readable(reopened, written)
    finally:
        await reopened.close()


async def test_rewrap_leaves_ciphertext_alone(vault: Vault, ctx: Context):
    created = await create_set(vault, ctx)
    before = (await snapshot(vault))["secret_versions"][0]
    await vault.keys.rotate(ctx)

    await vault.keys.rewrap(ctx)

    after = (await snapshot(vault))["secret_versions"][0]
    assert after.ciphertext == before.ciphertext
    assert after.wrapped_dek != before.wrapped_dek
    assert (after.kek_term, before.kek_term) == (2, 1)
    assert [v.kek_term for v in await vault.sets.versions(created.path)] == [2]


async def test_rewrap_with_nothing_to_move_moves_nothing(vault: Vault, ctx: Context):
    await create_set(vault, ctx)

    assert await vault.keys.rewrap(ctx) == Rewrapped(rewrapped=0, term=1)


async def test_rewrap_finishes_when_the_term_column_disagrees_with_the_blob(
    vault: Vault, ctx: Context
):
    """A row whose kek_term column lags its wrapped DEK is moved once, not retried forever."""
    written: Written = {}
    created = await write(vault, ctx, written, "openai/prod/default", CANARY)
    await vault.keys.rotate(ctx)
    await write(vault, ctx, written, "openai/prod/default", "on-term-2")
    set_id = (await vault.sets.get("openai/prod/default")).id
    await run_sql(
        vault,
        update(secret_versions)
        .where(secret_versions.c.set_id == set_id, secret_versions.c.version == created + 1)
        .values(kek_term=1),
    )

    result = await asyncio.wait_for(vault.keys.rewrap(ctx), timeout=20)

    assert result == Rewrapped(rewrapped=2, term=2)
    assert terms(await vault.keys.status()) == {1: ("previous", 0), 2: ("active", 2)}
    await vault.keys.retire(ctx, 1)
    await assert_all_readable(vault, written)


async def test_retiring_a_term_that_still_wraps_records_is_a_conflict(vault: Vault, ctx: Context):
    written: Written = {}
    await write(vault, ctx, written, "openai/prod/default", CANARY)
    await vault.keys.rotate(ctx)
    before = await snapshot(vault)

    with pytest.raises(Conflict, match="rewrap") as caught:
        await vault.keys.retire(ctx, 1)

    assert caught.value.extra == {"records": 1}
    assert await snapshot(vault) == before
    assert terms(await vault.keys.status()) == {1: ("previous", 1), 2: ("active", 0)}
    await assert_all_readable(vault, written)


async def test_retiring_the_active_term_is_a_conflict(vault: Vault, ctx: Context):
    await create_set(vault, ctx)
    await vault.keys.rotate(ctx)
    await vault.keys.rewrap(ctx)
    before = await snapshot(vault)

    with pytest.raises(Conflict, match="active"):
        await vault.keys.retire(ctx, 2)

    assert await snapshot(vault) == before


async def test_retiring_an_unknown_or_retired_term_fails(vault: Vault, ctx: Context):
    await vault.keys.rotate(ctx)
    await vault.keys.retire(ctx, 1)
    before = await snapshot(vault)

    with pytest.raises(NotFound):
        await vault.keys.retire(ctx, 9)
    with pytest.raises(Conflict, match="already retired"):
        await vault.keys.retire(ctx, 1)

    assert await snapshot(vault) == before


async def test_terms_are_never_reused(vault: Vault, ctx: Context):
    await vault.keys.rotate(ctx)
    await vault.keys.retire(ctx, 1)
    await vault.keys.rotate(ctx)
    await vault.keys.retire(ctx, 2)

    assert await vault.keys.rotate(ctx) == Rotated(term=4)
    assert terms(await vault.keys.status()) == {
        1: ("retired", 0),
        2: ("retired", 0),
        3: ("previous", 0),
        4: ("active", 0),
    }


async def test_a_second_node_sees_the_rotated_term(vault: Vault, second_node: Vault, ctx: Context):
    written: Written = {}
    path = "openai/prod/default"
    await write(vault, ctx, written, path, CANARY)
    await vault.keys.rotate(ctx)
    await write(vault, ctx, written, path, CANARY + "-after-rotation")

    await assert_all_readable(second_node, written)
    assert (await second_node.keys.status()).active_term == 2

    # The second node's own writes go to the new term, not the one it loaded at start.
    await write(second_node, ctx, written, path, "written-by-node-two")
    assert (await vault.sets.versions(path))[0].kek_term == 2
    await vault.keys.rewrap(ctx)
    await vault.keys.retire(ctx, 1)
    await write(second_node, ctx, written, path, "after-retire-by-node-two")

    assert {v.kek_term for v in await vault.sets.versions(path)} == {2}
    await assert_all_readable(vault, written)
    await assert_all_readable(second_node, written)


async def test_a_second_node_writes_to_a_term_rotated_by_the_first(
    vault: Vault, second_node: Vault, ctx: Context
):
    written: Written = {}
    await write(vault, ctx, written, "openai/prod/default", CANARY)
    await second_node.keys.rotate(ctx)

    await write(vault, ctx, written, "openai/prod/default", "after")

    assert (await vault.sets.versions("openai/prod/default"))[0].kek_term == 2
    await assert_all_readable(second_node, written)


# -- opening with the wrong, a missing or no master key -----------------------------------


@pytest.fixture
def key_file(settings: Settings) -> Path:
    return settings.resolved_master_key_file


@pytest.mark.parametrize("source", ["setting", "environment"])
async def test_a_different_master_key_is_refused(
    vault: Vault, ctx: Context, settings: Settings, monkeypatch: pytest.MonkeyPatch, source: str
):
    await create_set(vault, ctx)
    before = await snapshot(vault)
    other = master.encode(master.generate().reveal())
    if source == "environment":
        monkeypatch.setenv("KEYFOB_MASTER_KEY", other)
        wrong = Settings(data_dir=settings.data_dir, database_url=settings.database_url)
    else:
        wrong = with_master_key(settings, other)

    with pytest.raises(ConfigurationError, match="master key") as caught:
        await Vault.open(wrong)

    assert other not in str(caught.value)
    assert await snapshot(vault) == before


async def test_the_right_master_key_setting_opens(vault: Vault, ctx: Context, key_file: Path):
    await create_set(vault, ctx)
    settings = with_master_key(vault.settings, key_file.read_text().strip())
    key_file.unlink()

    node = await Vault.open(settings)
    try:
        assert (await node.sets.reveal("openai/prod/default"))["OPENAI_API_KEY"].reveal() == CANARY
    finally:
        await node.close()


@pytest.mark.parametrize("text", ["not base64!", "c2hvcnQ="], ids=["garbage", "short"])
async def test_a_malformed_master_key_setting_is_refused(
    vault: Vault, settings: Settings, text: str
):
    before = await snapshot(vault)

    with pytest.raises(ConfigurationError, match="master key"):
        await Vault.open(with_master_key(settings, text))

    assert await snapshot(vault) == before


async def test_a_replaced_master_key_file_is_refused(
    vault: Vault, ctx: Context, settings: Settings, key_file: Path
):
    await create_set(vault, ctx)
    before = await snapshot(vault)
    key_file.unlink()
    master.write_file(key_file, master.generate())

    with pytest.raises(ConfigurationError, match="master key"):
        await Vault.open(settings)

    assert await snapshot(vault) == before


async def test_a_missing_master_key_file_is_named(vault: Vault, settings: Settings, key_file: Path):
    before = await snapshot(vault)
    key_file.unlink()

    with pytest.raises(ConfigurationError) as caught:
        await Vault.open(settings)

    assert str(key_file) in str(caught.value)
    assert "KEYFOB_MASTER_KEY" in str(caught.value)
    assert not key_file.exists()
    assert await snapshot(vault) == before


async def test_a_master_key_file_others_can_read_is_refused(
    vault: Vault, settings: Settings, key_file: Path
):
    key_file.chmod(0o644)

    with pytest.raises(ConfigurationError, match="chmod 600"):
        await Vault.open(settings)


async def test_open_creates_nothing_on_an_empty_database(sqlite_settings: Settings):
    with pytest.raises(ConfigurationError, match="keyfob init"):
        await Vault.open(sqlite_settings)

    assert not sqlite_settings.resolved_master_key_file.exists()


async def test_initialising_twice_is_a_conflict_and_overwrites_nothing(
    vault: Vault, operator_token: str, ctx: Context, settings: Settings, key_file: Path
):
    await create_set(vault, ctx)
    key_before = key_file.read_bytes()
    before = await snapshot(vault)

    with pytest.raises(Conflict, match="already initialised"):
        await Vault.initialise(settings)
    other = master.encode(master.generate().reveal())
    with pytest.raises(Conflict, match="already initialised"):
        await Vault.initialise(with_master_key(settings, other))

    assert key_file.read_bytes() == key_before
    assert await snapshot(vault) == before
    elsewhere = Settings(
        data_dir=settings.data_dir.parent / "elsewhere",
        database_url=settings.database_url or settings.resolved_database_url,
    )
    with pytest.raises(Conflict, match="already initialised"):
        await Vault.initialise(elsewhere)
    assert not elsewhere.resolved_master_key_file.exists()
    assert await snapshot(vault) == before
    node = await Vault.open(settings)
    try:
        principal = await node.operators.authenticate(operator_token, ctx, "/v1/keys")
        assert principal.kind == "operator"
        assert (await node.sets.reveal("openai/prod/default"))["OPENAI_API_KEY"].reveal() == CANARY
    finally:
        await node.close()
