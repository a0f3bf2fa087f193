"""``/v1/keys``: status, rotate, rewrap and retire, without losing a secret."""

from __future__ import annotations

from typing import Any

import httpx

from keyfob.vault import Vault
from tests.api.conftest import DELETED, SEEDED
from tests.conftest import CANARY
from tests.support.http import assert_problem


async def status(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/v1/keys")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def terms(body: dict[str, Any]) -> dict[int, tuple[str, int]]:
    return {t["term"]: (t["status"], t["records"]) for t in body["terms"]}


async def kek_terms(client: httpx.AsyncClient, path: str) -> list[int]:
    versions = (await client.get(f"/v1/secret-sets/{path}/versions")).json()["items"]
    return [v["kek_term"] for v in versions]


async def test_status_of_a_fresh_vault(client: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    body = await status(client)

    assert body["active_term"] == 1
    assert terms(body) == {1: ("active", 2)}
    assert body["terms"][0]["created_at"]
    assert body["audit_public_key"]


async def test_rotate_adds_a_term_that_new_writes_use(
    client: httpx.AsyncClient, vault: Vault, seeded: dict[str, Any]
) -> None:
    rotated = await client.post("/v1/keys/rotate")

    assert rotated.status_code == 201, rotated.text
    assert rotated.json() == {"term": 2}
    assert terms(await status(client)) == {1: ("previous", 2), 2: ("active", 0)}
    await client.patch(f"/v1/secret-sets/{SEEDED}", json={"entries": {"OPENAI_ORG": "org"}})
    assert await kek_terms(client, SEEDED) == [2, 1]
    assert (await vault.sets.reveal(SEEDED, 1))["OPENAI_API_KEY"].reveal() == CANARY


async def test_rewrap_moves_every_data_key_to_the_active_term(
    client: httpx.AsyncClient, vault: Vault, seeded: dict[str, Any]
) -> None:
    await client.post("/v1/keys/rotate")

    rewrapped = await client.post("/v1/keys/rewrap")

    assert rewrapped.status_code == 200, rewrapped.text
    assert rewrapped.json() == {"rewrapped": 2, "term": 2}
    assert terms(await status(client)) == {1: ("previous", 0), 2: ("active", 2)}
    assert await kek_terms(client, SEEDED) == [2]
    assert await kek_terms(client, DELETED) == [2]
    assert (await vault.sets.reveal(SEEDED))["OPENAI_API_KEY"].reveal() == CANARY
    again = await client.post("/v1/keys/rewrap")
    assert again.json() == {"rewrapped": 0, "term": 2}


async def test_retire_destroys_an_unused_term_and_secrets_still_open(
    client: httpx.AsyncClient, vault: Vault, seeded: dict[str, Any]
) -> None:
    await client.post("/v1/keys/rotate")
    still_used = await client.post("/v1/keys/1/retire")
    assert assert_problem(still_used, 409, "conflict")["records"] == 2
    await client.post("/v1/keys/rewrap")

    retired = await client.post("/v1/keys/1/retire")

    assert retired.status_code == 200, retired.text
    assert retired.json() == {"term": 1, "status": "retired"}
    body = await status(client)
    assert terms(body) == {1: ("retired", 0), 2: ("active", 2)}
    assert body["terms"][0]["retired_at"] is not None
    assert (await vault.sets.reveal(SEEDED))["OPENAI_API_KEY"].reveal() == CANARY
    patched = await client.patch(
        f"/v1/secret-sets/{SEEDED}", json={"entries": {"OPENAI_ORG": "org"}}
    )
    assert patched.status_code == 200, patched.text


async def test_retire_refuses_the_active_a_retired_and_a_missing_term(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    assert (
        "active"
        in assert_problem(await client.post("/v1/keys/1/retire"), 409, "conflict")["detail"]
    )
    assert_problem(await client.post("/v1/keys/99/retire"), 404, "not-found")
    await client.post("/v1/keys/rotate")
    await client.post("/v1/keys/rewrap")
    await client.post("/v1/keys/1/retire")
    assert (
        "already retired"
        in assert_problem(await client.post("/v1/keys/1/retire"), 409, "conflict")["detail"]
    )
    assert (await client.post("/v1/keys/rotate")).json() == {"term": 3}


async def test_key_changes_are_audited(client: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    await client.post("/v1/keys/rotate")
    await client.post("/v1/keys/rewrap")
    await client.post("/v1/keys/1/retire")

    items = (await client.get("/v1/audit", params={"action": "keys."})).json()["items"]

    assert [(e["action"], e["target"]) for e in items] == [
        ("keys.rotate", "kek:2"),
        ("keys.rewrap", "kek:2"),
        ("keys.retire", "kek:1"),
    ]
    assert items[1]["details"]["rewrapped"] == 2
