"""``LeaseAuth``: a fresh single-use lease on every request, minted in batches, none reused,
none sent close to its expiry; and the workflow mode's one lease, replaced in time."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from keyfob import sdk
from keyfob.sdk.auth import LEASE_HEADER
from tests.sdk.conftest import ADDR, InProcess, generic_set
from tests.support.server import LiveServer
from tests.support.upstream import FakeUpstream

CALLS = 200
BATCH = 20


def _mints(requests: list[httpx.Request]) -> list[dict[str, object]]:
    bodies = [json.loads(r.content) for r in requests if r.url.path == "/v1/leases"]
    return [b for b in bodies if r_is_post(b)]


def r_is_post(body: object) -> bool:
    return isinstance(body, dict) and "secret_set" in body


def test_every_call_has_its_own_lease_minted_in_batches(
    inproc: InProcess, upstream: FakeUpstream
) -> None:
    world = generic_set(inproc.operator, upstream)
    agent = inproc.agent(world.agent_token)
    with sdk.http_client(world.set_path, agent=agent) as http:
        answers = [http.get("/echo") for _ in range(CALLS)]
    assert [a.status_code for a in answers] == [200] * CALLS
    proxied = [r for r in inproc.transport.requests if r.url.path.startswith("/proxy/")]
    leases = [r.headers[LEASE_HEADER] for r in proxied]
    assert len(leases) == CALLS
    assert len(set(leases)) == CALLS  # none reused
    mints = inproc.calls("POST", "/v1/leases")
    assert all(json.loads(m.content)["count"] == BATCH for m in mints)
    # Minted in batches: 200 / 20, plus at most one background refill still ahead.
    assert CALLS // BATCH <= len(mints) <= CALLS // BATCH + 1
    # The vault agrees: each lease it issued was used at most once, all within their TTL.
    views = inproc.operator.get("/v1/leases", params={"all": "true"}).json()["items"]
    used = [v for v in views if v["uses"]]
    assert len(used) == CALLS
    assert all(v["uses"] == 1 for v in used)


def test_a_lease_near_its_expiry_is_dropped_not_sent(
    inproc: InProcess, upstream: FakeUpstream
) -> None:
    world = generic_set(inproc.operator, upstream, max_lease_ttl=20)
    agent = inproc.agent(world.agent_token)
    skew = [0.0]
    auth = sdk.LeaseAuth(
        world.set_path, agent=agent, batch=5, low_water=0, clock=lambda: time.monotonic() + skew[0]
    )
    first = auth.take()
    assert first.ttl == 20
    # 16 s on: 4 s left, under the margin (min(5 s, a quarter of 20 s)): all four dropped.
    skew[0] = 16.0
    second = auth.take()
    assert second.id != first.id
    assert second.ttl == 20
    assert len(inproc.calls("POST", "/v1/leases")) == 2


def test_workflow_mode_reuses_one_lease_until_its_uses_run_out(
    inproc: InProcess, upstream: FakeUpstream
) -> None:
    world = generic_set(inproc.operator, upstream, scopes=["workflow"])
    agent = inproc.agent(world.agent_token)
    auth = sdk.LeaseAuth(world.set_path, agent=agent, scope="workflow", max_uses=3)
    with httpx.Client(
        base_url=agent.proxy_url(world.set_path), auth=auth, transport=inproc.transport
    ) as http:
        assert [http.get("/echo").status_code for _ in range(7)] == [200] * 7
    proxied = [
        r.headers[LEASE_HEADER] for r in inproc.transport.requests if "/proxy/" in str(r.url)
    ]
    assert len(set(proxied)) == 3  # 3 + 3 + 1 uses
    assert len(inproc.calls("POST", "/v1/leases")) == 3


def test_against_a_running_server_sync_and_async(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    world = generic_set(operator, upstream)
    sent: list[str] = []
    mints: list[int] = []

    def record(request: httpx.Request) -> None:
        if LEASE_HEADER.lower() in request.headers:
            sent.append(request.headers[LEASE_HEADER])
        if request.url.path == "/v1/leases":
            mints.append(json.loads(request.content)["count"])

    with sdk.AgentClient(server.url, world.agent_token) as agent:
        agent._wire.http.event_hooks["request"] = [record]
        hooks = {"request": [record]}
        with sdk.http_client(world.set_path, agent=agent, event_hooks=hooks) as http:
            assert {http.get("/echo").status_code for _ in range(CALLS)} == {200}

    async def concurrently() -> list[int]:
        aagent = sdk.AsyncAgentClient(server.url, world.agent_token)

        async def arecord(request: httpx.Request) -> None:
            record(request)

        aagent._wire.http.event_hooks["request"] = [arecord]
        async with sdk.async_http_client(
            world.set_path, agent=aagent, event_hooks={"request": [arecord]}
        ) as http:
            answers = await asyncio.gather(*(http.get("/echo") for _ in range(CALLS)))
        await aagent.aclose()
        return [a.status_code for a in answers]

    assert set(asyncio.run(concurrently())) == {200}
    assert len(sent) == 2 * CALLS
    assert len(set(sent)) == 2 * CALLS
    assert set(mints) == {BATCH}
    assert len(mints) <= 2 * CALLS // BATCH + 12  # concurrent empties each mint a batch


@pytest.mark.parametrize("batch", [0, 101])
def test_a_batch_keyfob_cannot_mint_is_refused(batch: int) -> None:
    with pytest.raises(sdk.InvalidRequest, match="batch"):
        sdk.LeaseAuth("openai/prod/default", batch=batch)


def test_leaving_an_http_client_closes_the_agent_client_it_made(
    inproc: InProcess, upstream: FakeUpstream
) -> None:
    world = generic_set(inproc.operator, upstream)
    with sdk.http_client(
        world.set_path, addr=ADDR, token=world.agent_token, transport=inproc.transport
    ) as http:
        assert http.get("/echo").status_code == 200
    assert isinstance(http, sdk.clients.ProxyClient)
    assert http.owned is not None
    assert http.owned._wire.http.is_closed


def test_leaving_an_async_http_client_closes_the_agent_client_it_made(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    world = generic_set(operator, upstream)

    async def call() -> sdk.clients.AsyncProxyClient:
        async with sdk.async_http_client(
            world.set_path, addr=server.url, token=world.agent_token
        ) as http:
            assert (await http.get("/echo")).status_code == 200
        assert isinstance(http, sdk.clients.AsyncProxyClient)
        return http

    http = asyncio.run(call())
    assert http.owned is not None
    assert http.owned._wire.http.is_closed
