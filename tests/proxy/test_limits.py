"""Lease and grant limits on the proxy: each refusal is audited and never reaches upstream."""

from __future__ import annotations

import asyncio
import http.client
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import CANARY
from tests.proxy.factories import Proxied, audit, local_profile, proxied, unique
from tests.support import loopback
from tests.support.http import assert_problem
from tests.support.upstream import FakeUpstream


def call(p: Proxied, lease: str | None, rest: str, method: str = "GET") -> httpx.Response:
    headers = {"Authorization": f"Bearer {lease}"} if lease is not None else {}
    return loopback.request(method, p.url(rest), headers=headers, timeout=30)


def denied(response: httpx.Response, status: int, slug: str, reason: str) -> dict[str, Any]:
    body = assert_problem(response, status, slug)
    assert body["reason"] == reason, body
    assert CANARY not in response.text
    return body


def records(
    operator: httpx.Client, action: str, request_id: str, wait: float = 0
) -> list[dict[str, Any]]:
    """Audit records of ``action`` written for the proxied request ``request_id``, waiting
    up to ``wait`` seconds for one to appear."""
    deadline = time.monotonic() + wait
    while True:
        found = [e for e in audit(operator, action=action) if e["request_id"] == request_id]
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def lease_view(operator: httpx.Client, p: Proxied, lease_id: str) -> dict[str, Any]:
    items = operator.get("/v1/leases", params={"secret_set": p.set_path, "all": "true"})
    assert items.status_code == 200, items.text
    return next(i for i in items.json()["items"] if i["id"] == lease_id)


