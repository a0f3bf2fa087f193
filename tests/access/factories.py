"""Plain-function factories for agents, grants and leases, driven through the HTTP API."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import CANARY, make_set

SET = "openai/prod/default"
OTHER_SET = "stripe/prod/billing"
# Two keys, so key allowlists have something to leave out.
ENTRIES = {"OPENAI_API_KEY": CANARY, "OPENAI_ORG_ID": CANARY + "-org"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "request_id"}


async def make_secret_set(
    client: httpx.AsyncClient, path: str = SET, entries: dict[str, str] | None = None
) -> dict[str, Any]:
    provider, environment, name = path.split("/")
    entries = dict(entries or ENTRIES)
    # A set the proxy can use, so a dry run of a proxy use can be allowed.
    profile = {"preset": "openai"} if "OPENAI_API_KEY" in entries else None
    body = make_set(provider, environment, name, entries, profile=profile)
    created = await client.post("/v1/secret-sets", json=body)
    assert created.status_code == 201, created.text
    view: dict[str, Any] = created.json()
    return view


async def make_agent(client: httpx.AsyncClient, name: str = "billing-bot") -> dict[str, Any]:
    """A new agent's view plus its ``token``."""
    created = await client.post("/v1/agents", json={"name": name})
    assert created.status_code == 201, created.text
    view: dict[str, Any] = created.json()
    return view


async def make_grant(
    client: httpx.AsyncClient, agent: dict[str, Any], set_path: str = SET, **constraints: Any
) -> dict[str, Any]:
    body = {"agent": agent["name"], "secret_set": set_path, **constraints}
    created = await client.post("/v1/grants", json=body)
    assert created.status_code == 201, created.text
    view: dict[str, Any] = created.json()
    return view


async def mint(
    client: httpx.AsyncClient, agent_token: str, set_path: str = SET, **body: Any
) -> httpx.Response:
    """``POST /v1/leases`` as the agent; the raw response."""
    return await client.post(
        "/v1/leases", json={"secret_set": set_path, **body}, headers=bearer(agent_token)
    )


async def make_lease(
    client: httpx.AsyncClient, agent_token: str, set_path: str = SET, **body: Any
) -> dict[str, Any]:
    """A freshly minted lease's view plus its ``token``."""
    answer = await mint(client, agent_token, set_path, **body)
    assert answer.status_code == 201, answer.text
    view: dict[str, Any] = answer.json()
    return view


async def export(
    client: httpx.AsyncClient,
    lease_token: str,
    set_path: str = SET,
    keys: list[str] | None = None,
) -> httpx.Response:
    body = {"keys": keys} if keys is not None else None
    return await client.post(
        f"/v1/secret-sets/{set_path}/export", json=body, headers=bearer(lease_token)
    )


async def check(client: httpx.AsyncClient, lease_token: str, **body: Any) -> httpx.Response:
    return await client.post("/v1/leases/check", json=body, headers=bearer(lease_token))


async def audit(client: httpx.AsyncClient, action: str, **filters: Any) -> list[dict[str, Any]]:
    """Audit events for ``action`` (a trailing ``.`` matches the family), oldest first."""
    answer = await client.get("/v1/audit", params={"action": action, "limit": 1000, **filters})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def audit_count(client: httpx.AsyncClient) -> int:
    verify = (await client.get("/v1/audit/verify")).json()
    assert verify["ok"] is True, verify
    count: int = verify["count"]
    return count


async def audit_export(client: httpx.AsyncClient) -> str:
    answer = await client.get("/v1/audit/export")
    assert answer.status_code == 200, answer.text
    return answer.text
