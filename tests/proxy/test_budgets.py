"""Budgets that hold: reserved with the lease use, settled on the metered usage, streams
cut at the budget, and the usage keyfob asked for removed byte for byte."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from keyfob.app import create_app
from keyfob.profiles import metering, resolve
from keyfob.profiles.prices import PriceTable, cost_nano
from keyfob.secret import Secret
from keyfob.settings import Settings
from keyfob.vault import Context, Vault
from keyfob.vault import budgets as budget_rules
from tests.conftest import CANARY
from tests.dashboard.conftest import PASSWORD, USER, sign_in
from tests.support.backends import BACKENDS, reset_postgres
from tests.support.hashing import FAST_HASHING
from tests.support.llm import FakeLLM

BASE = "http://keyfob.test"
MODEL = "gpt-4o-mini"


@dataclass
class Env:
    vault: Vault
    op: httpx.AsyncClient
    agent: httpx.AsyncClient
    llm: FakeLLM
    names: int = 0
    transport: httpx.AsyncBaseTransport | None = None

    async def granted(
        self, preset: str = "openai", budgets: list[dict[str, Any]] | None = None
    ) -> tuple[str, str, str]:
        """A set on the fake LLM, an agent and a grant with ``budgets``: (set path, agent
        token, grant id)."""
        self.names += 1
        name = f"s{self.names}"
        key = "OPENAI_API_KEY" if preset == "openai" else "ANTHROPIC_API_KEY"
        created = await self.op.post(
            "/v1/secret-sets",
            json={
                "provider": preset,
                "environment": "test",
                "name": name,
                "entries": {key: CANARY},
                "profile": self.llm.profile(preset),
            },
        )
        assert created.status_code == 201, created.text
        agent = await self.op.post("/v1/agents", json={"name": f"agent{self.names}"})
        assert agent.status_code == 201, agent.text
        path = f"{preset}/test/{name}"
        grant = await self.op.post(
            "/v1/grants",
            json={
                "agent": agent.json()["name"],
                "secret_set": path,
                "scopes": ["request", "workflow"],
                "budgets": budgets,
            },
        )
        assert grant.status_code == 201, grant.text
        return path, agent.json()["token"], grant.json()["id"]

    async def lease(self, path: str, agent_token: str, **body: Any) -> str:
        minted = await self.agent.post(
            "/v1/leases",
            json={"secret_set": path, "scope": "workflow", "ttl": 600, **body},
            headers={"Authorization": f"Bearer {agent_token}"},
        )
        assert minted.status_code == 201, minted.text
        return str(minted.json()["token"])

    async def call(
        self, path: str, lease: str, body: dict[str, Any], rest: str = "/v1/chat/completions"
    ) -> httpx.Response:
        # The bytes the tests size their expectations on (json.dumps's own spacing).
        return await self.agent.post(
            f"/proxy/{path}{rest}",
            content=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {lease}", "content-type": "application/json"},
        )

    async def records(self, action: str) -> list[dict[str, Any]]:
        await self.vault.proxy.settled()
        await asyncio.sleep(0.02)  # outcome records ride the next batch (5 ms linger)
        answer = await self.op.get("/v1/audit", params={"action": action, "limit": 1000})
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    async def metric(self, name: str, **labels: str) -> float:
        """One sample of ``/metrics``, parsed by prometheus-client's own parser."""
        answer = await self.op.get("/metrics")
        assert answer.status_code == 200, answer.text
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    async def used(self, grant_id: str) -> dict[tuple[str, str], float]:
        await self.vault.proxy.settled()
        report = await self.vault.usage.report()
        return {
            (b["unit"], b["window"]): b["used"]
            for b in report["budgets"]
            if b["grant_id"] == grant_id
        }


