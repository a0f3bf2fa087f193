"""``OperatorClient`` against the real app in-process: each method does what its route
does, a new agent's token comes back masked, failures are the typed exceptions."""

from __future__ import annotations

import pytest

from keyfob import sdk
from keyfob.secret import Secret
from tests.conftest import CANARY
from tests.sdk.conftest import ADDR, InProcess
from tests.support.upstream import FakeUpstream


def test_an_operator_automates_sets_agents_grants_leases_and_audit(
    inproc: InProcess, upstream: FakeUpstream
) -> None:
    op = sdk.OperatorClient(ADDR, inproc.operator_token, transport=inproc.transport)
    profile = {
        "base_url": upstream.url,
        "hosts": [upstream.host],
        "inject": {"kind": "bearer", "key": "API_KEY"},
        "allow_private_upstream": True,
    }
    created = op.create_set("generic/test/ops", {"API_KEY": CANARY}, profile=profile)
    assert created["version"] == 1
    assert [s["path"] for s in op.sets()] == ["generic/test/ops"]
    assert op.update_set("generic/test/ops", {"EXTRA": "x"})["version"] == 2
    assert {k["name"] for k in op.get_set("generic/test/ops")["keys"]} == {"API_KEY", "EXTRA"}
    agent = op.create_agent("ops-bot")
    assert isinstance(agent["token"], Secret)
    assert agent["token"].reveal() not in repr(agent)
    grant = op.grant("ops-bot", "generic/test/ops", approval="required")
    assert [g["id"] for g in op.grants(agent="ops-bot")] == [grant["id"]]
    assert op.update_grant(grant["id"], approval="none")["approval"] == "none"
    bot = sdk.AgentClient(ADDR, agent["token"].reveal(), transport=inproc.transport)
    lease = bot.mint_lease("generic/test/ops")
    assert [x["id"] for x in op.leases(secret_set="generic/test/ops")] == [lease.id]
    assert op.revoke_lease(lease.id)["status"] == "revoked"
    op.update_grant(grant["id"], approval="required")
    first = bot.request_approval("generic/test/ops")
    second = bot.request_approval("generic/test/ops")
    assert {r["id"] for r in op.lease_requests()} == {first.id, second.id}
    assert op.approve(first.id)["status"] == "approved"
    assert op.deny(second.id)["status"] == "denied"
    assert bot.wait_for_approval(first.id, timeout=1).token.reveal().startswith("kfl_")
    actions = [e["action"] for e in op.audit_events(target="secret_set:generic/test/ops")]
    assert actions.count("lease.mint") == 2
    assert "lease.approve" in actions
    assert len(op.audit(limit=2)) == 2
    assert op.verify_audit()["ok"] is True
    assert op.revoke_grant(grant["id"])["revoked_at"]
    with pytest.raises(sdk.Conflict):
        op.revoke_grant(grant["id"])
    assert op.delete_agent("ops-bot")["deleted"] is True
    assert op.delete_set("generic/test/ops")["deleted_at"]
    with pytest.raises(sdk.NotFound):
        op.get_set("generic/test/nosuch")
    with pytest.raises(sdk.AuthenticationFailed):
        sdk.OperatorClient(ADDR, "kfo_" + "w" * 43, transport=inproc.transport).agents()
    bot.close()
    op.close()
