"""Agents pages: the token is shown once, rotation replaces it, disable/enable/delete."""

from __future__ import annotations

import re

import httpx

from keyfob.vault import Context, Vault
from tests.dashboard.conftest import Ui

_TOKEN = re.compile(r'id="agent-token">(kfa_[^<\s]+)<')


def token_of(html: str) -> str:
    match = _TOKEN.search(html)
    assert match, "no token on this page"
    return match.group(1)


async def create(ui: Ui, name: str = "billing-bot") -> tuple[str, str]:
    answer = await ui.post("/ui/agents", {"name": name}, form_page="/ui/agents")
    assert answer.status_code == 201, answer.text
    return token_of(answer.text), answer.text


async def agent_id(vault: Vault, name: str) -> str:
    return str((await vault.agents.get(name)).id)


async def lease(ui: Ui, token: str) -> httpx.Response:
    return await ui.http.post(
        "/v1/leases",
        json={"secret_set": "openai/prod/default", "scope": "request"},
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_create_shows_the_token_exactly_once(ui: Ui, vault: Vault) -> None:
    token, html = await create(ui)
    assert token.startswith("kfa_")
    assert html.count(token) == 1
    assert "You will not see this token again" in html
    assert '<button type="button" data-copy="#agent-token">Copy</button>' in html
    answer = await ui.get("/ui/agents")
    assert "billing-bot" in answer.text
    assert token not in answer.text
    assert token not in (await ui.get("/ui/agents")).text
    assert (await vault.agents.get("billing-bot")).status == "active"


async def test_token_page_is_not_cached_and_not_redirected(ui: Ui) -> None:
    answer = await ui.post("/ui/agents", {"name": "bot"}, form_page="/ui/agents")
    assert answer.status_code == 201
    assert "no-store" in answer.headers["cache-control"]
    assert "location" not in answer.headers


async def test_rotate_shows_a_new_token_and_the_old_one_stops(ui: Ui, vault: Vault) -> None:
    await vault.sets.create(
        Context("operator:test"),
        provider="openai",
        environment="prod",
        name="default",
        entries={"OPENAI_API_KEY": "sk-test"},
    )
    old, _ = await create(ui)
    await vault.grants.create(
        Context("operator:test"), {"agent": "billing-bot", "secret_set": "openai/prod/default"}
    )
    assert (await lease(ui, old)).status_code == 201
    ident = await agent_id(vault, "billing-bot")
    answer = await ui.post(f"/ui/agents/{ident}/rotate", {}, form_page="/ui/agents")
    assert answer.status_code == 200
    assert "no-store" in answer.headers["cache-control"]
    new = token_of(answer.text)
    assert new != old
    assert "You will not see this token again" in answer.text
    assert (await lease(ui, old)).status_code == 401
    assert (await lease(ui, new)).status_code == 201
    assert new not in (await ui.get("/ui/agents")).text


async def test_disable_and_enable(ui: Ui, vault: Vault) -> None:
    await create(ui)
    ident = await agent_id(vault, "billing-bot")
    answer = await ui.post(f"/ui/agents/{ident}/disable", {}, form_page="/ui/agents")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/agents?done=disabled"
    assert (await vault.agents.get(ident)).status == "disabled"
    page = await ui.get("/ui/agents")
    assert "Disabled." in (await ui.get(answer.headers["location"])).text
    assert f"/ui/agents/{ident}/enable" in page.text
    await ui.post(f"/ui/agents/{ident}/enable", {}, form_page="/ui/agents")
    assert (await vault.agents.get(ident)).status == "active"


async def test_delete_asks_first(ui: Ui, vault: Vault) -> None:
    await create(ui)
    ident = await agent_id(vault, "billing-bot")
    confirm = await ui.get(f"/ui/agents/{ident}/delete")
    assert confirm.status_code == 200
    assert "Yes, delete billing-bot" in confirm.text
    assert len(await vault.agents.list_all()) == 1
    answer = await ui.post(f"/ui/agents/{ident}/delete", {}, form_page=f"/ui/agents/{ident}/delete")
    assert answer.headers["location"] == "/ui/agents?done=deleted"
    assert await vault.agents.list_all() == []


async def test_invalid_name_is_shown_and_refilled(ui: Ui, vault: Vault) -> None:
    answer = await ui.post("/ui/agents", {"name": "Bad Name!"}, form_page="/ui/agents")
    assert answer.status_code == 422
    assert "agent names are 1-64 characters" in answer.text
    assert 'value="Bad Name!"' in answer.text
    assert await vault.agents.list_all() == []
    await create(ui)
    again = await ui.post("/ui/agents", {"name": "billing-bot"}, form_page="/ui/agents")
    assert again.status_code == 409
    assert "already exists" in again.text


async def test_posts_without_csrf_change_nothing(ui: Ui, vault: Vault) -> None:
    answer = await ui.http.post("/ui/agents", data={"name": "sneaky"})
    assert answer.status_code == 403
    assert await vault.agents.list_all() == []
    await create(ui)
    ident = await agent_id(vault, "billing-bot")
    for verb in ("disable", "rotate", "delete"):
        refused = await ui.http.post(f"/ui/agents/{ident}/{verb}", data={"csrf": "wrong"})
        assert refused.status_code == 403
        assert "kfa_" not in refused.text
    assert (await vault.agents.get(ident)).status == "active"


async def test_changes_are_audited_as_the_user(ui: Ui, vault: Vault) -> None:
    await create(ui)
    ident = await agent_id(vault, "billing-bot")
    await ui.post(f"/ui/agents/{ident}/disable", {}, form_page="/ui/agents")
    await ui.post(f"/ui/agents/{ident}/rotate", {}, form_page="/ui/agents")
    await ui.post(f"/ui/agents/{ident}/delete", {}, form_page="/ui/agents")
    actions = [e.action for e in await vault.audit.query(actor=f"user:{ui.user_id}")]
    for action in ("agent.create", "agent.disable", "agent.rotate_token", "agent.delete"):
        assert action in actions
    assert all("kfa_" not in str(e.details) for e in await vault.audit.query())
