"""``AgentClient`` against the real app in-process: grants, one lease and a batch, the dry
run, approval and waiting on it, renewing and revoking its own leases; every failure a
typed exception naming its cause."""

from __future__ import annotations

import threading
import time

import pytest

from keyfob import sdk
from tests.sdk.conftest import ADDR, InProcess, generic_set, preset_set
from tests.support.server import free_port
from tests.support.upstream import FakeUpstream


def test_grants_show_names_and_client_variables_never_values(
    inproc: InProcess, upstream: FakeUpstream
) -> None:
    world = preset_set(inproc.operator, upstream, "openai", "OPENAI_API_KEY")
    (grant,) = inproc.agent(world.agent_token).grants()
    assert grant.secret_set == world.set_path
    assert grant.keys == ["OPENAI_API_KEY"]
    assert grant.env == {"OPENAI_BASE_URL": "{proxy_url}/v1", "OPENAI_API_KEY": "{lease}"}


def test_mint_one_and_a_batch(inproc: InProcess, upstream: FakeUpstream) -> None:
    world = generic_set(inproc.operator, upstream)
    agent = inproc.agent(world.agent_token)
    lease = agent.mint_lease(world.set_path)
    assert lease.token.reveal().startswith("kfl_")
    assert lease.token.reveal() not in repr(lease)
    assert lease.scope == "request"
    assert 55 < lease.remaining() <= 60
    batch = agent.mint_lease(world.set_path, count=7)
    assert len({b.token.reveal() for b in batch}) == 7
    assert len(inproc.calls("POST", "/v1/leases")) == 2


def test_the_dry_run_consumes_nothing(inproc: InProcess, upstream: FakeUpstream) -> None:
    world = generic_set(inproc.operator, upstream, methods=["GET"])
    agent = inproc.agent(world.agent_token)
    lease = agent.mint_lease(world.set_path)
    assert agent.check(lease, method="GET", path="/echo").allowed
    refused = agent.check(lease, method="POST", path="/echo")
    assert (refused.allowed, refused.reason) == (False, "method_not_allowed")
    assert agent.check(lease).lease_view["uses"] == 0
    assert inproc.proxy(world.set_path, lease.token.reveal()).status_code == 200


def test_an_agent_revokes_its_own_lease_and_no_one_elses(
    inproc: InProcess, upstream: FakeUpstream
) -> None:
    world = generic_set(inproc.operator, upstream)
    other = generic_set(inproc.operator, upstream)
    agent = inproc.agent(world.agent_token)
    lease = agent.mint_lease(world.set_path)
    with pytest.raises(sdk.NotFound):
        inproc.agent(other.agent_token).revoke(lease)
    agent.revoke(lease)
    answer = inproc.proxy(world.set_path, lease.token.reveal())
    with pytest.raises(sdk.LeaseRevoked) as caught:
        sdk.raise_for_keyfob(answer)
    assert caught.value.reason == "revoked"
    assert caught.value.type == "urn:keyfob:problem:forbidden"
    with pytest.raises(sdk.Conflict):
        agent.revoke(lease)
    (event,) = [
        e
        for e in inproc.operator.get("/v1/audit", params={"action": "lease.revoke"}).json()["items"]
    ]
    assert event["actor"].startswith("agent:")


def test_a_renewed_workflow_lease_outlives_its_first_term(
    inproc: InProcess, upstream: FakeUpstream
) -> None:
    world = generic_set(inproc.operator, upstream, scopes=["workflow"], max_lease_ttl=60)
    agent = inproc.agent(world.agent_token)
    lease = agent.mint_lease(world.set_path, scope="workflow", ttl=600)
    assert lease.ttl == 60  # capped by the grant
    inproc.clock.advance(50)
    renewed = agent.renew(lease, ttl=600)
    assert (renewed.id, renewed.token, renewed.ttl) == (lease.id, lease.token, 60)
    inproc.clock.advance(50)  # 100 s after the mint: past the first term, inside the second
    assert agent.check(lease).allowed
    inproc.clock.advance(15)
    assert agent.check(lease).reason == "expired"
    with pytest.raises(sdk.LeaseExpired):
        agent.renew(lease)  # a renewal never revives a lease
    events = inproc.operator.get("/v1/audit", params={"action": "lease.renew"}).json()["items"]
    assert [e["details"]["ttl"] for e in events] == [60]