def mint(p: Proxied, **body: Any) -> dict[str, Any]:
    answer = loopback.post(
        f"{p.server_url}/v1/leases",
        json={"secret_set": p.set_path, "scope": "workflow", **body},
        headers={"Authorization": f"Bearer {p.agent_token}"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    view: dict[str, Any] = answer.json()
    return view


def away_from_minute_end() -> None:
    """Rate windows are wall-clock minutes: don't start a rate test just before one ends."""
    left = 60 - time.time() % 60
    if left < 5:
        time.sleep(left + 0.2)


def assert_denied_and_audited(
    operator: httpx.Client, response: httpx.Response, reason: str, lease_id: str
) -> None:
    body = denied(response, 403, "forbidden", reason)
    deny = records(operator, "lease.deny", body["request_id"])
    assert len(deny) == 1, deny
    assert deny[0]["details"]["reason"] == reason
    assert deny[0]["details"]["lease_id"] == lease_id
    assert records(operator, "lease.use", body["request_id"]) == []


# -- uses ----------------------------------------------------------------------------------


def test_request_lease_works_once(operator: httpx.Client, upstream: FakeUpstream) -> None:
    p = proxied(operator, local_profile(upstream))
    lease = mint(p, scope="request")
    marker = unique("once")

    first = call(p, lease["token"], f"/echo/{marker}")
    second = call(p, lease["token"], f"/echo/{marker}")

    assert first.status_code == 200, first.text
    assert_denied_and_audited(operator, second, "exhausted", lease["id"])
    assert upstream.count(marker) == 1
    assert lease_view(operator, p, lease["id"])["uses"] == 1


def test_batch_minted_leases_each_work_once(
    operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p = proxied(operator, local_profile(upstream))
    answer = loopback.post(
        f"{p.server_url}/v1/leases",
        json={"secret_set": p.set_path, "scope": "request", "count": 3},
        headers={"Authorization": f"Bearer {p.agent_token}"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    assert CANARY not in answer.text
    leases = answer.json()["leases"]
    marker = unique("batch")

    firsts = [call(p, lease["token"], f"/echo/{marker}") for lease in leases]
    seconds = [call(p, lease["token"], f"/echo/{marker}") for lease in leases]

    assert [a.status_code for a in firsts] == [200, 200, 200], firsts[-1].text
    for lease, again in zip(leases, seconds, strict=True):
        assert_denied_and_audited(operator, again, "exhausted", lease["id"])
    assert upstream.count(marker) == 3


def test_workflow_lease_max_uses(operator: httpx.Client, upstream: FakeUpstream) -> None:
    p = proxied(operator, local_profile(upstream))
    lease = mint(p, max_uses=3)
    marker = unique("three")

    answers = [call(p, lease["token"], f"/echo/{marker}") for _ in range(4)]

    assert [a.status_code for a in answers[:3]] == [200, 200, 200], answers[-1].text
    assert_denied_and_audited(operator, answers[3], "exhausted", lease["id"])
    assert upstream.count(marker) == 3
    assert lease_view(operator, p, lease["id"])["status"] == "exhausted"


def test_grant_max_uses_across_leases(operator: httpx.Client, upstream: FakeUpstream) -> None:
    p = proxied(operator, local_profile(upstream), grant={"max_uses": 2})
    first, second = mint(p), mint(p)
    marker = unique("grantmax")

    ok = [call(p, first["token"], f"/echo/{marker}"), call(p, second["token"], f"/echo/{marker}")]
    refused = call(p, first["token"], f"/echo/{marker}")

    assert [a.status_code for a in ok] == [200, 200]
    assert_denied_and_audited(operator, refused, "exhausted", first["id"])
    assert upstream.count(marker) == 2


def test_grant_rate_limit_answers_429_with_retry_after(
    operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p = proxied(operator, local_profile(upstream), grant={"rate_limit": 2})
    lease = mint(p)
    marker = unique("rate")
    away_from_minute_end()

    answers = [call(p, lease["token"], f"/echo/{marker}") for _ in range(3)]

    assert [a.status_code for a in answers[:2]] == [200, 200]
    body = denied(answers[2], 429, "rate-limited", "rate_limited")
    assert 1 <= int(answers[2].headers["retry-after"]) <= 60
    assert upstream.count(marker) == 2
    deny = records(operator, "lease.deny", body["request_id"])
    assert [d["details"]["reason"] for d in deny] == ["rate_limited"]
    # A refused request takes no use of the lease.
    assert lease_view(operator, p, lease["id"])["uses"] == 2


def test_revoked_lease_is_refused(operator: httpx.Client, upstream: FakeUpstream) -> None:
    p = proxied(operator, local_profile(upstream))
    lease = mint(p)
    marker = unique("revoke")

    before = call(p, lease["token"], f"/echo/{marker}")
    revoked = operator.delete(f"/v1/leases/{lease['id']}")
    after = call(p, lease["token"], f"/echo/{marker}")

    assert before.status_code == 200, before.text
    assert revoked.status_code == 200, revoked.text
    assert_denied_and_audited(operator, after, "revoked", lease["id"])
    assert upstream.count(marker) == 1


# -- what a lease covers -------------------------------------------------------------------


def test_lease_for_one_set_on_another_sets_route(
    operator: httpx.Client, upstream: FakeUpstream
) -> None:
    a = proxied(operator, local_profile(upstream))
    b = proxied(operator, local_profile(upstream), entries={"API_KEY": "sk-other-set-value"})
    lease = mint(a)
    marker = unique("cross")

    refused = call(b, lease["token"], f"/echo/{marker}")

    assert_denied_and_audited(operator, refused, "not_granted", lease["id"])
    assert "sk-other-set-value" not in refused.text
    assert upstream.count(marker) == 0


def test_grant_methods(operator: httpx.Client, upstream: FakeUpstream) -> None:
    p = proxied(operator, local_profile(upstream), grant={"methods": ["GET"]})
    lease = mint(p)
    marker = unique("method")

    got = call(p, lease["token"], f"/echo/{marker}")
    posted = call(p, lease["token"], f"/echo/{marker}", "POST")

    assert got.status_code == 200, got.text
    assert_denied_and_audited(operator, posted, "method_not_allowed", lease["id"])
    assert [s.method for s in upstream.seen if marker in s.path] == ["GET"]


def raw_get(url: str, lease: str) -> tuple[int, dict[str, Any]]:
    """GET ``url`` with its path sent byte for byte (httpx would resolve the dot segments)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("GET", parts.path, headers={"Authorization": f"Bearer {lease}"})
        answer = conn.getresponse()
        body = answer.read()
        assert answer.getheader("content-type", "").startswith("application/problem+json")
        return answer.status, httpx.Response(answer.status, content=body).json()
    finally:
        conn.close()


def test_grant_paths(operator: httpx.Client, upstream: FakeUpstream) -> None:
    p = proxied(operator, local_profile(upstream), grant={"paths": ["/v1/chat/*"]})
    lease = mint(p)
    chat = {"model": "gpt-fake", "messages": [{"role": "user", "content": "hi"}]}
    before = len(upstream.seen)

    allowed = loopback.post(
        p.url("/v1/chat/completions"),
        json=chat,
        headers={"Authorization": f"Bearer {lease['token']}"},
        timeout=30,
    )
    models = call(p, lease["token"], "/v1/models")
    status, escaped = raw_get(p.url("/v1/chat/../models"), lease["token"])

    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["choices"][0]["message"]["content"] == "hello from upstream"
    assert_denied_and_audited(operator, models, "path_not_allowed", lease["id"])
    # The dot segment is refused as a malformed path, before the lease is even looked at.
    assert status == 400, escaped
    assert escaped["type"] == "urn:keyfob:problem:invalid-request"
    rid = escaped["request_id"]
    assert records(operator, "lease.use", rid) == records(operator, "lease.deny", rid) == []
    assert [s.path for s in upstream.seen[before:]] == ["/v1/chat/completions"]
    assert lease_view(operator, p, lease["id"])["uses"] == 1


def test_grant_keys_excluding_the_injected_key(
    operator: httpx.Client, upstream: FakeUpstream
) -> None:
    entries = {"API_KEY": CANARY, "OTHER_KEY": "sk-other-key-value"}
    p = proxied(operator, local_profile(upstream), entries, grant={"keys": ["OTHER_KEY"]})
    lease = mint(p)
    marker = unique("keys")

    refused = call(p, lease["token"], f"/echo/{marker}")

    assert_denied_and_audited(operator, refused, "key_not_allowed", lease["id"])
    assert "sk-other-key-value" not in refused.text
    assert upstream.count(marker) == 0


def test_set_without_profile(operator: httpx.Client, upstream: FakeUpstream) -> None:
    name = unique("bare")
    created = operator.post(
        "/v1/secret-sets",
        json={
            "provider": "generic",
            "environment": "test",
            "name": name,
            "entries": {"API_KEY": CANARY},
        },
    )
    assert created.status_code == 201, created.text
    agent = operator.post("/v1/agents", json={"name": unique("agent")}).json()
    set_path = f"generic/test/{name}"
    granted = operator.post(
        "/v1/grants",
        json={"agent": agent["name"], "secret_set": set_path, "scopes": ["workflow"]},
    )
    assert granted.status_code == 201, granted.text
    p = Proxied(str(operator.base_url).rstrip("/"), set_path, agent["name"], agent["token"], "")
    lease = mint(p)
    before = len(upstream.seen)

    refused = call(p, lease["token"], "/echo/noprofile")

    assert_denied_and_audited(operator, refused, "no_profile", lease["id"])
    assert len(upstream.seen) == before


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "missing"),
        ("malformed", "malformed"),
        ("unknown", "unknown"),
        ("agent_token", "malformed"),
    ],
)
def test_lease_authentication(
    operator: httpx.Client, upstream: FakeUpstream, case: str, reason: str
) -> None:
    p = proxied(operator, local_profile(upstream))
    token = {
        "missing": None,
        "malformed": "kfl_short",
        "unknown": "kfl_" + "A" * 43,
        "agent_token": p.agent_token,
    }[case]
    marker = unique("auth")

    refused = call(p, token, f"/echo/{marker}")

    body = assert_problem(refused, 401, "unauthorized")
    assert refused.headers["www-authenticate"].lower().startswith("bearer")
    assert upstream.count(marker) == 0
    # Missing and malformed leases are refused without a database round trip; their
    # record follows within milliseconds (unknown ones are committed before the answer).
    failed = records(operator, "auth.failed", body["request_id"], wait=5)
    assert len(failed) == 1, failed
    assert failed[0]["details"]["reason"] == reason
    assert failed[0]["target"] == f"route:/proxy/{p.set_path}/echo/{marker}"
    if case == "agent_token":
        assert failed[0]["details"]["token_kind"] == "kfa_"
        assert p.agent_token not in str(audit(operator, action="auth.failed"))


# -- races ---------------------------------------------------------------------------------


async def test_single_use_lease_under_concurrency(
    operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p = proxied(operator, local_profile(upstream))
    lease = mint(p, scope="request")
    marker = unique("race")

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=20)) as client:
        answers = await asyncio.gather(
            *[
                client.get(
                    p.url(f"/echo/{marker}"), headers={"Authorization": f"Bearer {lease['token']}"}
                )
                for _ in range(20)
            ]
        )

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [403] * 19, statuses
    assert all(a.json()["reason"] == "exhausted" for a in answers if a.status_code == 403)
    assert upstream.count(marker) == 1
    uses = [
        e for e in audit(operator, action="lease.use") if e["details"]["lease_id"] == lease["id"]
    ]
    assert len(uses) == 1
    assert lease_view(operator, p, lease["id"])["uses"] == 1
