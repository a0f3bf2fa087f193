"""``/v1/tokens``: operator tokens are shown once, listed without secrets, and revocable."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.http import assert_problem


async def create_token(client: httpx.AsyncClient, name: str = "ci") -> dict[str, Any]:
    response = await client.post("/v1/tokens", json={"name": name})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def as_bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_create_shows_the_token_once(client: httpx.AsyncClient) -> None:
    created = await create_token(client)

    assert {"id", "name", "token", "created_at"} <= set(created)
    assert "digest" not in created
    assert created["name"] == "ci"
    assert created["token"].startswith("kfo_")
    assert len(created["token"]) == 4 + 43

    listing = await client.get("/v1/tokens")
    assert listing.status_code == 200
    assert created["token"] not in listing.text
    items = {t["id"]: t for t in listing.json()["items"]}
    assert {"id", "name", "created_at", "revoked_at"} <= set(items[created["id"]])
    assert "token" not in items[created["id"]]
    assert "digest" not in items[created["id"]]
    assert items[created["id"]]["revoked_at"] is None
    assert len(items) == 2


async def test_a_new_token_works_and_acts_under_its_own_id(client: httpx.AsyncClient) -> None:
    created = await create_token(client, "deploy")

    rotated = await client.post("/v1/keys/rotate", headers=as_bearer(created["token"]))

    assert rotated.status_code == 201, rotated.text
    (event,) = (await client.get("/v1/audit", params={"action": "keys.rotate"})).json()["items"]
    assert event["actor"] == f"operator:{created['id']}"
    (made,) = (await client.get("/v1/audit", params={"action": "token.create"})).json()["items"][1:]
    assert made["target"] == f"token:{created['id']}"
    assert created["token"] not in (await client.get("/v1/audit/export")).text


async def test_a_revoked_token_is_refused_at_once(client: httpx.AsyncClient) -> None:
    created = await create_token(client)
    assert (await client.get("/v1/keys", headers=as_bearer(created["token"]))).status_code == 200

    revoked = await client.delete(f"/v1/tokens/{created['id']}")

    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["id"] == created["id"]
    assert revoked.json()["revoked_at"] is not None
    refused = await client.get("/v1/keys", headers=as_bearer(created["token"]))
    assert_problem(refused, 401, "unauthorized")
    assert (await client.get("/v1/keys")).status_code == 200
    listed = {t["id"]: t for t in (await client.get("/v1/tokens")).json()["items"]}
    assert listed[created["id"]]["revoked_at"] == revoked.json()["revoked_at"]
    failed = (await client.get("/v1/audit", params={"action": "auth.failed"})).json()["items"]
    assert [e["details"]["reason"] for e in failed] == ["revoked"]


async def test_revoking_twice_or_an_unknown_token(client: httpx.AsyncClient) -> None:
    created = await create_token(client)
    await client.delete(f"/v1/tokens/{created['id']}")

    assert (
        "already revoked"
        in assert_problem(await client.delete(f"/v1/tokens/{created['id']}"), 409, "conflict")[
            "detail"
        ]
    )
    assert_problem(await client.delete("/v1/tokens/0123456789abcdef"), 404, "not-found")


async def test_a_token_can_revoke_itself(client: httpx.AsyncClient) -> None:
    created = await create_token(client)
    mine = as_bearer(created["token"])

    assert (await client.delete(f"/v1/tokens/{created['id']}", headers=mine)).status_code == 200
    assert_problem(await client.get("/v1/tokens", headers=mine), 401, "unauthorized")