async def _env(tmp_path: Path, backend: str) -> AsyncIterator[Env]:
    url = await asyncio.to_thread(reset_postgres) if backend == "postgresql" else None
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        proxy_connect_timeout=5,
        proxy_read_timeout=10,
        **FAST_HASHING,
    )
    vault, done = await Vault.initialise(settings)
    app = create_app(settings, vault=vault)
    transport = httpx.ASGITransport(app=app)
    operator = {"Authorization": f"Bearer {done.operator_token.reveal()}"}
    try:
        async with (
            FakeLLM() as llm,
            httpx.AsyncClient(
                transport=transport, base_url=BASE, headers=operator, timeout=30
            ) as op,
            httpx.AsyncClient(transport=transport, base_url=BASE, timeout=30) as agent,
        ):
            yield Env(vault, op, agent, llm, transport=transport)
    finally:
        await vault.proxy.settled()
        await app.aclose()
        await vault.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async for one in _env(tmp_path, "sqlite"):
        yield one


@pytest.fixture(params=BACKENDS)
async def any_env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    async for one in _env(tmp_path, request.param):
        yield one


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra}


def worst_nano(llm: FakeLLM, body: dict[str, Any]) -> int:
    """What keyfob reserves for ``body``: its own rules, from the request's size."""
    raw = json.dumps(body).encode()
    profile = resolve(llm.profile("openai"))
    plan = metering.plan(profile, "POST", "/v1/chat/completions", raw, len(raw))
    return budget_rules.need(plan, len(raw), PriceTable()).worst["usd"]


# -- the race: 64 at once against a budget that fits 10 ---------------------------------


