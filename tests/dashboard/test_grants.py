"""Grants pages: create with constraints, list and filter, edit, revoke, validation, CSRF."""

from __future__ import annotations

from typing import Any

import pytest
from markupsafe import escape

from keyfob.constraints import CONSTRAINTS
from keyfob.vault import Context, Vault
from tests.dashboard.conftest import Ui

OPERATOR = Context("operator:test")
SET = "openai/prod/default"


@pytest.fixture
async def agent(vault: Vault) -> dict[str, Any]:
    await vault.sets.create(
        OPERATOR,
        provider="openai",
        environment="prod",
        name="default",
        entries={"OPENAI_API_KEY": "sk-test", "OPENAI_ORG": "org-1"},
    )
    await vault.sets.create(
        OPERATOR, provider="stripe", environment="prod", name="default", entries={"KEY": "x"}
    )
    made, _ = await vault.agents.create(OPERATOR, "billing-bot")
    return made


def form(agent: dict[str, Any], **fields: str) -> dict[str, str]:
    return {
        "agent": agent.id,
        "secret_set": SET,
        "actions": "proxy",
        "scopes": "request",
        "approval": "none",
        "max_lease_ttl": "900",
        **fields,
    }


async def test_new_form_explains_every_field(ui: Ui, agent: dict[str, Any]) -> None:
    answer = await ui.get(f"/ui/grants/new?secret_set={SET}")
    assert answer.status_code == 200
    for name in (
        "not_before",
        "expires_at",
        "max_lease_ttl",
        "max_lease_uses",
        "rate_limit",
        "max_uses",
        "paths",
        "approval",
        "keys_text",
    ):
        assert f'name="{name}"' in answer.text
    assert 'value="OPENAI_API_KEY"' in answer.text  # the set's keys as checkboxes
    assert "hands the agent the plaintext" in answer.text
    assert "Default 900" in answer.text
    for c in CONSTRAINTS:  # the form is built from the spec: every constraint, its help
        assert f'name="{c.name}"' in answer.text, c.name
        assert escape(c.help) in answer.text, c.name


async def test_create_with_constraints_and_list(
    ui: Ui, vault: Vault, agent: dict[str, Any]
) -> None:
    data = form(
        agent,
        keys="OPENAI_API_KEY",
        scopes="workflow",
        max_lease_ttl="600",
        max_lease_uses="5",
        rate_limit="30",
        max_uses="1000",
        expires_at="2999-01-01T00:00",
        methods="POST",
        paths="/v1/chat/*\n/v1/embeddings",
        approval="required",
    )
    answer = await ui.post("/ui/grants", data, form_page="/ui/grants/new")
    assert answer.status_code == 303, answer.text
    (grant,) = await vault.grants.search(agent="billing-bot")
    assert answer.headers["location"] == f"/ui/grants/{grant.id}?done=created"
    assert grant.keys == ["OPENAI_API_KEY"]
    assert grant.scopes == ["workflow"]
    assert grant.max_lease_ttl == 600
    assert grant.max_lease_uses == 5
    assert grant.rate_limit == 30
    assert grant.max_uses == 1000
    assert grant.expires_at.startswith("2999-01-01T00:00:00")
    assert grant.methods == ["POST"]
    assert grant.paths == ["/v1/chat/*", "/v1/embeddings"]
    assert grant.approval == "required"
    listing = (await ui.get("/ui/grants")).text
    for shown in (
        "billing-bot",
        SET,
        "OPENAI_API_KEY",
        "workflow",
        "600 s",
        "30 uses/min",
        "1000 uses in all",
        "/v1/chat/*",
        "required",
    ):
        assert shown in listing
    edit = (await ui.get(f"/ui/grants/{grant.id}")).text
    assert 'value="2999-01-01T00:00:00"' in edit
    assert 'name="max_uses" value="1000"' in edit


async def test_defaults_are_least_privilege(ui: Ui, vault: Vault, agent: dict[str, Any]) -> None:
    answer = await ui.post("/ui/grants", form(agent), form_page="/ui/grants/new")
    assert answer.status_code == 303
    (grant,) = await vault.grants.search()
    assert grant.actions == ["proxy"]
    assert grant.keys is None
    assert grant.max_lease_ttl == 900


async def test_filter_by_agent_and_set(ui: Ui, vault: Vault, agent: dict[str, Any]) -> None:
    await vault.agents.create(OPERATOR, "report-bot")
    await vault.grants.create(OPERATOR, {"agent": "billing-bot", "secret_set": SET})
    await vault.grants.create(
        OPERATOR, {"agent": "report-bot", "secret_set": "stripe/prod/default"}
    )
    mine = (await ui.get(f"/ui/grants?agent={agent.id}")).text
    assert SET in mine
    assert "<td>stripe/prod/default</td>" not in mine
    by_set = (await ui.get("/ui/grants?secret_set=stripe/prod/default")).text
    assert "<td>report-bot</td>" in by_set
    assert "<td>billing-bot</td>" not in by_set


