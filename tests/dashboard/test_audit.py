"""The audit page: filters, paging without gaps, chain verification, JSON-lines export."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from keyfob.clock import FrozenClock
from keyfob.errors import Forbidden, Unauthorized
from keyfob.secret import Secret
from keyfob.settings import Settings
from keyfob.vault import Context, Principal, Vault
from tests.conftest import CANARY
from tests.dashboard.conftest import Ui

CTX = Context("operator:test")
PAGE = "/ui/audit"
_ROW = re.compile(r'id="event-(\d+)"')
STRIPE = "secret_set:stripe/prod/billing"
_OLDER = re.compile(r'href="([^"]*)" rel="next"')


@pytest.fixture
async def initialised(settings: Settings, clock: FrozenClock) -> AsyncIterator[tuple[Vault, str]]:
    """The shared vault fixture, but on a clock that moves only when a test says so."""
    vault, done = await Vault.initialise(settings, clock=clock)
    try:
        yield vault, done.operator_token.reveal()
    finally:
        await vault.close()


def seqs(html: str) -> list[int]:
    return [int(s) for s in _ROW.findall(html)]


async def shown(ui: Ui, url: str) -> list[int]:
    answer = await ui.get(url)
    assert answer.status_code == 200, answer.text
    return seqs(answer.text)


async def matching(vault: Vault, **filters: str) -> list[int]:
    return [e.seq for e in await vault.audit.query(limit=10_000, newest_first=True, **filters)]


async def make_set(vault: Vault, path: str) -> None:
    provider, environment, name = path.split("/")
    await vault.sets.create(
        CTX, provider=provider, environment=environment, name=name, entries={"K": CANARY}
    )


async def test_lists_newest_first_with_escaped_details(ui: Ui, vault: Vault) -> None:
    hostile = '<script>alert("x")</script>'
    with pytest.raises(Unauthorized):
        await vault.users.sign_in("mallory", Secret("wrong"), Context("anonymous"))
    # A typed name is never logged (only its keyed hash): put hostile text in directly.
    async with vault.core.write() as tx:
        await vault.core.record(
            tx, Context("anonymous"), "test.hostile", "x", details={"n": hostile}
        )

    answer = await ui.get(PAGE)

    assert answer.status_code == 200
    assert seqs(answer.text) == await matching(vault)
    assert "user.login_failed" in answer.text
    assert "<script>alert" not in answer.text
    assert "&lt;script&gt;alert(" in answer.text
    assert 'href="/ui/audit/export"' in answer.text


async def test_filters_by_actor_action_outcome_and_set(ui: Ui, vault: Vault) -> None:
    await make_set(vault, "openai/prod/default")
    await make_set(vault, "stripe/prod/billing")
    view, _ = await vault.agents.create(CTX, "billing-bot")
    bot = Principal("agent", view.id, "billing-bot")
    with pytest.raises(Forbidden):
        await vault.leases.mint(bot, Context(bot.actor), secret_set="stripe/prod/billing")

    by_actor = await shown(ui, f"{PAGE}?actor=operator:test")
    by_family = await shown(ui, f"{PAGE}?action=secret_set.")
    by_action = await shown(ui, f"{PAGE}?action=agent.create")
    denied = await shown(ui, f"{PAGE}?outcome=denied")
    by_set = await shown(ui, f"{PAGE}?set=stripe/prod/billing")
    combined = await shown(ui, f"{PAGE}?set=stripe/prod/billing&outcome=ok")

    assert by_actor == await matching(vault, actor="operator:test")
    assert len(by_actor) == 4  # the user, two sets, the agent
    assert len(by_family) == 2
    assert by_family == await matching(vault, action="secret_set.")
    assert len(by_action) == 1
    assert len(denied) == 1
    assert denied == await matching(vault, action="lease.deny")
    assert len(by_set) == 2
    assert len(combined) == 1
    assert combined == await matching(vault, action="secret_set.create", target=STRIPE)
    assert "No events match." in (await ui.get(f"{PAGE}?actor=nobody")).text


async def test_filters_by_time_as_utc(ui: Ui, vault: Vault, clock: FrozenClock) -> None:
    # The clock starts at 2026-01-01T00:00Z; the sign-in happened then.
    for name in ("first-bot", "second-bot", "third-bot"):
        clock.advance(3600)
        await vault.agents.create(CTX, name)

    middle = await shown(ui, f"{PAGE}?since=2026-01-01T01:30&until=2026-01-01T02:30")
    late = await shown(ui, f"{PAGE}?since=2026-01-01T02:00:00")
    early = await shown(ui, f"{PAGE}?until=2026-01-01T01:00:00.000001")
    bad = await ui.get(f"{PAGE}?since=yesterday")
    # Was a 500: the offset pushed the time past what a datetime holds.
    overflow = await ui.get(f"{PAGE}?since=9999-12-31T23:59:59-01:00")

    (only,) = middle
    (event,) = await vault.audit.query(after=only - 1, limit=1)
    assert event.details["name"] == "second-bot"
    assert late == await matching(vault, since="2026-01-01T02:00:00.000000Z")
    assert len(late) == 2
    assert early == await matching(vault, until="2026-01-01T01:00:00.000001Z")
    assert len(early) >= 2
    assert bad.status_code == 400
    assert "since must be a date and time" in bad.text
    assert 'value="yesterday"' in bad.text
    assert overflow.status_code == 400
    assert "since must be between 1970-01-01T00:00:00Z and 9998-12-31T23:59:59Z" in overflow.text


async def test_pages_go_back_without_gaps(ui: Ui, vault: Vault) -> None:
    for n in range(60):
        await vault.agents.create(CTX, f"bot-{n}")
    expected = await matching(vault)
    assert len(expected) > 50

    seen: list[int] = []
    url: str | None = PAGE
    pages = 0
    while url:
        answer = await ui.get(url.replace("&amp;", "&"))
        rows = seqs(answer.text)
        assert 0 < len(rows) <= 25
        seen += rows
        older = _OLDER.search(answer.text)
        url = older.group(1) if older else None
        pages += 1

    assert seen == expected
    assert pages == -(-len(expected) // 25)


async def test_paging_keeps_the_filter(ui: Ui, vault: Vault) -> None:
    for n in range(30):
        await vault.agents.create(CTX, f"bot-{n}")
    await vault.sets.search(limit=1)

    first = await ui.get(f"{PAGE}?action=agent.create")
    older = _OLDER.search(first.text)
    assert older
    second = await shown(ui, older.group(1).replace("&amp;", "&"))

    assert "action=agent.create" in older.group(1)
    assert seqs(first.text) + second == await matching(vault, action="agent.create")
    assert len(second) == 5


async def test_verify_shows_ok(ui: Ui, vault: Vault) -> None:
    await vault.agents.create(CTX, "billing-bot")

    answer = await ui.post("/ui/audit/verify", {}, form_page=PAGE)

    report = await vault.audit.verify()
    assert answer.status_code == 200
    assert f"Chain verified: {report['count']} records" in answer.text
    assert report["head"] in answer.text


async def test_verify_shows_the_tampered_record(ui: Ui, vault: Vault) -> None:
    await vault.agents.create(CTX, "billing-bot")
    await vault.agents.create(CTX, "search-bot")
    async with vault.db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE audit_events SET details = :d WHERE seq = 2"), {"d": '{"name":"evil"}'}
        )

    answer = await ui.post("/ui/audit/verify", {}, form_page=PAGE)

    assert answer.status_code == 200
    assert "Chain broken at record 2" in answer.text
    assert "Chain verified" not in answer.text


async def test_export_is_json_lines_of_every_event(ui: Ui, vault: Vault) -> None:
    await vault.agents.create(CTX, "billing-bot")

    answer = await ui.get("/ui/audit/export")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    assert answer.headers["content-disposition"].startswith("attachment")
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert lines == [e.as_dict() for e in await vault.audit.query(limit=10_000)]


async def test_verify_without_csrf_is_refused(ui: Ui, vault: Vault) -> None:
    bare = await ui.http.post("/ui/audit/verify", data={})
    forged = await ui.http.post("/ui/audit/verify", data={"csrf": "forged"})

    assert bare.status_code == 403
    assert forged.status_code == 403
    assert "Chain verified" not in bare.text


async def test_signed_out_visitors_cannot_export(ui: Ui) -> None:
    ui.http.cookies.clear()

    answer = await ui.get("/ui/audit/export")

    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login"
