"""The leases page: active leases (ids only, never a token), revoking, approving requests."""

from __future__ import annotations

from typing import Any

import pytest

from keyfob.vault import Context, Principal, Vault
from keyfob.vault.leases import IssuedLease, LeaseRequestView
from tests.conftest import CANARY
from tests.dashboard.conftest import Ui

CTX = Context("operator:test")
SET = "openai/prod/default"
PAGE = "/ui/leases"


async def make_set(vault: Vault, path: str = SET) -> None:
    provider, environment, name = path.split("/")
    await vault.sets.create(
        CTX,
        provider=provider,
        environment=environment,
        name=name,
        entries={"OPENAI_API_KEY": CANARY},
    )


async def make_agent(vault: Vault, name: str, set_path: str = SET, **grant: Any) -> Principal:
    """An agent with a grant on ``set_path`` (workflow leases allowed)."""
    view, _ = await vault.agents.create(CTX, name)
    spec = {"agent": name, "secret_set": set_path, "scopes": ["request", "workflow"], **grant}
    await vault.grants.create(CTX, spec)
    return Principal("agent", view.id, name)


async def mint(vault: Vault, agent: Principal, set_path: str = SET) -> IssuedLease:
    issued = await vault.leases.mint(
        agent, Context(agent.actor), secret_set=set_path, scope="workflow", max_uses=3
    )
    assert isinstance(issued, IssuedLease)
    return issued


async def active_ids(vault: Vault) -> set[str]:
    return {v.id for v in await vault.leases.search(active=True)}


@pytest.fixture
async def seeded(vault: Vault) -> Vault:
    await make_set(vault)
    return vault


async def test_lists_active_leases_without_tokens(ui: Ui, seeded: Vault) -> None:
    bot = await make_agent(seeded, "billing-bot")
    lease = await mint(seeded, bot)
    token = lease.token.reveal()

    answer = await ui.get(PAGE)

    assert answer.status_code == 200
    html = answer.text
    assert lease.lease.id in html
    assert "billing-bot" in html
    assert SET in html
    assert "0 / 3" in html
    assert lease.lease.expires_at[:19] in html
    assert token not in html
    assert "kfl_" not in html
    assert "script-src 'self'" in answer.headers["content-security-policy"]


async def test_revoke_one_lease(ui: Ui, seeded: Vault) -> None:
    bot = await make_agent(seeded, "billing-bot")
    keep, gone = await mint(seeded, bot), await mint(seeded, bot)

    answer = await ui.post(f"/ui/leases/{gone.lease.id}/revoke", {}, form_page=PAGE)

    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/leases?done=revoked"
    assert await active_ids(seeded) == {keep.lease.id}
    page = (await ui.get(answer.headers["location"])).text
    assert "Revoked." in page
    assert gone.lease.id not in page
    (event,) = await seeded.audit.query(action="lease.revoke")
    assert event.actor == f"user:{ui.user_id}"
    assert event.details["lease_id"] == gone.lease.id


async def test_revoking_a_revoked_lease_is_refused(ui: Ui, seeded: Vault) -> None:
    bot = await make_agent(seeded, "billing-bot")
    lease = await mint(seeded, bot)
    await ui.post(f"/ui/leases/{lease.lease.id}/revoke", {}, form_page=PAGE)

    again = await ui.post(f"/ui/leases/{lease.lease.id}/revoke", {}, form_page=PAGE)
    missing = await ui.post("/ui/leases/nope/revoke", {}, form_page=PAGE)

    assert again.status_code == 409
    assert "already revoked" in again.text
    assert missing.status_code == 404


async def test_revoke_all_of_one_agent(ui: Ui, seeded: Vault) -> None:
    bot = await make_agent(seeded, "billing-bot")
    other = await make_agent(seeded, "search-bot")
    await mint(seeded, bot)
    await mint(seeded, bot)
    spared = await mint(seeded, other)

    answer = await ui.post("/ui/leases/revoke-agent", {"agent": bot.id}, form_page=PAGE)

    assert answer.status_code == 303
    assert await active_ids(seeded) == {spared.lease.id}
    (event,) = await seeded.audit.query(action="lease.revoke")
    assert event.actor == f"user:{ui.user_id}"
    assert event.details["agent_id"] == bot.id
    assert len(event.details["lease_ids"]) == 2


