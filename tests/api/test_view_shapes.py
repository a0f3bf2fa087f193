"""The JSON of every vault view keeps its field names and order (views are typed now)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.access.factories import SET, bearer, make_agent, make_grant, make_secret_set

SET_FIELDS = [
    "id", "path", "provider", "environment", "name", "labels", "version", "keys", "profile",
    "created_at", "updated_at", "deleted_at", "exported_at", "needs_reconnect",
]  # fmt: skip
AGENT_FIELDS = [
    "id", "name", "status", "disabled_at", "allowed_networks", "client_cert_sha256",
    "created_at", "created_by", "updated_at",
]  # fmt: skip
CONSTRAINTS = [
    "keys", "actions", "not_before", "expires_at", "scopes", "max_lease_ttl", "max_lease_uses",
    "rate_limit", "max_uses",
]  # fmt: skip
GRANT_FIELDS = [
    "id", "agent_id", "agent", "secret_set", *CONSTRAINTS, "uses", "methods", "paths",
    "approval", "budgets", "created_at", "created_by", "updated_at", "revoked_at",
]  # fmt: skip
MY_GRANT_FIELDS = [
    "grant_id", "secret_set", *CONSTRAINTS, "methods", "paths", "approval", "budgets", "uses",
    "remaining_uses", "base_url", "hosts", "env",
]  # fmt: skip


def fields(body: dict[str, Any]) -> list[str]:
    return list(body)


async def test_set_and_version_views(client: httpx.AsyncClient) -> None:
    view = await make_secret_set(client)
    assert fields(view) == SET_FIELDS
    assert fields(view["keys"][0]) == ["name", "fingerprint", "version"]
    (version,) = (await client.get(f"/v1/secret-sets/{SET}/versions")).json()["items"]
    assert fields(version) == [
        "version", "created_at", "actor", "reason", "rollback_of", "keys", "kek_term",
    ]  # fmt: skip
    assert version["keys"] == ["OPENAI_API_KEY", "OPENAI_ORG_ID"]
    assert fields((await client.delete(f"/v1/secret-sets/{SET}")).json()) == SET_FIELDS
    assert fields((await client.post(f"/v1/secret-sets/{SET}/restore")).json()) == SET_FIELDS
    await client.delete(f"/v1/secret-sets/{SET}")
    purged = (await client.post(f"/v1/secret-sets/{SET}/purge")).json()
    assert purged == {"purged": SET, "versions": 1}


async def test_agent_and_grant_views(client: httpx.AsyncClient) -> None:
    await make_secret_set(client)
    agent = await make_agent(client)
    assert fields(agent) == [*AGENT_FIELDS, "token"]
    assert fields((await client.get("/v1/agents/billing-bot")).json()) == AGENT_FIELDS
    grant = await make_grant(client, agent)
    assert fields(grant) == GRANT_FIELDS
    (mine,) = (await client.get("/v1/me/grants", headers=bearer(agent["token"]))).json()["items"]
    assert fields(mine) == MY_GRANT_FIELDS
    assert mine["keys"] == ["OPENAI_API_KEY", "OPENAI_ORG_ID"]
    assert mine["hosts"] == ["api.openai.com"]
    assert mine["base_url"] == "https://api.openai.com"
    assert mine["remaining_uses"] is None  # no use cap on this grant
    revoked = (await client.delete(f"/v1/grants/{grant['id']}")).json()
    assert fields(revoked) == GRANT_FIELDS
    deleted = (await client.delete("/v1/agents/billing-bot")).json()
    assert fields(deleted) == [*AGENT_FIELDS, "deleted"]
    assert deleted["deleted"] is True


async def test_key_views(client: httpx.AsyncClient) -> None:
    status = (await client.get("/v1/keys")).json()
    assert fields(status) == ["active_term", "terms", "audit_public_key", "master_key"]
    assert fields(status["master_key"]) == ["provider", "path"]
    assert fields(status["terms"][0]) == ["term", "status", "created_at", "retired_at", "records"]
    assert (await client.post("/v1/keys/rotate")).json() == {"term": 2}
    assert (await client.post("/v1/keys/rewrap")).json() == {"rewrapped": 0, "term": 2}
    assert (await client.post("/v1/keys/1/retire")).json() == {"term": 1, "status": "retired"}
