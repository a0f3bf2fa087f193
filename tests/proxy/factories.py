"""Plain-function factories for proxy tests against a live keyfob server."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import httpx

from tests.conftest import CANARY
from tests.support.upstream import FakeUpstream

_names = itertools.count(1)
BEARER = {"kind": "bearer", "key": "API_KEY"}


def unique(prefix: str = "t") -> str:
    """A fresh slug, so tests sharing a server never collide."""
    return f"{prefix}{next(_names)}"


def local_profile(
    upstream: FakeUpstream, base: str = "", inject: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """A profile for the fake upstream on loopback (which needs ``allow_private_upstream``)."""
    return {
        "base_url": upstream.url + base,
        "hosts": [upstream.host],
        "inject": inject or BEARER,
        "allow_private_upstream": True,
        **extra,
    }


_clients: dict[str, httpx.Client] = {}


def _agent_http(server_url: str) -> httpx.Client:
    """One keep-alive client per server for minting (a new client per lease costs ~40 ms)."""
    client = _clients.get(server_url)
    if client is None:
        client = _clients[server_url] = httpx.Client(base_url=server_url, timeout=30)
    return client


def close_clients() -> None:
    for client in _clients.values():
        client.close()
    _clients.clear()


@dataclass
class Proxied:
    """A secret set with a profile, an agent granted it, and how to reach it through keyfob."""

    server_url: str
    set_path: str
    agent_name: str
    agent_token: str
    grant_id: str

    def url(self, rest: str = "/") -> str:
        return f"{self.server_url}/proxy/{self.set_path}{rest}"

    def lease(self, scope: str = "workflow", **body: Any) -> str:
        """A fresh lease token (workflow by default, so a test can make several calls)."""
        answer = _agent_http(self.server_url).post(
            "/v1/leases",
            json={"secret_set": self.set_path, "scope": scope, **body},
            headers={"Authorization": f"Bearer {self.agent_token}"},
        )
        assert answer.status_code == 201, answer.text
        token: str = answer.json()["token"]
        return token


def proxied(
    operator: httpx.Client,
    profile: dict[str, Any],
    entries: dict[str, str] | None = None,
    *,
    provider: str = "generic",
    grant: dict[str, Any] | None = None,
) -> Proxied:
    """Create a set (``API_KEY`` = the canary by default), an agent and a grant for it."""
    name = unique("set")
    body = {
        "provider": provider,
        "environment": "test",
        "name": name,
        "entries": entries or {"API_KEY": CANARY},
        "profile": profile,
    }
    created = operator.post("/v1/secret-sets", json=body)
    assert created.status_code == 201, created.text
    set_path = f"{provider}/test/{name}"
    agent = operator.post("/v1/agents", json={"name": unique("agent")})
    assert agent.status_code == 201, agent.text
    constraints = {"scopes": ["request", "workflow"], **(grant or {})}
    granted = operator.post(
        "/v1/grants",
        json={"agent": agent.json()["name"], "secret_set": set_path, **constraints},
    )
    assert granted.status_code == 201, granted.text
    return Proxied(
        str(operator.base_url).rstrip("/"),
        set_path,
        agent.json()["name"],
        agent.json()["token"],
        granted.json()["id"],
    )


def audit(operator: httpx.Client, **filters: Any) -> list[dict[str, Any]]:
    """Audit events (oldest first) matching ``filters``."""
    answer = operator.get("/v1/audit", params={"limit": 1000, **filters})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items
