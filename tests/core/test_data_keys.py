"""Unwrapped data keys are cached by set version: a version opened again skips the unwrap,
and what changes a set's versions or keys drops them."""

from __future__ import annotations

import pytest

from keyfob import crypto
from keyfob.crypto import DataKeys, envelope
from keyfob.errors import DecryptionFailed
from keyfob.vault import Context, Vault
from tests.core.test_crypto import make_ring

from .conftest import create_set


@pytest.fixture
def unwraps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The set ids of every data key unwrapped from now on."""
    seen: list[str] = []
    real = envelope._unwrap_dek

    def counting(ring: crypto.Keyring, wrapped: bytes, set_id: str, version: int) -> bytes:
        seen.append(set_id)
        return real(ring, wrapped, set_id, version)

    monkeypatch.setattr(envelope, "_unwrap_dek", counting)
    return seen


def test_a_version_opened_twice_is_unwrapped_once(unwraps: list[str]) -> None:
    ring = make_ring()[0]
    keys = DataKeys()
    sealed = crypto.seal(ring, b"value", set_id="s1", version=1)

    for _ in range(3):
        assert crypto.open(ring, sealed, set_id="s1", version=1, keys=keys) == b"value"

    assert unwraps == ["s1"]
    keys.forget("s1")
    assert crypto.open(ring, sealed, set_id="s1", version=1, keys=keys) == b"value"
    assert unwraps == ["s1", "s1"]


def test_a_cached_key_opens_nothing_of_another_set_or_version() -> None:
    ring = make_ring()[0]
    keys = DataKeys()
    sealed = crypto.seal(ring, b"value", set_id="s1", version=1)
    assert crypto.open(ring, sealed, set_id="s1", version=1, keys=keys) == b"value"

    # The same wrapped key offered for another set or version is unwrapped (and refused)
    # again: the cache is keyed by where the key belongs, not by its bytes alone.
    for set_id, version in (("s2", 1), ("s1", 2)):
        with pytest.raises(DecryptionFailed):
            crypto.open(ring, sealed, set_id=set_id, version=version, keys=keys)
    assert len(keys) == 1


def test_the_cache_is_bounded() -> None:
    ring = make_ring()[0]
    keys = DataKeys(limit=4)
    for version in range(1, 10):
        sealed = crypto.seal(ring, b"v", set_id="s", version=version)
        crypto.open(ring, sealed, set_id="s", version=version, keys=keys)
    assert len(keys) == 4


async def test_update_delete_and_rotation_drop_cached_keys(
    vault: Vault, ctx: Context, unwraps: list[str]
) -> None:
    view = await create_set(vault, ctx, "openai/prod/cached", entries={"OPENAI_API_KEY": "a"})
    await vault.sets.reveal("openai/prod/cached", 1)
    await vault.sets.reveal("openai/prod/cached", 1)
    assert len(vault.core.data_keys) == 1

    await vault.sets.update(ctx, "openai/prod/cached", entries={"OPENAI_API_KEY": "b"})
    assert len(vault.core.data_keys) == 0, "an update drops the set's keys"
    await vault.sets.reveal("openai/prod/cached", 2)
    assert len(vault.core.data_keys) == 1

    await vault.keys.rotate(ctx)
    assert len(vault.core.data_keys) == 0, "a rotation drops every key"
    await vault.sets.reveal("openai/prod/cached", 2)
    await vault.keys.rewrap(ctx)
    assert len(vault.core.data_keys) == 0, "a rewrap drops every key"
    assert (await vault.sets.reveal("openai/prod/cached", 2))["OPENAI_API_KEY"].reveal() == "b"

    await vault.sets.delete(ctx, "openai/prod/cached")
    assert len(vault.core.data_keys) == 0, "a soft delete drops the set's keys"
    assert view.id in unwraps
