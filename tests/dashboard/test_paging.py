"""Every dashboard list pages by keyset and searches: walking "Next page" shows each row
exactly once, in order; a search narrows; a forged cursor is a 400, not a 500."""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import pytest

from keyfob.dashboard import agents, credentials, grants, leases, set_page, users
from keyfob.secret import Secret
from keyfob.vault import Context, Principal, Vault
from keyfob.vault.leases import IssuedLease, LeaseRequestView
from tests.conftest import CANARY
from tests.dashboard.conftest import Ui

CTX = Context("operator:test")
SIZE = 3  # rows a page, so a handful of rows makes several pages
_NEXT = re.compile(r'<a href="([^"]+)" rel="next">Next page</a>')


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (agents, credentials, grants, leases, set_page, users):
        monkeypatch.setattr(module, "PER_PAGE", SIZE)


async def walk(
    ui: Ui,
    url: str,
    pick: Callable[[str], list[str]],
    next_link: re.Pattern[str] = _NEXT,
    size: int = SIZE,
) -> list[list[str]]:
    """Each page's rows (as ``pick`` reads them), following "Next page" to the end."""
    pages = []
    while True:
        answer = await ui.get(url)
        assert answer.status_code == 200, answer.text
        assert CANARY not in answer.text
        pages.append(pick(answer.text))
        found = next_link.search(answer.text)
        if not found:
            return pages
        assert len(pages[-1]) == size
        assert len(pages) < 50, "paging does not end"
        url = html.unescape(found.group(1))


def flat(pages: list[list[str]]) -> list[str]:
    return [row for page in pages for row in page]


async def make_set(vault: Vault, path: str) -> None:
    provider, environment, name = path.split("/")
    await vault.sets.create(
        CTX, provider=provider, environment=environment, name=name, entries={"K": CANARY}
    )


def set_rows(text: str) -> list[str]:
    return re.findall(r'<a href="/ui/credentials/[^"]+"><code>([^<]+)</code></a>', text)


async def test_sets_page_by_path_and_search_by_prefix(ui: Ui, vault: Vault) -> None:
    paths = [f"openai/prod/s{n}" for n in range(7)] + ["stripe/prod/a", "stripe/test/b"]
    for path in paths:
        await make_set(vault, path)

    pages = await walk(ui, "/ui/credentials", set_rows)

    assert flat(pages) == sorted(paths)
    assert len(pages) == 3
    assert flat(await walk(ui, "/ui/credentials?q=stripe", set_rows)) == paths[-2:]
    assert flat(await walk(ui, "/ui/credentials?q=stripe/te", set_rows)) == ["stripe/test/b"]
    assert flat(await walk(ui, "/ui/credentials?q=openai/prod/s1", set_rows)) == ["openai/prod/s1"]
    assert flat(await walk(ui, "/ui/credentials?q=o%25", set_rows)) == []


def agent_rows(text: str) -> list[str]:
    return re.findall(r"<tr>\s*<td>([a-z0-9_-]+)</td>", text)


async def test_agents_page_by_name_and_search(ui: Ui, vault: Vault) -> None:
    names = [f"bot-{n:02d}" for n in range(8)] + ["billing"]
    for name in reversed(names):
        await vault.agents.create(CTX, name)

    pages = await walk(ui, "/ui/agents", agent_rows)

    assert flat(pages) == sorted(names)
    assert flat(await walk(ui, "/ui/agents?q=bot-0", agent_rows)) == names[:8]
    assert flat(await walk(ui, "/ui/agents?q=bi", agent_rows)) == ["billing"]
    assert "No agent's name starts with" in (await ui.get("/ui/agents?q=zz")).text


def user_rows(text: str) -> list[str]:
    return re.findall(r"<tr>\s*<td>([a-z0-9_-]+)(?: \(you\))?</td>", text)


async def test_users_page_by_name_and_search(ui: Ui, vault: Vault) -> None:
    for n in range(6):
        await vault.users.create(CTX, f"user-{n}", Secret("correct horse battery staple"))

    pages = await walk(ui, "/ui/users", user_rows)

    assert flat(pages) == ["alice", *(f"user-{n}" for n in range(6))]
    assert flat(await walk(ui, "/ui/users?q=user-", user_rows)) == [f"user-{n}" for n in range(6)]


def grant_rows(text: str) -> list[str]:
    return re.findall(r'<a href="/ui/grants/([0-9a-f]+)">', text)


async def test_grants_page_oldest_first_and_filter(ui: Ui, vault: Vault) -> None:
    await make_set(vault, "openai/prod/default")
    await make_set(vault, "stripe/prod/default")
    made = []
    for n in range(7):
        await vault.agents.create(CTX, f"bot-{n}")
        path = "stripe/prod/default" if n == 3 else "openai/prod/default"
        made.append((await vault.grants.create(CTX, {"agent": f"bot-{n}", "secret_set": path})).id)

    assert flat(await walk(ui, "/ui/grants", grant_rows)) == made
    assert flat(await walk(ui, "/ui/grants?agent=bot-5", grant_rows)) == [made[5]]
    assert flat(await walk(ui, "/ui/grants?secret_set=stripe/prod/default", grant_rows)) == [
        made[3]
    ]
    for nothing in ("agent=ghost", "secret_set=no/such/set", "secret_set=not-a-path"):
        answer = await ui.get(f"/ui/grants?{nothing}")
        assert answer.status_code == 200
        assert "No grants match." in answer.text