async def test_concurrent_requests_cannot_overspend(any_env: Env) -> None:
    env = any_env
    body = chat(max_tokens=50)
    worst = worst_nano(env.llm, body)
    limit_usd = (10 * worst + worst // 2) / 1e9  # room for 10 worst cases, not 11
    path, agent, grant = await env.granted(
        budgets=[{"unit": "usd", "limit": limit_usd, "window": "total"}]
    )
    lease = await env.lease(path, agent)
    env.llm.gate = asyncio.Event()  # hold the admitted ones until every refusal is in

    calls = [asyncio.create_task(env.call(path, lease, body)) for _ in range(64)]
    for _ in range(1000):
        refused = sum(1 for c in calls if c.done())
        if refused + env.llm.waiting >= 64:
            break
        await asyncio.sleep(0.01)
    in_flight = await env.used(grant)
    env.llm.gate.set()
    answers = await asyncio.gather(*calls)

    passed = [a for a in answers if a.status_code == 200]
    refused_answers = [a for a in answers if a.status_code != 200]
    assert env.llm.calls == len(passed) == 10
    assert all(a.status_code == 429 for a in refused_answers)
    problem = refused_answers[0].json()
    assert problem["type"].endswith("budget-exceeded")
    assert problem["budget"]["unit"] == "usd"
    assert problem["budget"]["scope"] == "grant"
    assert problem["remaining"] < worst / 1e9
    # Reserved while in flight: never past the limit.
    assert in_flight[("usd", "total")] <= limit_usd
    # Settled: exactly what the ten answers cost, by the provider's own usage.
    price = PriceTable().lookup(MODEL)
    assert price is not None
    spent = cost_nano(price, env.llm.prompt_tokens, env.llm.words)
    after = await env.used(grant)
    assert after[("usd", "total")] == pytest.approx(10 * spent / 1e9, abs=1e-12)
    settled = await env.records("proxy.request")
    assert len(settled) == 10
    assert {r["details"]["usage"]["output_tokens"] for r in settled} == {env.llm.words}


# -- streams --------------------------------------------------------------------------


async def test_stream_past_the_budget_is_cut_at_it(env: Env) -> None:
    env.llm.words = 200
    body = chat(stream=True)
    path, agent, grant = await env.granted(
        budgets=[{"unit": "tokens", "limit": 120, "window": "day"}]
    )
    lease = await env.lease(path, agent)

    answer = await env.call(path, lease, body)

    assert answer.status_code == 200
    events = [e for e in answer.text.split("\n\n") if e]
    assert "budget_exceeded" in events[-1]
    delivered = sum(1 for e in events if '"content":"tok "' in e)
    assert 0 < delivered < 120
    used = await env.used(grant)
    assert used[("tokens", "day")] == 120  # the budget's, not more
    [record] = await env.records("proxy.request")
    assert record["details"]["usage"]["cut"] == "budget"
    assert await env.metric("keyfob_budget_stream_cuts_total") == 1
    # The next request finds nothing left.
    again = await env.call(path, lease, body)
    assert again.status_code == 429


async def test_include_usage_is_removed_byte_for_byte(env: Env) -> None:
    path, agent, _ = await env.granted()
    lease = await env.lease(path, agent)
    body = chat(stream=True)

    through = await env.call(path, lease, body)
    async with httpx.AsyncClient() as direct_client:
        direct = await direct_client.post(
            f"{env.llm.url}/v1/chat/completions", content=json.dumps(body).encode()
        )

    assert through.status_code == 200
    assert through.content == direct.content
    asked = json.loads(env.llm.bodies[0])
    assert asked["stream_options"] == {"include_usage": True}
    [record] = await env.records("proxy.request")
    usage = record["details"]["usage"]
    assert usage["input_tokens"] == env.llm.prompt_tokens
    assert usage["output_tokens"] == env.llm.words
    assert usage["reported"] is True
    assert usage["cost_usd"] > 0
    assert usage["price_version"]


async def test_a_client_that_asked_for_usage_keeps_it(env: Env) -> None:
    path, agent, _ = await env.granted()
    lease = await env.lease(path, agent)
    body = chat(stream=True, stream_options={"include_usage": True})

    through = await env.call(path, lease, body)
    async with httpx.AsyncClient() as direct_client:
        direct = await direct_client.post(
            f"{env.llm.url}/v1/chat/completions", content=json.dumps(body).encode()
        )

    assert through.content == direct.content
    assert b'"usage":{' in through.content


async def test_cut_off_stream_settles_on_what_was_delivered(env: Env) -> None:
    env.llm.words = 50
    env.llm.break_after = 3
    path, agent, grant = await env.granted(
        budgets=[{"unit": "tokens", "limit": 100_000, "window": "total"}]
    )
    lease = await env.lease(path, agent)
    body = chat(stream=True)
    raw = json.dumps(body).encode()

    # In process the cut connection surfaces as the proxy's StreamAborted.
    with pytest.raises((httpx.HTTPError, RuntimeError)):
        await env.call(path, lease, body)

    used = await env.used(grant)
    estimate = metering.plan(
        resolve(env.llm.profile("openai")), "POST", "/v1/chat/completions", raw, len(raw)
    )
    assert estimate is not None
    assert used[("tokens", "total")] == estimate.input_estimate + 3


# -- what the provider says (or does not) ------------------------------------------------


@pytest.mark.parametrize("how", ["missing", "malformed"])
async def test_missing_or_malformed_usage_is_flagged_and_settles_at_the_worst_case(
    env: Env, how: str
) -> None:
    env.llm.usage = how
    path, agent, grant = await env.granted(
        budgets=[{"unit": "tokens", "limit": 100_000, "window": "total"}]
    )
    lease = await env.lease(path, agent)
    body = chat(max_tokens=40)

    answer = await env.call(path, lease, body)

    assert answer.status_code == 200
    [record] = await env.records("proxy.request")
    assert record["details"]["usage"]["flagged"] == "usage_missing"
    assert await env.metric("keyfob_usage_flagged_total", flag="usage_missing") == 1
    assert record["details"]["bytes_down"] == len(answer.content)
    raw = json.dumps(body).encode()
    plan = metering.plan(
        resolve(env.llm.profile("openai")), "POST", "/v1/chat/completions", raw, len(raw)
    )
    assert plan is not None
    assert (await env.used(grant))[("tokens", "total")] == plan.input_estimate + 40


async def test_a_lying_max_tokens_is_capped_by_the_meter(env: Env) -> None:
    path, agent, _ = await env.granted(
        budgets=[{"unit": "tokens", "limit": 1_000_000, "window": "total"}]
    )
    lease = await env.lease(path, agent)
    body = chat(max_tokens=10**12)

    answer = await env.call(path, lease, body)

    assert answer.status_code == 200
    [use] = [r for r in await env.records("lease.use")]
    raw = json.dumps(body).encode()
    estimate = -(-len(raw) // metering.BYTES_PER_TOKEN)
    assert use["details"]["reserved"]["tokens"] == estimate + metering.OPENAI.max_output
    [record] = await env.records("proxy.request")
    assert record["details"]["usage"]["max_tokens_capped"] == metering.OPENAI.max_output


async def test_anthropic_json_and_stream_are_metered(env: Env) -> None:
    env.llm.words = 7
    path, agent, grant = await env.granted(
        "anthropic", budgets=[{"unit": "tokens", "limit": 100_000, "window": "month"}]
    )
    lease = await env.lease(path, agent)
    body = {"model": "claude-sonnet-4-20250514", "max_tokens": 64, "messages": []}

    plain = await env.call(path, lease, body, "/v1/messages")
    streamed = await env.call(path, lease, {**body, "stream": True}, "/v1/messages")

    assert plain.status_code == streamed.status_code == 200
    records = await env.records("proxy.request")
    assert [r["details"]["usage"]["output_tokens"] for r in records] == [7, 7]
    assert [r["details"]["usage"]["reported"] for r in records] == [True, True]
    assert all(r["details"]["usage"]["cost_usd"] > 0 for r in records)
    used = await env.used(grant)
    assert used[("tokens", "month")] == 2 * (env.llm.prompt_tokens + 7)


async def test_anthropic_stream_is_cut_with_an_error_event(env: Env) -> None:
    env.llm.words = 300
    path, agent, grant = await env.granted(
        "anthropic", budgets=[{"unit": "tokens", "limit": 150, "window": "total"}]
    )
    lease = await env.lease(path, agent)
    body = {"model": "claude-sonnet-4", "max_tokens": 1000, "messages": [], "stream": True}

    answer = await env.call(path, lease, body, "/v1/messages")

    assert answer.text.endswith(
        'event: error\ndata: {"type":"error","error":{"type":"budget_exceeded",'
        '"message":"the budget is spent: keyfob ended the stream at the budget"}}\n\n'
    )
    assert (await env.used(grant))[("tokens", "total")] == 150


# -- refusals -------------------------------------------------------------------------


async def test_refusal_names_the_budget_and_what_remains(env: Env) -> None:
    path, agent, grant = await env.granted(
        budgets=[{"unit": "requests", "limit": 2, "window": "day"}]
    )
    lease = await env.lease(path, agent)

    answers = [await env.call(path, lease, chat()) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    problem = answers[2].json()
    assert problem["type"] == "urn:keyfob:problem:budget-exceeded"
    assert problem["budget"] == {
        "scope": "grant",
        "id": grant,
        "unit": "requests",
        "window": "day",
        "period": problem["budget"]["period"],
        "limit": 2,
    }
    assert problem["remaining"] == 0
    assert "retry-after" in answers[2].headers
    assert env.llm.calls == 2
    [deny] = await env.records("lease.deny")
    assert deny["details"]["reason"] == "budget_exceeded"
    assert CANARY not in answers[2].text


async def test_a_lease_budget_is_tighter_than_its_grant(env: Env) -> None:
    path, agent, _ = await env.granted(
        budgets=[{"unit": "requests", "limit": 10, "window": "total"}]
    )
    looser = await env.agent.post(
        "/v1/leases",
        json={
            "secret_set": path,
            "scope": "workflow",
            "budgets": [{"unit": "requests", "limit": 11, "window": "total"}],
        },
        headers={"Authorization": f"Bearer {agent}"},
    )
    assert looser.status_code == 422, looser.text
    lease = await env.lease(
        path, agent, budgets=[{"unit": "requests", "limit": 1, "window": "total"}]
    )

    first, second = [await env.call(path, lease, chat()) for _ in range(2)]

    assert (first.status_code, second.status_code) == (200, 429)
    assert second.json()["budget"]["scope"] == "lease"


async def test_generic_api_is_metered_by_requests_and_bytes(env: Env) -> None:
    """A set whose API reports no usage: requests and bytes are counted and enforced."""
    created = await env.op.post(
        "/v1/secret-sets",
        json={
            "provider": "generic",
            "environment": "test",
            "name": "plain",
            "entries": {"API_KEY": CANARY},
            "profile": {
                "base_url": env.llm.url,
                "hosts": ["127.0.0.1"],
                "inject": {"kind": "bearer", "key": "API_KEY"},
                "allow_private_upstream": True,
            },
        },
    )
    assert created.status_code == 201, created.text
    agent = (await env.op.post("/v1/agents", json={"name": "plain"})).json()
    grant = await env.op.post(
        "/v1/grants",
        json={
            "agent": "plain",
            "secret_set": "generic/test/plain",
            "scopes": ["workflow"],
            "budgets": [{"unit": "bytes", "limit": 10_000, "window": "total"}],
        },
    )
    assert grant.status_code == 201, grant.text
    lease = await env.lease("generic/test/plain", agent["token"])

    answer = await env.call("generic/test/plain", lease, chat(), "/v1/chat/completions")

    assert answer.status_code == 200
    [record] = await env.records("proxy.request")
    assert "usage" not in record["details"]
    size = record["details"]["bytes_up"] + record["details"]["bytes_down"]
    assert (await env.used(grant.json()["id"]))[("bytes", "total")] == size


# -- what operators see ----------------------------------------------------------------


async def test_usage_api_dashboard_and_warning_hold_no_secret(env: Env) -> None:
    path, agent, grant = await env.granted(
        budgets=[{"unit": "requests", "limit": 5, "window": "month"}]
    )
    lease = await env.lease(path, agent)
    for _ in range(4):  # 80% of the budget
        assert (await env.call(path, lease, chat())).status_code == 200
    await env.vault.proxy.settled()
    await asyncio.sleep(0.02)

    by_model = await env.op.get("/v1/usage", params={"group_by": "model"})
    by_grant = await env.op.get("/v1/usage", params={"group_by": "grant", "days": 1})
    bad = await env.op.get("/v1/usage", params={"group_by": "colour"})
    prices = await env.op.get("/v1/prices")
    export = await env.op.get("/v1/audit/export")
    await env.vault.users.create(Context("operator:test"), USER, Secret(PASSWORD))
    async with httpx.AsyncClient(transport=env.transport, base_url=BASE) as browser:
        assert (await sign_in(browser)).status_code == 303
        page = await browser.get("/ui/usage")

    assert by_model.status_code == 200, by_model.text
    [row] = by_model.json()["groups"]
    assert row["key"] == MODEL
    assert row["requests"] == 4
    assert row["output_tokens"] == 4 * env.llm.words
    assert row["cost_usd"] > 0
    assert [g["key"] for g in by_grant.json()["groups"]] == [grant]
    [standing] = by_model.json()["budgets"]
    assert standing["used"] == 4
    assert standing["remaining"] == 1
    assert standing["state"] == "warning"
    assert bad.status_code == 422
    assert page.status_code == 200
    assert "<svg" in page.text
    assert f'id="budget-{grant}-requests-month" class="warning"' in page.text
    for surface in (by_model, by_grant, prices, export, page):
        assert CANARY not in surface.text
        assert "tok tok" not in surface.text  # no content of an answer either


async def test_the_dry_run_answers_as_the_budget_would(env: Env) -> None:
    path, agent, _ = await env.granted(budgets=[{"unit": "requests", "limit": 1, "window": "day"}])
    lease = await env.lease(path, agent)

    async def check() -> dict[str, Any]:
        answer = await env.agent.post(
            "/v1/leases/check",
            json={"method": "POST", "path": "/v1/chat/completions"},
            headers={"Authorization": f"Bearer {lease}"},
        )
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    before = await check()
    assert (await env.call(path, lease, chat())).status_code == 200
    await env.vault.proxy.settled()
    after = await check()

    assert (before["allowed"], before["reason"]) == (True, None)
    assert (after["allowed"], after["reason"]) == (False, "budget_exceeded")