async def test_edit_sends_only_the_changed_fields(
    ui: Ui, vault: Vault, agent: dict[str, Any]
) -> None:
    made = await vault.grants.create(OPERATOR, {"agent": "billing-bot", "secret_set": SET})
    url = f"/ui/grants/{made.id}"
    data = form(agent, rate_limit="10", actions="proxy")
    data["keys"] = "OPENAI_ORG"
    answer = await ui.post(url, data, form_page=url)
    assert answer.headers["location"] == f"{url}?done=updated"
    grant = await vault.grants.get(made.id)
    assert grant.rate_limit == 10
    assert grant.keys == ["OPENAI_ORG"]
    (event,) = await vault.audit.query(action="grant.update")
    assert event.details["changed"] == ["keys", "rate_limit"]
    assert event.actor == f"user:{ui.user_id}"


async def test_revoke(ui: Ui, vault: Vault, agent: dict[str, Any]) -> None:
    made = await vault.grants.create(OPERATOR, {"agent": "billing-bot", "secret_set": SET})
    url = f"/ui/grants/{made.id}"
    answer = await ui.post(f"{url}/revoke", {}, form_page=url)
    assert answer.headers["location"] == f"{url}?done=revoked"
    assert (await vault.grants.get(made.id)).revoked_at is not None
    page = (await ui.get(answer.headers["location"])).text
    assert "Revoked." in page
    assert "cannot be changed" in page
    revoked_at = (await vault.grants.get(made.id)).revoked_at
    assert revoked_at[:19] in (await ui.get("/ui/grants")).text
    assert "No grants match." in (await ui.get("/ui/grants?active=1")).text


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"keys_text": "NOPE"}, "the set has no key NOPE"),
        ({"expires_at": "2001-01-01T00:00"}, "must be in the future"),
        # Was a 500: the offset pushed the time past what a datetime holds.
        ({"expires_at": "9999-12-31T23:59:59-01:00"}, "between 1970-01-01T00:00:00Z and"),
        ({"not_before": "1969-12-31T23:59"}, "between 1970-01-01T00:00:00Z and"),
        ({"expires_at": "2026-02-30T10:00"}, "does not exist"),
        ({"max_lease_ttl": "999999"}, "at most 86400"),
        ({"paths": "no-slash"}, "paths:"),
        ({"rate_limit": "lots"}, "a whole number"),
        # Out of range (issue 10 item 13): before 1970, year 9999, past int64.
        ({"not_before": "0001-01-01T00:00"}, "between 1970-01-01T00:00:00Z and"),
        ({"expires_at": "9999-12-31T23:59"}, "between 1970-01-01T00:00:00Z and"),
        ({"max_uses": str(2**63)}, "at most 10000000"),
    ],
)
async def test_validation_errors_show_the_reason_and_change_nothing(
    ui: Ui, vault: Vault, agent: dict[str, Any], fields: dict[str, str], reason: str
) -> None:
    answer = await ui.post("/ui/grants", form(agent, **fields), form_page="/ui/grants/new")
    assert answer.status_code in (400, 422)
    assert reason in answer.text
    assert f'<option value="{agent.id}" selected>' in answer.text  # refilled
    assert await vault.grants.search(include_revoked=True) == []


async def test_invalid_edit_changes_nothing(ui: Ui, vault: Vault, agent: dict[str, Any]) -> None:
    made = await vault.grants.create(OPERATOR, {"agent": "billing-bot", "secret_set": SET})
    url = f"/ui/grants/{made.id}"
    answer = await ui.post(
        url, form(agent, expires_at="2001-01-01T00:00", rate_limit="7"), form_page=url
    )
    assert answer.status_code == 422
    assert "must be in the future" in answer.text
    assert 'name="rate_limit" value="7"' in answer.text
    assert await vault.grants.get(made.id) == made


async def test_posts_without_csrf_change_nothing(
    ui: Ui, vault: Vault, agent: dict[str, Any]
) -> None:
    answer = await ui.http.post("/ui/grants", data=form(agent))
    assert answer.status_code == 403
    assert await vault.grants.search() == []
    made = await vault.grants.create(OPERATOR, {"agent": "billing-bot", "secret_set": SET})
    url = f"/ui/grants/{made.id}"
    assert (await ui.http.post(url, data=form(agent, rate_limit="3"))).status_code == 403
    assert (await ui.http.post(f"{url}/revoke", data={"csrf": "x"})).status_code == 403
    assert await vault.grants.get(made.id) == made


async def test_changes_are_audited_as_the_user(ui: Ui, vault: Vault, agent: dict[str, Any]) -> None:
    await ui.post("/ui/grants", form(agent), form_page="/ui/grants/new")
    (grant,) = await vault.grants.search()
    await ui.post(f"/ui/grants/{grant.id}/revoke", {}, form_page="/ui/grants")
    actions = [e.action for e in await vault.audit.query(actor=f"user:{ui.user_id}")]
    assert "grant.create" in actions
    assert "grant.revoke" in actions