async def test_leases_and_requests_page_without_repeats(ui: Ui, vault: Vault) -> None:
    await make_set(vault, "openai/prod/default")
    minted = []
    for n in range(7):
        view, _ = await vault.agents.create(CTX, f"bot-{n}")
        approval = "required" if n >= 3 else "none"
        await vault.grants.create(
            CTX,
            {"agent": f"bot-{n}", "secret_set": "openai/prod/default", "approval": approval},
        )
        bot = Principal("agent", view.id, f"bot-{n}")
        for _ in range(2 if n < 3 else 1):
            got = await vault.leases.mint(bot, Context(bot.actor), secret_set="openai/prod/default")
            minted.append(got)
    lease_ids = {m.lease.id for m in minted if isinstance(m, IssuedLease)}
    request_ids = [m.id for m in minted if isinstance(m, LeaseRequestView)]
    assert (len(lease_ids), len(request_ids)) == (6, 4)

    pages = await walk(
        ui,
        "/ui/leases",
        lambda t: re.findall(r'<tr id="lease-([^"]+)">', t),
        re.compile(r'Active leases[\s\S]*<a href="([^"]+)" rel="next">'),  # its own pager
    )
    assert sorted(flat(pages)) == sorted(lease_ids)  # each once, none missing
    assert len(pages) == 2

    # Requests waiting for approval have their own cursor, oldest first.
    requests = await walk(
        ui,
        "/ui/leases",
        lambda t: re.findall(r'<tr id="request-([^"]+)">', t),
        re.compile(r'<a href="([^"]+)" rel="next">(?=[\s\S]*Active leases)'),  # its own pager
    )
    assert flat(requests) == request_ids
    assert len(requests) == 2


@pytest.mark.parametrize(
    "url",
    [
        "/ui/credentials?after=%21%21",
        "/ui/agents?after=bm90LWpzb24",
        "/ui/users?after=WzEsMl0",
        "/ui/grants?after=WyJhIl0",
        "/ui/leases?after=e30",
        "/ui/leases?requests_after=WzFd",
        "/ui/credentials/openai/prod/default?versions_after=WyJ4Il0",
        # A superscript two, an Arabic-Indic one, 30 nines: digits to str.isdigit only.
        "/ui/credentials/openai/prod/default?versions_after=WyJcdTAwYjIiXQ",
        "/ui/credentials/openai/prod/default?versions_after=WyJcdTA2NjEiXQ",
        "/ui/credentials/openai/prod/default?versions_after=WyI5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTkiXQ",
    ],
)
async def test_a_forged_cursor_is_refused_plainly(ui: Ui, vault: Vault, url: str) -> None:
    await make_set(vault, "openai/prod/default")
    answer = await ui.get(url)
    assert answer.status_code == 400
    assert "cursor is not one this server handed out" in answer.text


_OLDER = re.compile(r'<a href="([^"]+)" rel="next">Older</a>')
_NEWER = re.compile(r'<a href="([^"]+)" rel="prev">Newer</a>')


def audit_rows(text: str) -> list[str]:
    return re.findall(r'<tr id="event-(\d+)">', text)


@pytest.mark.parametrize("after", ["%C2%B2", "%D9%A1", "9" * 30])
async def test_an_audit_cursor_that_is_not_ascii_digits_starts_at_the_newest(
    ui: Ui, vault: Vault, after: str
) -> None:
    for name in ("after", "newer"):
        answer = await ui.get(f"/ui/audit?{name}={after}")
        assert answer.status_code == 200, answer.text


async def test_audit_older_then_newer_covers_every_record_once(ui: Ui, vault: Vault) -> None:
    async with vault.core.write() as tx:
        for n in range(60):
            await vault.core.record(tx, CTX, "test.page", f"item:{n}", details={"n": n})
    every = [str(e.seq) for e in await vault.audit.query(limit=1000, newest_first=True)]

    down = await walk(ui, "/ui/audit", audit_rows, _OLDER, size=25)
    assert flat(down) == every  # newest first, each once, full pages

    # From the oldest page, "Newer" climbs back: the same pages, in reverse.
    url = "/ui/audit?after=" + down[-2][-1]
    up = []
    while True:
        answer = await ui.get(url)
        up.append(audit_rows(answer.text))
        found = _NEWER.search(answer.text)
        if not found:
            break
        url = html.unescape(found.group(1))
    assert flat(list(reversed(up))) == every


async def test_a_sets_versions_page_newest_first(ui: Ui, vault: Vault) -> None:
    await make_set(vault, "openai/prod/default")
    for n in range(7):
        await vault.sets.update(CTX, "openai/prod/default", entries={"K": f"{CANARY}{n}"})

    pages = await walk(
        ui,
        "/ui/credentials/openai/prod/default",
        lambda t: re.findall(r"<td>v(\d+)</td><td>", t),
        re.compile(r'<a href="([^"]*versions_after=[^"]*)" rel="next">'),
    )

    assert flat(pages) == [str(n) for n in range(8, 0, -1)]
    assert len(pages) == 3