def test_only_live_workflow_leases_of_grants_without_approval_are_renewed(
    inproc: InProcess, upstream: FakeUpstream
) -> None:
    world = generic_set(inproc.operator, upstream, scopes=["request", "workflow"])
    agent = inproc.agent(world.agent_token)
    with pytest.raises(sdk.Denied) as caught:
        agent.renew(agent.mint_lease(world.set_path))
    assert caught.value.reason == "not_renewable"
    revoked = agent.mint_lease(world.set_path, scope="workflow")
    agent.revoke(revoked)
    with pytest.raises(sdk.LeaseRevoked):
        agent.renew(revoked)
    with pytest.raises(sdk.NotFound):
        inproc.agent(generic_set(inproc.operator, upstream).agent_token).renew(
            agent.mint_lease(world.set_path, scope="workflow")
        )
    events = inproc.operator.get("/v1/audit", params={"action": "lease.deny"}).json()["items"]
    assert [e["details"]["reason"] for e in events] == ["not_renewable", "revoked"]


def test_approval_is_waited_for_and_a_denial_is_typed(
    inproc: InProcess, upstream: FakeUpstream
) -> None:
    world = generic_set(inproc.operator, upstream, approval="required")
    agent = inproc.agent(world.agent_token)
    with pytest.raises(sdk.ApprovalRequired) as caught:
        agent.mint_lease(world.set_path, scope="workflow")
    first = caught.value.request_id
    assert first

    def approve_soon() -> None:
        time.sleep(0.3)
        inproc.operator.post(f"/v1/lease-requests/{first}/approve")

    approver = threading.Thread(target=approve_soon)
    approver.start()
    lease = agent.wait_for_approval(first, timeout=10)
    approver.join()
    assert lease.token.reveal().startswith("kfl_")
    assert lease.scope == "workflow"
    with pytest.raises(sdk.Denied) as not_again:
        agent.renew(lease)
    assert not_again.value.reason == "not_renewable"

    pending = agent.request_approval(world.set_path)
    assert pending.status == "pending"
    with pytest.raises(sdk.ApprovalTimeout):
        agent.wait_for_approval(pending, timeout=0)
    inproc.operator.post(f"/v1/lease-requests/{pending.id}/deny")
    with pytest.raises(sdk.ApprovalDenied, match="denied"):
        agent.wait_for_approval(pending, timeout=5)


def test_each_cause_is_its_own_exception(inproc: InProcess, upstream: FakeUpstream) -> None:
    world = generic_set(inproc.operator, upstream, max_uses=1)
    other = generic_set(inproc.operator, upstream)
    agent = inproc.agent(world.agent_token)
    with pytest.raises(sdk.UnknownSecretSet) as unknown:
        agent.mint_lease("generic/test/nosuchset")
    assert unknown.value.reason == "not_granted"
    # Another agent's set looks the same: keyfob never says a set it may not use exists.
    with pytest.raises(sdk.UnknownSecretSet):
        agent.mint_lease(other.set_path)
    with pytest.raises(sdk.InvalidRequest):
        agent.mint_lease("not a set")
    with pytest.raises(sdk.AuthenticationFailed):
        inproc.agent("kfa_" + "x" * 43).grants()
    with pytest.raises(sdk.AuthenticationFailed, match="KEYFOB_TOKEN"):
        sdk.AgentClient(ADDR, transport=inproc.transport).grants()
    lease = agent.mint_lease(world.set_path)
    used = inproc.proxy(world.set_path, lease.token.reveal())
    assert used.status_code == 200
    again = inproc.proxy(world.set_path, lease.token.reveal())
    with pytest.raises(sdk.LeaseExhausted):
        sdk.raise_for_keyfob(again)
    with pytest.raises(sdk.LeaseExhausted):  # the grant's one use is spent
        agent.mint_lease(world.set_path)
    expiring = generic_set(inproc.operator, upstream)
    patched = inproc.operator.patch(
        f"/v1/grants/{expiring.grant_id}", json={"expires_at": "2030-01-01T00:00:00Z"}
    )
    assert patched.status_code == 200, patched.text
    inproc.clock.advance(10 * 365 * 86400)
    with pytest.raises(sdk.LeaseExpired):
        inproc.agent(expiring.agent_token).mint_lease(expiring.set_path)
    with pytest.raises(sdk.Unreachable, match="unreachable"):
        sdk.AgentClient(f"http://127.0.0.1:{free_port()}", world.agent_token).grants()
