"""Small helpers for tests that talk to the API: problem checks and a snapshot of state."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM_JSON = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """The response is a problem+json of ``slug`` with ``status``; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:keyfob:problem:{slug}", body
    assert body["status"] == status
    return body


async def state_of(client: httpx.AsyncClient) -> dict[str, Any]:
    """Everything a rejected request must leave alone: sets, their versions, the audit count."""
    listing = await client.get("/v1/secret-sets", params={"include_deleted": "true", "limit": 500})
    assert listing.status_code == 200, listing.text
    sets = listing.json()["items"]
    versions = {}
    for item in sets:
        answer = await client.get(f"/v1/secret-sets/{item['path']}/versions")
        assert answer.status_code == 200, answer.text
        versions[item["path"]] = answer.json()["items"]
    keys = (await client.get("/v1/keys")).json()
    tokens = (await client.get("/v1/tokens")).json()["items"]
    verify = (await client.get("/v1/audit/verify")).json()
    assert verify["ok"] is True, verify
    return {
        "sets": sets,
        "versions": versions,
        "keys": keys,
        "tokens": tokens,
        "audit_count": verify["count"],
    }
