"""Disabling an agent under load: once the disable call returns, its token mints nothing
and its leases reach no upstream (issue 10, item 1), on SQLite and PostgreSQL.

Eight clients mint and proxy in a loop against a real server while an operator disables
the agent. This test fails on the commit before the fix (30e7c86^; 5 of 6 runs here
failed, on both backends): the agent was checked outside the mint's write transaction
and not at all by the proxy, so a mint that had authenticated just before the disable
committed a lease just after it, and that lease was used after the disable had returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.proxy.factories import local_profile, proxied
from tests.support.server import LiveServer
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.slow

CLIENTS = 8
BEFORE = 1.0  # seconds of load before the disable
AFTER = 1.0  # and after it returns


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    try:
        yield fake
    finally:
        fake.stop()


async def _client(
    http: httpx.AsyncClient,
    p: Any,
    number: int,
    disabled: asyncio.Event,
    stop: asyncio.Event,
    seen: dict[str, list[int]],
) -> None:
    """Mint a lease, proxy with the newest lease held, again and again. Every request is
    labelled with whether it started after the disable call returned."""
    agent = {"Authorization": f"Bearer {p.agent_token}"}
    lease: str | None = None
    turn = 0
    while not stop.is_set():
        turn += 1
        after = disabled.is_set()
        minted = await http.post(
            "/v1/leases",
            json={"secret_set": p.set_path, "scope": "workflow", "max_uses": 50},
            headers=agent,
        )
        seen["mint_after" if after else "mint_before"].append(minted.status_code)
        if minted.status_code == 201:
            lease = minted.json()["token"]
        if lease is None:
            continue
        after = disabled.is_set()
        label = "after" if after else "before"
        used = await http.get(
            f"/proxy/{p.set_path}/echo/{label}-{number}-{turn}",
            headers={"Authorization": f"Bearer {lease}"},
        )
        seen["use_after" if after else "use_before"].append(used.status_code)


async def test_nothing_mints_or_proxies_after_disable_returns(
    live_server: LiveServer, upstream: FakeUpstream
) -> None:
    with httpx.Client(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {live_server.operator_token}"},
        timeout=30,
    ) as operator:
        p = proxied(operator, local_profile(upstream))
    seen: dict[str, list[int]] = {
        "mint_before": [],
        "mint_after": [],
        "use_before": [],
        "use_after": [],
    }
    disabled, stop = asyncio.Event(), asyncio.Event()
    limits = httpx.Limits(max_connections=CLIENTS + 2)
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30, limits=limits) as http:
        tasks = [
            asyncio.create_task(_client(http, p, i, disabled, stop, seen)) for i in range(CLIENTS)
        ]
        await asyncio.sleep(BEFORE)
        answer = await http.post(
            f"/v1/agents/{p.agent_name}/disable",
            headers={"Authorization": f"Bearer {live_server.operator_token}"},
        )
        disabled.set()
        await asyncio.sleep(AFTER)
        stop.set()
        await asyncio.gather(*tasks)
        assert answer.status_code == 200, answer.text
        events = await _audit(http, live_server.operator_token)

    # The load was real on both sides of the disable.
    assert seen["mint_before"].count(201) > 0
    assert seen["use_before"].count(200) > 0
    assert len(seen["mint_after"]) > 0
    assert len(seen["use_after"]) > 0
    # Started after the disable returned: no mint succeeds, no request reaches upstream.
    assert 201 not in seen["mint_after"], seen["mint_after"]
    assert upstream.count("/echo/after-") == 0
    assert 200 not in seen["use_after"], seen["use_after"]
    # In the audit chain's order: nothing minted or used after the disable committed.
    (disable,) = [e for e in events if e["action"] == "agent.disable"]
    later = [
        e
        for e in events
        if e["seq"] > disable["seq"]
        and e["action"] in ("lease.mint", "lease.use")
        and e["outcome"] == "ok"
    ]
    assert later == []


async def _audit(http: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        answer = await http.get(
            "/v1/audit",
            params={"after": after, "limit": 1000},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200, answer.text
        items = answer.json()["items"]
        events.extend(items)
        if len(items) < 1000:
            return events
        after = items[-1]["seq"]
