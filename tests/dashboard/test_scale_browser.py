"""The dashboard at scale, in a real browser: Chromium paging an audit log of 1M records.

The vault is seeded with 1,000,000 audit records by SQLite itself (placeholder hashes:
nothing here verifies the chain). The test pages newest-first, jumps deep by cursor,
walks back up with "Newer", and searches for a rare actor and action, asserting only
what a person sees: the right records, in order, with no duplicate and no gap between
pages. How long the server took for each page (its ``Server-Timing`` header) is printed
and written to ``test-artifacts/dashboard-scale.json``: measured, never asserted.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page

from keyfob.app.bootstrap import init_vault
from keyfob.settings import Settings
from tests.conftest import CANARY
from tests.support.audit_seed import RARE_ACTION, RARE_ACTOR, RARE_EVERY, seed_audit
from tests.support.browser import ROOT, Tour, chromium_path, launch, step
from tests.support.server import LiveServer, start_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        chromium_path() is None,
        reason="no chromium binary (apt-get install chromium) for the dashboard browser test",
    ),
]

RECORDS = 1_000_000
PER_PAGE = 25
USER = "alice"
PASSWORD = "correct horse battery staple"
_ROW = re.compile(r'<tr id="event-(\d+)">\s*<td>\d+</td>\s*<td[^>]*>[^<]*</td>\s*<td>([^<]*)</td>')
_TIMING = re.compile(r"app;dur=([0-9.]+)")


@pytest.fixture
def big_server(sqlite_settings: Settings, tmp_path: Path) -> Iterator[tuple[LiveServer, int]]:
    """A live server on a vault whose audit log holds 1M seeded records (and its last seq)."""
    result = init_vault(sqlite_settings)
    assert result.operator_token is not None
    started = time.monotonic()
    last = seed_audit(sqlite_settings.data_dir / "keyfob.db", RECORDS)
    print(f"\nseeded {RECORDS:,} audit records in {time.monotonic() - started:.1f} s")
    # A child process, not a thread of this one: Playwright's sync client shares this
    # process's GIL, which would show up in the server's own timings.
    server = start_server(sqlite_settings, result.operator_token.reveal(), tmp_path / "server.log")
    try:
        yield server, last
    finally:
        server.stop()


def rows(html: str) -> list[tuple[int, str]]:
    """(seq, actor) of each audit row shown."""
    return [(int(seq), actor) for seq, actor in _ROW.findall(html)]


def server_ms(tour: Tour) -> float:
    """The server time of the last page loaded (not of its stylesheet or script)."""
    seen = next(r for r in reversed(tour.responses) if "/static/" not in r.url)
    found = _TIMING.search(seen.headers.get("server-timing", ""))
    assert found, f"no Server-Timing on {seen.url}"
    return float(found.group(1))


def visit(tour: Tour, timings: dict[str, float], label: str, action: object) -> str:
    """Load a page (``action`` navigates), keep its server time, return its HTML."""
    started = time.monotonic()
    if callable(action):
        action()
    else:
        tour.goto(str(action))
    tour.page.wait_for_load_state("load")
    wall = (time.monotonic() - started) * 1000
    timings[label] = server_ms(tour)
    timings[label + " (browser)"] = round(wall, 1)
    return tour.snap(label)


def click(page: Page, name: str) -> object:
    return lambda: page.get_by_role("link", name=name, exact=True).click()


def test_audit_pages_over_a_million_records_in_chromium(
    big_server: tuple[LiveServer, int],
) -> None:
    server, last = big_server
    with httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {server.operator_token}"},
        timeout=30,
    ) as api:
        assert api.post("/v1/users", json={"name": USER, "password": PASSWORD}).status_code == 201
        made = api.post(
            "/v1/secret-sets",
            json={
                "provider": "openai",
                "environment": "prod",
                "name": "default",
                "entries": {"OPENAI_API_KEY": CANARY},
                "profile": {"preset": "openai"},
            },
        )
        assert made.status_code == 201, made.text
    last += 3  # user.create, secret_set.create, and the set's first version's audit record
    timings: dict[str, float] = {}
    with launch() as chromium:
        context = chromium.new_context(viewport={"width": 1280, "height": 900})
        tour = Tour(context.new_page(), server.url, prefix="scale")
        page = tour.page

        with step(tour, "sign in to a vault of 1M records"):
            tour.goto("/ui/login")
            page.fill("input[name=name]", USER)
            page.fill("input[name=password]", PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{server.url}/ui/")
            timings["overview"] = server_ms(tour)
            html = tour.snap("overview")
            assert "Getting started" in html  # a set, but no agent yet: the guide stays

        with step(tour, "page back from the newest record"):
            html = visit(tour, timings, "audit first page", "/ui/audit")
            first = [seq for seq, _ in rows(html)]
            assert len(first) == PER_PAGE
            newest = first[0]
            assert newest >= last - 2, (newest, last)
            seen = list(first)
            for n in range(3):
                html = visit(tour, timings, f"audit older {n + 1}", click(page, "Older"))
                seen += [seq for seq, _ in rows(html)]
            # Newest first, no duplicate, no gap: exactly the seqs below the newest.
            assert seen == list(range(newest, newest - 4 * PER_PAGE, -1))

        with step(tour, "jump deep by cursor and walk back up"):
            deep = last // 2
            html = visit(tour, timings, "audit deep page", f"/ui/audit?after={deep}")
            below = [seq for seq, _ in rows(html)]
            assert below == list(range(deep - 1, deep - 1 - PER_PAGE, -1))
            html = visit(tour, timings, "audit deep newer", click(page, "Newer"))
            above = [seq for seq, _ in rows(html)]
            assert above == list(range(deep + PER_PAGE - 1, deep - 1, -1))
            html = visit(tour, timings, "audit deep older", click(page, "Older"))
            assert [seq for seq, _ in rows(html)] == below

        with step(tour, "search a rare actor across every page of it"):
            tour.goto("/ui/audit")
            page.fill("input[name=actor]", RARE_ACTOR)
            html = visit(
                tour,
                timings,
                "audit search actor",
                lambda: page.get_by_role("button", name="Filter").click(),
            )
            found = rows(html)
            while "Older</a>" in html:
                html = visit(tour, timings, "audit search actor older", click(page, "Older"))
                found += rows(html)
            assert {actor for _, actor in found} == {RARE_ACTOR}
            seqs = [seq for seq, _ in found]
            assert seqs == sorted(set(seqs), reverse=True)
            assert len(seqs) == RECORDS // RARE_EVERY

        with step(tour, "search an action"):
            query = f"/ui/audit?action={RARE_ACTION}"
            html = visit(tour, timings, "audit search action", query)
            assert [seq for seq, _ in rows(html)] == seqs[:PER_PAGE]

        with step(tour, "the set's page: profile form, last used, no CSP refusals"):
            refusals: list[str] = []
            page.on(
                "console",
                lambda m: refusals.append(m.text) if "Content Security Policy" in m.text else None,
            )
            tour.goto("/ui/credentials?q=openai/prod")
            assert "openai/prod/default" in tour.snap("credentials searched")
            tour.goto("/ui/credentials/openai/prod/default")
            page.get_by_text("Edit the profile").click()
            html = tour.snap("set page profile form open")
            assert re.search(r'name="base_url" value="https://api\.openai\.com[^"]*"', html)
            assert "Last used, by whom" in html
            for where in ("/ui/agents?q=a", "/ui/grants", "/ui/leases", "/ui/users?q=al"):
                tour.goto(where)
                tour.snap(where)
            assert not refusals, refusals

        context.close()

    leaked = [name for name, html in tour.pages.items() if CANARY in html]
    assert not leaked, f"the canary is on {leaked}"
    assert CANARY not in server.log_text()
    report = {k: round(v, 1) for k, v in timings.items()}
    out = ROOT / "test-artifacts" / "dashboard-scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"records": RECORDS, "ms": report}, indent=2) + "\n")
    print("server time per page (ms; browser wall time in brackets):")
    for label, ms in report.items():
        print(f"  {label}: {ms}")
