"""Concurrent uses of one lease through the real proxy: use caps and rate limits hold
exactly, across two server processes sharing one database, on SQLite and PostgreSQL.

Two ``keyfob serve`` processes (nodes) on the same database; 64 clients fire at once,
spread over both nodes, at one single-use lease, a lease good for three uses, the
leases of a grant allowing five uses a minute, the leases of a grant allowing four uses
in all, and 64 fresh single-use leases each sent twice (and exports of a three-use
lease). The fake upstream counts what reached it: exactly the allowed number, every other
request refused with its reason and audited. This is the grouped commit's load: many uses
in one batch, two processes contending for the write lock.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyfob.app.bootstrap import init_vault
from keyfob.settings import Settings
from tests.proxy.factories import Proxied, local_profile, proxied, unique
from tests.support import loopback
from tests.support.backends import BACKENDS, reset_postgres
from tests.support.server import LiveServer, start_server
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.slow

REQUESTS = 64


@dataclass
class Nodes:
    servers: list[LiveServer]
    upstream: FakeUpstream
    operator: httpx.Client


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def nodes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[Nodes]:
    workdir: Path = tmp_path_factory.mktemp(f"race-{request.param}")
    url = reset_postgres() if request.param == "postgresql" else None
    settings = Settings(data_dir=workdir / "data", database_url=url)
    init = init_vault(settings)
    assert init.operator_token is not None
    token = init.operator_token.reveal()
    servers: list[LiveServer] = []
    try:
        for i in range(2):
            servers.append(start_server(settings, token, workdir / f"server-{i}.log"))
        with httpx.Client(
            base_url=servers[0].url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as operator:
            yield Nodes(servers, upstream, operator)
    finally:
        for server in servers:
            server.stop()


def lease(p: Proxied, **body: Any) -> dict[str, Any]:
    answer = loopback.post(
        f"{p.server_url}/v1/leases",
        json={"secret_set": p.set_path, **body},
        headers={"Authorization": f"Bearer {p.agent_token}"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    view: dict[str, Any] = answer.json()
    return view


def away_from_minute_end() -> None:
    """Rate windows are wall-clock minutes: don't start a rate race just before one ends."""
    left = 60 - time.time() % 60
    if left < 10:
        time.sleep(left + 0.2)


async def race(nodes: Nodes, calls: list[tuple[str, str, str]]) -> Counter[str]:
    """Fire every (method, path, lease) at once, alternating between the nodes; returns
    "ok" or the refusal reason per request."""
    limits = httpx.Limits(max_connections=len(calls))
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def one(i: int, method: str, path: str, token: str) -> str:
            url = nodes.servers[i % len(nodes.servers)].url + path
            answer = await http.request(method, url, headers={"Authorization": f"Bearer {token}"})
            if answer.status_code == 200:
                return "ok"
            assert answer.status_code in (403, 429), answer.text
            reason: str = answer.json()["reason"]
            return reason

        outcomes = await asyncio.gather(*(one(i, *call) for i, call in enumerate(calls)))
    return Counter(outcomes)


def audited(nodes: Nodes, p: Proxied) -> Counter[tuple[str, str | None]]:
    answer = nodes.operator.get(
        "/v1/audit", params={"target": f"secret_set:{p.set_path}", "limit": 1000}
    )
    assert answer.status_code == 200, answer.text
    uses = ("lease.use", "lease.deny", "secret_set.export")
    return Counter(
        (e["action"], e["details"].get("reason"))
        for e in answer.json()["items"]
        if e["action"] in uses
    )


def counters(nodes: Nodes, p: Proxied) -> tuple[int, int]:
    leases = nodes.operator.get("/v1/leases", params={"secret_set": p.set_path, "all": "true"})
    grant = nodes.operator.get(f"/v1/grants/{p.grant_id}")
    return sum(v["uses"] for v in leases.json()["items"]), grant.json()["uses"]


async def test_a_single_use_lease_reaches_upstream_once(nodes: Nodes) -> None:
    p = proxied(nodes.operator, local_profile(nodes.upstream))
    token = lease(p, scope="request")["token"]
    marker = unique("single")

    seen = await race(nodes, [("GET", f"/proxy/{p.set_path}/echo/{marker}/x", token)] * REQUESTS)

    assert seen == {"ok": 1, "exhausted": REQUESTS - 1}
    assert nodes.upstream.count(f"/echo/{marker}/") == 1
    assert audited(nodes, p) == {("lease.use", None): 1, ("lease.deny", "exhausted"): 63}
    assert counters(nodes, p) == (1, 1)