async def test_revoke_all_needs_a_known_agent(ui: Ui, seeded: Vault) -> None:
    bot = await make_agent(seeded, "billing-bot")
    await mint(seeded, bot)

    blank = await ui.post("/ui/leases/revoke-agent", {"agent": ""}, form_page=PAGE)
    unknown = await ui.post("/ui/leases/revoke-agent", {"agent": "ghost"}, form_page=PAGE)

    assert blank.status_code == 400
    assert unknown.status_code == 404
    assert len(await active_ids(seeded)) == 1


async def pending_request(vault: Vault, name: str = "billing-bot") -> tuple[Principal, str]:
    bot = await make_agent(vault, name, approval="required")
    request = await vault.leases.mint(bot, Context(bot.actor), secret_set=SET)
    assert isinstance(request, LeaseRequestView)
    return bot, request.id


async def test_pending_request_shows_the_agents_reason_escaped(ui: Ui, seeded: Vault) -> None:
    bot = await make_agent(seeded, "billing-bot", approval="required")
    said = "<b>summarise</b> the invoices"
    await seeded.leases.mint(bot, Context(bot.actor), secret_set=SET, request_reason=said)
    quiet = await make_agent(seeded, "quiet-bot", approval="required")
    await seeded.leases.mint(quiet, Context(quiet.actor), secret_set=SET)

    html = (await ui.get(PAGE)).text
    assert "&lt;b&gt;summarise&lt;/b&gt; the invoices" in html
    assert "<b>summarise</b>" not in html
    assert "none given" in html


async def test_pending_request_is_listed_and_approved(ui: Ui, seeded: Vault) -> None:
    bot, request_id = await pending_request(seeded)

    html = (await ui.get(PAGE)).text
    assert f"/ui/lease-requests/{request_id}/approve" in html
    assert "billing-bot" in html
    assert "60 s" in html

    answer = await ui.post(f"/ui/lease-requests/{request_id}/approve", {}, form_page=PAGE)

    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/leases?done=approved"
    (view,) = await seeded.approvals.requests()
    assert view.status == "approved"
    assert view.decided_by == f"user:{ui.user_id}"
    (event,) = await seeded.audit.query(action="lease.approve")
    assert event.actor == f"user:{ui.user_id}"
    assert request_id not in (await ui.get(PAGE)).text
    issued = await seeded.approvals.poll(bot, Context(bot.actor), request_id)
    assert issued.status == "issued"
    assert issued.lease_id in await active_ids(seeded)
    assert issued.lease is not None
    assert issued.lease.token.reveal() not in (await ui.get(PAGE)).text


async def test_pending_request_is_denied(ui: Ui, seeded: Vault) -> None:
    bot, request_id = await pending_request(seeded)

    answer = await ui.post(f"/ui/lease-requests/{request_id}/deny", {}, form_page=PAGE)

    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/leases?done=denied"
    (view,) = await seeded.approvals.requests()
    assert view.status == "denied"
    (event,) = await seeded.audit.query(action="lease.reject")
    assert event.actor == f"user:{ui.user_id}"
    polled = await seeded.approvals.poll(bot, Context(bot.actor), request_id)
    assert polled.status == "denied"
    again = await ui.post(f"/ui/lease-requests/{request_id}/approve", {}, form_page=PAGE)
    assert again.status_code == 409


async def test_posts_without_csrf_change_nothing(ui: Ui, seeded: Vault) -> None:
    bot = await make_agent(seeded, "billing-bot")
    lease = await mint(seeded, bot)
    _, request_id = await pending_request(seeded, "search-bot")
    before = len(await seeded.audit.query(limit=1000))

    for url, data in [
        (f"/ui/leases/{lease.lease.id}/revoke", {}),
        ("/ui/leases/revoke-agent", {"agent": bot.id}),
        (f"/ui/lease-requests/{request_id}/approve", {}),
        (f"/ui/lease-requests/{request_id}/deny", {}),
    ]:
        bare = await ui.http.post(url, data=data)
        wrong = await ui.http.post(url, data={**data, "csrf": "forged"})
        assert bare.status_code == 403, url
        assert wrong.status_code == 403, url

    assert await active_ids(seeded) == {lease.lease.id}
    assert [v.status for v in await seeded.approvals.requests()] == ["pending"]
    assert len(await seeded.audit.query(limit=1000)) == before


async def test_signed_out_visitors_are_sent_to_sign_in(ui: Ui) -> None:
    ui.http.cookies.clear()

    answer = await ui.get(PAGE)

    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login"
