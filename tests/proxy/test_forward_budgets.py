"""Metering and budgets hold through the forward proxy as through the reverse route: a
request inside a CONNECT tunnel is metered from the provider's answer, settled against
the grant's budgets, and refused with ``budget-exceeded`` once they are spent, before it
reaches the upstream."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import CANARY
from tests.proxy.factories import unique
from tests.proxy.forwarding import OPENAI_HOST, Forward, build


@pytest.fixture(scope="module")
def fwd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forward]:
    yield from build(tmp_path_factory.mktemp("forward-budgets"))


def budgeted(fwd: Forward, budgets: list[dict[str, Any]]) -> tuple[str, str]:
    """A new agent granted the OpenAI set under ``budgets``: (grant id, proxy credential)."""
    agent = fwd.operator.post("/v1/agents", json={"name": unique("fwdbudget")})
    assert agent.status_code == 201, agent.text
    grant = fwd.operator.post(
        "/v1/grants",
        json={
            "agent": agent.json()["name"],
            "secret_set": fwd.openai_set,
            "scopes": ["workflow"],
            "budgets": budgets,
        },
    )
    assert grant.status_code == 201, grant.text
    minted = fwd.operator.post(
        "/v1/leases",
        json={"secret_sets": [fwd.openai_set], "scope": "workflow", "ttl": 600},
        headers={"Authorization": f"Bearer {agent.json()['token']}"},
    )
    assert minted.status_code == 201, minted.text
    return grant.json()["id"], minted.json()["token"]


def outcomes(fwd: Forward, grant: str) -> list[dict[str, Any]]:
    """The grant's ``proxy.request`` records, once they are in (they follow the answer)."""

    def of_grant(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if r["details"].get("grant_id") == grant]

    records = fwd.audit_until(lambda found: bool(of_grant(found)), action="proxy.request")
    return of_grant(records)


def chat(fwd: Forward, credential: str) -> httpx.Response:
    proxy = f"http://keyfob:{credential}@127.0.0.1:{fwd.proxy_port}"
    with httpx.Client(
        proxy=proxy, verify=ssl.create_default_context(cafile=str(fwd.bundle)), timeout=30
    ) as client:
        return client.post(
            f"https://{OPENAI_HOST}/v1/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": "hi"}],
            },
            headers={"Authorization": "Bearer sk-keyfob-placeholder"},
        )


def test_a_tunnelled_request_is_metered_and_settled(fwd: Forward) -> None:
    grant, credential = budgeted(
        fwd,
        [
            {"unit": "tokens", "limit": 100_000, "window": "total"},
            {"unit": "usd", "limit": 1, "window": "day"},
        ],
    )

    answer = chat(fwd, credential)

    assert answer.status_code == 200, answer.text
    records = outcomes(fwd, grant)
    assert len(records) == 1
    usage = records[0]["details"]["usage"]
    # The fake upstream's own numbers: 1 prompt token, 3 completion tokens.
    assert (usage["model"], usage["input_tokens"], usage["output_tokens"]) == ("gpt-4o-mini", 1, 3)
    assert usage["reported"] is True
    assert usage["cost_usd"] > 0
    assert usage["price_version"]
    report = fwd.operator.get("/v1/usage", params={"group_by": "grant"}).json()
    standing = {
        (b["unit"], b["window"]): b["used"] for b in report["budgets"] if b["grant_id"] == grant
    }
    assert standing[("tokens", "total")] == 4  # settled on the answer, not the reservation
    assert standing[("usd", "day")] == pytest.approx(usage["cost_usd"])
    assert CANARY not in str(records) + str(report)


def test_a_spent_budget_refuses_inside_the_tunnel_before_the_upstream(fwd: Forward) -> None:
    _, credential = budgeted(fwd, [{"unit": "requests", "limit": 2, "window": "total"}])
    before = fwd.upstream.count("/v1/chat/completions")

    answers = [chat(fwd, credential) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    problem = answers[2].json()
    assert problem["type"].endswith("budget-exceeded")
    assert problem["budget"]["unit"] == "requests"
    assert problem["remaining"] == 0
    assert fwd.upstream.count("/v1/chat/completions") == before + 2


def test_a_tunnelled_stream_is_metered_from_the_usage_keyfob_asked_for(fwd: Forward) -> None:
    grant, credential = budgeted(fwd, [{"unit": "tokens", "limit": 100_000, "window": "total"}])
    proxy = f"http://keyfob:{credential}@127.0.0.1:{fwd.proxy_port}"
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "chunks": 4,
        "delay": 0,
        "messages": [{"role": "user", "content": "hi"}],
    }
    context = ssl.create_default_context(cafile=str(fwd.bundle))

    with httpx.Client(proxy=proxy, verify=context, timeout=30) as client:
        answer = client.post(
            f"https://{OPENAI_HOST}/v1/chat/completions",
            json=body,
            headers={"Authorization": "Bearer sk-keyfob-placeholder"},
        )

    assert answer.status_code == 200, answer.text
    asked = json.loads(fwd.upstream.seen[-1].body)
    assert asked["stream_options"] == {"include_usage": True}
    # The client did not ask: it sees the four deltas and [DONE], no usage anywhere.
    events = [e for e in answer.text.split("\n\n") if e]
    assert len(events) == 5
    assert events[-1] == "data: [DONE]"
    assert "usage" not in answer.text
    [record] = outcomes(fwd, grant)
    usage = record["details"]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["reported"]) == (1, 4, True)


def test_a_tunnelled_stream_is_cut_at_the_budget(fwd: Forward) -> None:
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "chunks": 200,
        "delay": 0,
        "messages": [{"role": "user", "content": "hi"}],
    }
    # Room for the input estimate (body bytes / 3, with the stream_options keyfob adds)
    # and a few output tokens, far fewer than 200 deltas.
    limit = len(json.dumps(body)) // 3 + 60
    grant, credential = budgeted(fwd, [{"unit": "tokens", "limit": limit, "window": "total"}])
    proxy = f"http://keyfob:{credential}@127.0.0.1:{fwd.proxy_port}"
    context = ssl.create_default_context(cafile=str(fwd.bundle))

    with httpx.Client(proxy=proxy, verify=context, timeout=30) as client:
        answer = client.post(
            f"https://{OPENAI_HOST}/v1/chat/completions",
            json=body,
            headers={"Authorization": "Bearer sk-keyfob-placeholder"},
        )

    assert answer.status_code == 200, answer.text
    events = [e for e in answer.text.split("\n\n") if e]
    assert '"code":"budget_exceeded"' in events[-1]
    delivered = sum(1 for e in events if '"content": "tok' in e)
    assert 0 < delivered < 200
    [record] = outcomes(fwd, grant)  # settled with it
    assert record["details"]["usage"]["cut"] == "budget"
    report = fwd.operator.get("/v1/usage", params={"group_by": "grant"}).json()
    [standing] = [b for b in report["budgets"] if b["grant_id"] == grant]
    assert standing["used"] == limit  # the budget's, not more
