"""Password hashing cost: strong by default, cheap only where settings say so (the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from argon2 import Type, extract_parameters
from argon2.profiles import RFC_9106_LOW_MEMORY
from sqlalchemy import select

from keyfob.secret import Secret
from keyfob.settings import Settings
from keyfob.store import tables
from keyfob.vault import Context, Vault
from keyfob.vault.passwords import password_hasher
from tests.support.hashing import FAST_HASHING

PASSWORD = "correct horse battery staple"


def test_production_defaults_are_rfc_9106_low_memory_or_stronger(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in FAST_HASHING:
        monkeypatch.delenv(f"KEYFOB_{name.upper()}", raising=False)
    params = extract_parameters(password_hasher(Settings(data_dir=tmp_path)).hash(PASSWORD))
    strong = RFC_9106_LOW_MEMORY
    assert params.type is Type.ID
    assert params.time_cost >= strong.time_cost
    assert params.memory_cost >= strong.memory_cost
    assert params.parallelism >= strong.parallelism
    assert params.hash_len >= strong.hash_len
    assert params.salt_len >= strong.salt_len


async def test_stored_hashes_use_the_configured_cost(settings: Settings) -> None:
    assert settings.password_hash_memory_kib == FAST_HASHING["password_hash_memory_kib"]
    vault, _ = await Vault.initialise(settings)
    try:
        await vault.users.create(Context("operator:test"), "alice", Secret(PASSWORD))
        async with vault.db.read() as conn:
            stored = (await conn.execute(select(tables.users.c.password_hash))).scalar_one()
    finally:
        await vault.close()
    params = extract_parameters(stored)
    assert (params.time_cost, params.memory_cost, params.parallelism) == (1, 8, 1)
