"""Tampering with stored ciphertext: never another set's plaintext, always DecryptionFailed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from keyfob.errors import DecryptionFailed
from keyfob.store.tables import secret_versions
from keyfob.vault import Context, Vault
from tests.conftest import CANARY, make_set

from .conftest import audit_count, create_set, fetch, run_sql, snapshot

OTHER = "sk-other-set-0b9e8d7c6a5f4e3d2c1b0a99"
BLOB_COLUMNS = [
    pytest.param(("ciphertext",), id="ciphertext"),
    pytest.param(("wrapped_dek",), id="wrapped_dek"),
    pytest.param(("ciphertext", "wrapped_dek"), id="both"),
]


async def stored(vault: Vault, set_id: str, version: int) -> dict[str, Any]:
    rows = await fetch(
        vault,
        select(secret_versions).where(
            secret_versions.c.set_id == set_id, secret_versions.c.version == version
        ),
    )
    return dict(rows[0]._mapping)


async def swap(
    vault: Vault, a: tuple[str, int], b: tuple[str, int], columns: tuple[str, ...]
) -> None:
    """Exchange the given blob columns of two version rows."""
    row_a, row_b = await stored(vault, *a), await stored(vault, *b)

    def put(where: tuple[str, int], row: dict[str, Any]) -> Any:
        return (
            update(secret_versions)
            .where(secret_versions.c.set_id == where[0], secret_versions.c.version == where[1])
            .values({c: row[c] for c in columns})
        )

    await run_sql(vault, put(a, row_b), put(b, row_a))


async def flip_bit(vault: Vault, set_id: str, version: int, column: str, index: int) -> None:
    blob = bytearray((await stored(vault, set_id, version))[column])
    blob[index % len(blob)] ^= 0x01
    await run_sql(
        vault,
        update(secret_versions)
        .where(secret_versions.c.set_id == set_id, secret_versions.c.version == version)
        .values({column: bytes(blob)}),
    )


async def assert_reveal_fails(vault: Vault, path: str, version: int | None = None) -> None:
    with pytest.raises(DecryptionFailed) as caught:
        await vault.sets.reveal(path, version)
    assert type(caught.value) is DecryptionFailed
    assert str(caught.value) == DecryptionFailed.title
    assert CANARY not in str(caught.value)
    assert OTHER not in str(caught.value)


@pytest.fixture
async def two_sets(vault: Vault, ctx: Context) -> tuple[dict[str, Any], dict[str, Any]]:
    """openai/prod/default at v2 (v1 = CANARY) and openai/prod/other at v1 (OTHER)."""
    first = await create_set(vault, ctx)
    await vault.sets.update(ctx, first.path, entries={"OPENAI_API_KEY": CANARY + "-v2"})
    second = await create_set(vault, ctx, "openai/prod/other", entries={"OPENAI_API_KEY": OTHER})
    return first, second


@pytest.mark.parametrize("columns", BLOB_COLUMNS)
async def test_swapping_versions_of_one_set_fails_to_open(
    vault: Vault, two_sets: tuple[dict[str, Any], dict[str, Any]], columns: tuple[str, ...]
):
    first, _ = two_sets
    await swap(vault, (first.id, 1), (first.id, 2), columns)

    await assert_reveal_fails(vault, first.path, 1)
    await assert_reveal_fails(vault, first.path, 2)


@pytest.mark.parametrize("columns", BLOB_COLUMNS)
async def test_swapping_rows_across_sets_never_yields_the_other_sets_plaintext(
    vault: Vault, two_sets: tuple[dict[str, Any], dict[str, Any]], columns: tuple[str, ...]
):
    first, second = two_sets
    await swap(vault, (first.id, 1), (second.id, 1), columns)

    await assert_reveal_fails(vault, first.path, 1)
    await assert_reveal_fails(vault, second.path, 1)
    # Untouched rows still open: the failure is about the swapped rows, not the vault.
    assert (await vault.sets.reveal(first.path, 2))["OPENAI_API_KEY"].reveal() == CANARY + "-v2"


@pytest.mark.parametrize("column", ["ciphertext", "wrapped_dek"])
@pytest.mark.parametrize("index", [0, 1, 5, 20, -1])
async def test_one_flipped_bit_in_a_stored_blob_fails_to_open(
    vault: Vault, ctx: Context, column: str, index: int
):
    created = await create_set(vault, ctx)
    await flip_bit(vault, created.id, 1, column, index)

    await assert_reveal_fails(vault, created.path)


async def test_reading_the_untampered_sets_works(
    vault: Vault, two_sets: tuple[dict[str, Any], dict[str, Any]]
):
    first, second = two_sets

    assert (await vault.sets.reveal(first.path, 1))["OPENAI_API_KEY"].reveal() == CANARY
    assert (await vault.sets.reveal(second.path))["OPENAI_API_KEY"].reveal() == OTHER


async def test_update_of_a_tampered_set_fails_and_changes_nothing(
    vault: Vault, ctx: Context, two_sets: tuple[dict[str, Any], dict[str, Any]]
):
    first, second = two_sets
    await swap(vault, (first.id, 2), (second.id, 1), ("ciphertext", "wrapped_dek"))
    before = await snapshot(vault)

    with pytest.raises(DecryptionFailed):
        await vault.sets.update(ctx, first.path, entries={"EXTRA": "x"})
    with pytest.raises(DecryptionFailed):
        await vault.sets.rollback(ctx, first.path, 2)

    assert await snapshot(vault) == before


async def test_patch_over_http_of_a_tampered_set_is_a_decryption_problem(
    vault: Vault, client: httpx.AsyncClient, ctx: Context
):
    first = (await client.post("/v1/secret-sets", json=make_set())).json()
    second = await create_set(vault, ctx, "openai/prod/other", entries={"OPENAI_API_KEY": OTHER})
    await swap(vault, (first["id"], 1), (second.id, 1), ("ciphertext", "wrapped_dek"))
    before = await snapshot(vault)
    events_before = await audit_count(vault)

    response = await client.patch(
        "/v1/secret-sets/openai/prod/default", json={"entries": {"OPENAI_API_KEY": "new-value"}}
    )

    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["type"] == "urn:keyfob:problem:decryption-failed"
    assert problem["status"] == 500
    assert CANARY not in response.text
    assert OTHER not in response.text
    assert "Traceback" not in response.text
    assert await snapshot(vault) == before
    assert await audit_count(vault) == events_before
    shown = (await client.get("/v1/secret-sets/openai/prod/default")).json()
    assert shown["version"] == 1