async def test_a_three_use_lease_reaches_upstream_three_times(nodes: Nodes) -> None:
    p = proxied(nodes.operator, local_profile(nodes.upstream))
    token = lease(p, scope="workflow", max_uses=3)["token"]
    marker = unique("three")

    seen = await race(nodes, [("POST", f"/proxy/{p.set_path}/echo/{marker}/x", token)] * REQUESTS)

    assert seen == {"ok": 3, "exhausted": REQUESTS - 3}
    assert nodes.upstream.count(f"/echo/{marker}/") == 3
    assert audited(nodes, p) == {("lease.use", None): 3, ("lease.deny", "exhausted"): 61}
    assert counters(nodes, p) == (3, 3)


async def test_a_rate_limit_holds_across_leases_and_nodes(nodes: Nodes) -> None:
    p = proxied(nodes.operator, local_profile(nodes.upstream), grant={"rate_limit": 5})
    tokens = [lease(p, scope="workflow")["token"] for _ in range(5)]
    marker = unique("rate")
    away_from_minute_end()

    calls = [
        ("GET", f"/proxy/{p.set_path}/echo/{marker}/x", tokens[i % 5]) for i in range(REQUESTS)
    ]
    seen = await race(nodes, calls)

    assert seen == {"ok": 5, "rate_limited": REQUESTS - 5}
    assert nodes.upstream.count(f"/echo/{marker}/") == 5
    assert audited(nodes, p) == {("lease.use", None): 5, ("lease.deny", "rate_limited"): 59}
    # Refused requests took no use of their lease.
    assert counters(nodes, p) == (5, 5)


async def test_a_grant_use_cap_holds_across_leases_and_nodes(nodes: Nodes) -> None:
    p = proxied(nodes.operator, local_profile(nodes.upstream), grant={"max_uses": 4})
    tokens = [lease(p, scope="workflow")["token"] for _ in range(4)]
    marker = unique("cap")

    calls = [
        ("GET", f"/proxy/{p.set_path}/echo/{marker}/x", tokens[i % 4]) for i in range(REQUESTS)
    ]
    seen = await race(nodes, calls)

    assert seen == {"ok": 4, "exhausted": REQUESTS - 4}
    assert nodes.upstream.count(f"/echo/{marker}/") == 4
    assert audited(nodes, p) == {("lease.use", None): 4, ("lease.deny", "exhausted"): 60}
    assert counters(nodes, p) == (4, 4)


async def test_fresh_single_use_leases_each_reach_upstream_once(nodes: Nodes) -> None:
    """The SDK's pattern, a new lease per call, with every lease sent twice at once."""
    p = proxied(nodes.operator, local_profile(nodes.upstream))
    answer = loopback.post(
        f"{p.server_url}/v1/leases",
        json={"secret_set": p.set_path, "scope": "request", "count": REQUESTS},
        headers={"Authorization": f"Bearer {p.agent_token}"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    tokens = [minted["token"] for minted in answer.json()["leases"]]
    marker = unique("fresh")

    # Each lease twice, the two copies on different nodes (i and i + 1 alternate).
    calls = [
        ("POST", f"/proxy/{p.set_path}/echo/{marker}/{n}", token)
        for n, token in enumerate(tokens)
        for _ in range(2)
    ]
    seen = await race(nodes, calls)

    assert seen == {"ok": REQUESTS, "exhausted": REQUESTS}
    reached = [s.path for s in nodes.upstream.seen if f"/echo/{marker}/" in s.path]
    assert sorted(reached) == sorted(f"/echo/{marker}/{n}" for n in range(REQUESTS))
    assert audited(nodes, p) == {
        ("lease.use", None): REQUESTS,
        ("lease.deny", "exhausted"): REQUESTS,
    }
    assert counters(nodes, p) == (REQUESTS, REQUESTS)


async def test_exports_of_a_three_use_lease(nodes: Nodes) -> None:
    p = proxied(
        nodes.operator,
        local_profile(nodes.upstream),
        grant={"actions": ["export"], "scopes": ["workflow"]},
    )
    token = lease(p, scope="workflow", max_uses=3)["token"]
    path = f"/v1/secret-sets/{p.set_path}/export"

    seen = await race(nodes, [("POST", path, token)] * REQUESTS)

    assert seen == {"ok": 3, "exhausted": REQUESTS - 3}
    assert audited(nodes, p) == {
        ("secret_set.export", None): 3,
        ("lease.deny", "exhausted"): REQUESTS - 3,
    }
    assert counters(nodes, p) == (3, 3)


def test_the_audit_chain_is_intact_after_the_races(nodes: Nodes) -> None:
    verify = nodes.operator.get("/v1/audit/verify").json()
    assert verify["ok"] is True, verify
