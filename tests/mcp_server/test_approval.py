"""``request_access``: a grant that needs a person's approval, approved (or denied) from the
API while the tool waits — approval over MCP. The model never sees the lease it gets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.conftest import CANARY
from tests.mcp_server.conftest import TOKEN_SHAPE, Recorder, body_of, granted, in_memory, uses_by
from tests.support.server import LiveServer
from tests.support.upstream import FakeUpstream


def pending_of(operator: httpx.Client, agent_id: str, wait: float = 20) -> list[dict[str, Any]]:
    """The agent's pending lease requests, waiting until there is at least one."""
    deadline = time.monotonic() + wait
    while True:
        items = operator.get("/v1/lease-requests", params={"status": "pending"}).json()["items"]
        mine = [r for r in items if r["agent_id"] == agent_id]
        if mine or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


def decide(operator: httpx.Client, agent_id: str, verdict: str) -> dict[str, Any]:
    (request,) = pending_of(operator, agent_id)
    answer = operator.post(f"/v1/lease-requests/{request['id']}/{verdict}")
    assert answer.status_code == 200, answer.text
    decided: dict[str, Any] = answer.json()
    return decided


async def test_request_access_waits_for_approval_then_the_call_goes_through(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p, agent_id = granted(operator, upstream, approval="required")
    seen = Recorder()
    async with in_memory(server.url, p.agent_token, approval_timeout=30) as client:
        early = await seen.call(
            client, "http_request", secret_set=p.set_path, method="GET", path="/echo/early"
        )
        # Refused without filing a request: only request_access asks a person.
        assert pending_of(operator, agent_id, wait=0) == []
        asking = asyncio.create_task(
            seen.call(
                client,
                "request_access",
                secret_set=p.set_path,
                reason="summarise this week's invoices",
            )
        )
        decided = await asyncio.to_thread(decide, operator, agent_id, "approve")
        granted_access = await asking
        call = await seen.call(
            client, "http_request", secret_set=p.set_path, method="GET", path="/echo/approved"
        )
        again = await seen.call(
            client, "http_request", secret_set=p.set_path, method="GET", path="/echo/again"
        )
    assert early.error
    assert "request_access" in early.text
    assert decided["status"] == "approved"
    assert decided["reason"] == "summarise this week's invoices"  # what the approver read
    assert not granted_access.error, granted_access.text
    assert granted_access.data is not None
    assert granted_access.data["status"] == "approved"
    assert granted_access.data["request_id"] == decided["id"]
    assert granted_access.data["uses_left"] == 1
    assert body_of(call)["path"] == "/echo/approved"
    # One approval, one single-use lease: the next call needs a person again.
    assert again.error
    assert "request_access" in again.text
    assert [u["details"]["path"] for u in uses_by(operator, agent_id, p.set_path)] == [
        "/echo/approved"
    ]
    actions = [
        e["action"] for e in operator.get("/v1/audit", params={"limit": 1000}).json()["items"]
    ]
    assert "lease.request" in actions
    assert "lease.approve" in actions
    assert CANARY not in seen.text()
    assert not TOKEN_SHAPE.search(seen.text())


async def test_several_uses_on_one_approval(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p, agent_id = granted(operator, upstream, approval="required")
    async with in_memory(server.url, p.agent_token, approval_timeout=30) as client:
        asking = asyncio.create_task(
            Recorder().call(
                client, "request_access", secret_set=p.set_path, reason="two lookups", uses=2
            )
        )
        await asyncio.to_thread(decide, operator, agent_id, "approve")
        approved = await asking
        results = [
            await Recorder().call(
                client, "http_request", secret_set=p.set_path, method="GET", path=f"/echo/{n}"
            )
            for n in range(3)
        ]
        listed = await Recorder().call(client, "list_secret_sets")
    assert approved.data is not None, approved.text
    assert approved.data["uses_left"] == 2
    assert [r.error for r in results] == [False, False, True]
    assert listed.data is not None
    assert listed.data["secret_sets"][0]["access"] == "not approved yet"


async def test_a_denied_request_is_a_tool_error(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p, agent_id = granted(operator, upstream, approval="required")
    async with in_memory(server.url, p.agent_token, approval_timeout=30) as client:
        asking = asyncio.create_task(
            Recorder().call(client, "request_access", secret_set=p.set_path, reason="please")
        )
        await asyncio.to_thread(decide, operator, agent_id, "deny")
        denied = await asking
    assert denied.error
    assert "denied" in denied.text
    assert "Traceback" not in denied.text


async def test_a_timeout_keeps_waiting_on_the_same_request(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p, agent_id = granted(operator, upstream, approval="required")
    async with in_memory(server.url, p.agent_token, approval_timeout=1) as client:
        first = await Recorder().call(
            client, "request_access", secret_set=p.set_path, reason="nightly report"
        )
        second = await Recorder().call(
            client, "request_access", secret_set=p.set_path, reason="nightly report"
        )
    assert first.error
    assert "still waiting for a person" in first.text
    assert second.error
    assert len(pending_of(operator, agent_id, wait=0)) == 1  # asked once, not twice


async def test_a_grant_without_approval_needs_no_request(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p, agent_id = granted(operator, upstream)
    async with in_memory(server.url, p.agent_token) as client:
        answer = await Recorder().call(
            client, "request_access", secret_set=p.set_path, reason="just in case"
        )
        empty = await Recorder().call(client, "request_access", secret_set=p.set_path, reason=" ")
    assert answer.data is not None, answer.text
    assert answer.data["status"] == "not_needed"
    assert pending_of(operator, agent_id, wait=0) == []
    assert empty.error
    assert "reason" in empty.text


async def test_a_grant_that_gains_approval_is_asked_once(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p, agent_id = granted(operator, upstream)
    async with in_memory(server.url, p.agent_token, approval_timeout=30) as client:
        assert not (await Recorder().call(client, "list_secret_sets")).error  # grants cached
        changed = operator.patch(f"/v1/grants/{p.grant_id}", json={"approval": "required"})
        assert changed.status_code == 200, changed.text
        refused = await Recorder().call(
            client, "http_request", secret_set=p.set_path, method="GET", path="/echo/late"
        )
        asking = asyncio.create_task(
            Recorder().call(client, "request_access", secret_set=p.set_path, reason="now asked")
        )
        decided = await asyncio.to_thread(decide, operator, agent_id, "approve")
        approved = await asking
        call = await Recorder().call(
            client, "http_request", secret_set=p.set_path, method="GET", path="/echo/late"
        )
    assert refused.error
    assert "request_access" in refused.text
    # The request keyfob filed for the refused call is the one approved and collected.
    assert approved.data is not None, approved.text
    assert approved.data["request_id"] == decided["id"]
    assert body_of(call)["path"] == "/echo/late"
    assert pending_of(operator, agent_id, wait=0) == []
