"""The dashboard in a real browser: headless Debian Chromium against a live keyfob server.

One tour walks what a person does: sign in, add an OpenAI key through the service picker,
create agents and grants, watch a lease appear, approve a pending one, revoke one, follow
each step on the audit page, sign out. Every page is screenshotted under
``test-artifacts/screenshots/``; the canary key must never appear in a page, a URL, a
redirect or the server log. A step whose page is missing or unfinished fails and says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.conftest import CANARY
from tests.support.browser import Tour, chromium_path, launch, step
from tests.support.server import LiveServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        chromium_path() is None,
        reason="no chromium binary (apt-get install chromium) for the dashboard browser test",
    ),
]

USER = "alice"
PASSWORD = "correct horse battery staple"
SET = "openai/prod/default"
_AGENT_TOKEN = re.compile(r"kfa_[A-Za-z0-9_\-]{20,}")


@pytest.fixture
def browser() -> Iterator[Browser]:
    with launch() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def operator_api(live_server: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {live_server.operator_token}"}
    with httpx.Client(base_url=live_server.url, headers=headers, timeout=30) as http:
        created = http.post("/v1/users", json={"name": USER, "password": PASSWORD})
        assert created.status_code == 201, created.text
        yield http


def agent_api(server: LiveServer, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def sign_in(tour: Tour) -> None:
    page = tour.page
    with step(tour, "sign in"):
        tour.goto("/ui/")
        assert tour.path().startswith("/ui/login"), f"not sent to sign in: {tour.path()}"
        tour.snap("sign in form")
        page.fill("input[name=name]", USER)
        page.fill("input[name=password]", PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{tour.base_url}/ui/")
        assert "Overview" in tour.snap("overview after sign in")


def add_openai_credential(tour: Tour, operator: httpx.Client) -> None:
    page = tour.page
    hint = "the credentials page: /ui/credentials/new, link 'OpenAI', a password field, Save"
    with step(tour, "add an OpenAI credential", hint):
        tour.goto("/ui/credentials/new")
        tour.snap("credentials service picker")
        page.get_by_role("link", name="OpenAI", exact=True).click()
        page.wait_for_load_state("load")
        secret = page.locator("input[type=password]").first
        secret.fill(CANARY)
        form = page.locator("form", has=page.locator("input[type=password]"))
        for field, default in (("environment", "prod"), ("name", "default")):
            box = form.locator(f"input[name={field}]")
            if box.count() and not box.input_value():
                box.fill(default)
        tour.snap("credentials openai form filled")
        form.locator("button[type=submit]").first.click()
        page.wait_for_load_state("load")
        tour.snap("credential saved")
        answer = operator.get(f"/v1/secret-sets/{SET}")
        assert answer.status_code == 200, f"no {SET} after saving: {answer.text}"
        assert [k["name"] for k in answer.json()["keys"]] == ["OPENAI_API_KEY"]
        tour.goto("/ui/credentials")
        assert SET in tour.snap("credentials list"), f"{SET} is not listed on /ui/credentials"


def create_agent(tour: Tour, name: str) -> str:
    """Create an agent on /ui/agents; its token is read off the page that shows it once."""
    page = tour.page
    with step(tour, f"create agent {name}", "the agents page: /ui/agents, field 'name'"):
        tour.goto("/ui/agents")
        tour.snap(f"agents before {name}")
        form = page.locator("form", has=page.locator("input[name=name]"))
        form.locator("input[name=name]").fill(name)
        form.locator("button[type=submit]").click()
        page.wait_for_load_state("load")
        html = tour.snap(f"agent {name} created token shown once")
        found = _AGENT_TOKEN.search(html)
        assert found, "the agent's token is not shown after creating it"
        return found.group(0)


def create_grant(tour: Tour, operator: httpx.Client, agent: str, *, approval: bool) -> None:
    page = tour.page
    hint = "the grants page: /ui/grants/new, selects 'agent', 'secret_set', 'approval'"
    with step(tour, f"grant {agent} {SET}", hint):
        tour.goto(f"/ui/grants/new?agent={agent}&secret_set={SET}")
        form = page.locator("form", has=page.locator("select[name=agent]"))
        form.locator("select[name=agent]").select_option(label=agent)
        form.locator("select[name=secret_set]").select_option(value=SET)
        if approval:
            form.locator("select[name=approval]").select_option("required")
        tour.snap(f"grant form {agent}")
        form.locator("button[type=submit]").first.click()
        page.wait_for_load_state("load")
        tour.snap(f"grant for {agent} created")
        grants = operator.get("/v1/grants", params={"agent": agent}).json()["items"]
        assert [(g["secret_set"], g["approval"]) for g in grants] == [
            (SET, "required" if approval else "none")
        ], f"the grant was not created as asked: {grants}"


def copy_mcp_config(tour: Tour) -> None:
    """The set page's agent panel: the MCP snippet's Copy button puts valid JSON on the
    clipboard, naming this keyfob and no token."""
    page = tour.page
    hint = "the set page's 'Use it from an agent' panel: <pre id=snippet-mcp> and its Copy button"
    with step(tour, "copy the MCP config from the set page", hint):
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=tour.base_url)
        tour.goto(f"/ui/credentials/{SET}")
        assert "Use it from an agent" in tour.snap("set page with the agent panel")
        button = page.locator("button[data-copy='#snippet-mcp']")
        button.click()
        page.wait_for_function(
            "document.querySelector(\"button[data-copy='#snippet-mcp']\").textContent === 'Copied'"
        )
        copied = page.evaluate("navigator.clipboard.readText()")
        server = json.loads(copied)["mcpServers"]["keyfob"]
        assert server["env"]["KEYFOB_ADDR"] == tour.base_url, server
        assert server["args"][:2] == ["mcp", "--token-file"], server
        assert not _AGENT_TOKEN.search(copied)
        assert CANARY not in copied


def see_in_audit(tour: Tour, *actions: str) -> None:
    with step(tour, f"see {', '.join(actions)} on the audit page", "/ui/audit"):
        tour.goto("/ui/audit")
        html = tour.snap(f"audit after {actions[-1]}")
        missing = [action for action in actions if action not in html]
        assert not missing, f"not on /ui/audit: {missing}"


def lease_row(page: Page, lease_id: str) -> Any:
    return page.locator("tr", has_text=lease_id)


def test_a_person_manages_keyfob_in_the_browser(
    live_server: LiveServer, operator_api: httpx.Client, page: Page
):
    tour = Tour(page, live_server.url, prefix="tour")

    sign_in(tour)
    see_in_audit(tour, "user.create", "user.login")

    add_openai_credential(tour, operator_api)
    see_in_audit(tour, "secret_set.create")
    copy_mcp_config(tour)

    worker = create_agent(tour, "billing-bot")
    create_grant(tour, operator_api, "billing-bot", approval=False)
    reviewed = create_agent(tour, "review-bot")
    create_grant(tour, operator_api, "review-bot", approval=True)
    see_in_audit(tour, "agent.create", "grant.create")

    with step(tour, "see a minted lease on /ui/leases", "the leases page"):
        with agent_api(live_server, worker) as agent:
            minted = agent.post("/v1/leases", json={"secret_set": SET, "scope": "request"})
        assert minted.status_code == 201, minted.text
        lease_id = minted.json()["id"]
        tour.goto("/ui/leases")
        html = tour.snap("leases with one active lease")
        assert lease_id in html, f"lease {lease_id} is not listed on /ui/leases"
    see_in_audit(tour, "lease.mint")

    with step(tour, "approve a pending lease request", "the leases page, button 'Approve'"):
        with agent_api(live_server, reviewed) as agent:
            pending = agent.post("/v1/leases", json={"secret_set": SET, "scope": "request"})
            assert pending.status_code == 202, pending.text
            request_id = pending.json()["id"]
            tour.goto("/ui/leases")
            tour.snap("leases with a pending request")
            row = page.locator("tr", has=page.get_by_role("button", name="Approve")).filter(
                has_text="review-bot"
            )
            row.get_by_role("button", name="Approve").click()
            page.wait_for_load_state("load")
            tour.snap("leases after approval")
            polled = agent.get(f"/v1/me/lease-requests/{request_id}").json()
        assert polled["status"] in ("approved", "issued"), polled
        assert polled.get("decided_by", "").startswith("user:") or polled["status"] == "issued"
    see_in_audit(tour, "lease.request", "lease.approve")

    with step(tour, "revoke a lease", "the leases page, button 'Revoke' in the lease's row"):
        tour.goto("/ui/leases")
        lease_row(page, lease_id).get_by_role("button", name="Revoke").click()
        page.wait_for_load_state("load")
        tour.snap("leases after revoking one")
        leases = operator_api.get("/v1/leases", params={"all": "true"}).json()["items"]
        [lease] = [item for item in leases if item["id"] == lease_id]
        assert lease["revoked_at"], lease
    see_in_audit(tour, "lease.revoke")

    with step(tour, "sign out"):
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(re.compile(r".*/ui/login\?done=signed-out$"))
        assert "Signed out." in tour.snap("signed out")
        tour.goto("/ui/leases")
        assert tour.path().startswith("/ui/login"), "a signed-out browser still sees /ui/leases"
        tour.snap("after sign out back to sign in")

    # What the whole tour saw: the canary key never left the form it was typed into.
    assert len(tour.screenshots) >= 20
    assert all(shot.stat().st_size > 0 for shot in tour.screenshots)
    leaked = [name for name, html in tour.pages.items() if CANARY in html]
    assert not leaked, f"the canary is in the HTML of {leaked}"
    assert not [seen.url for seen in tour.responses if CANARY in seen.url]
    assert not [seen.location for seen in tour.responses if CANARY in (seen.location or "")]
    assert CANARY not in live_server.log_text()
    # Every dashboard response the browser got carried the security headers.
    for seen in tour.responses:
        if seen.url.startswith(live_server.url + "/ui"):
            assert seen.headers.get("x-frame-options") == "DENY", seen.url
            assert "frame-ancestors 'none'" in seen.headers["content-security-policy"], seen.url


def test_the_dashboard_cannot_be_framed(
    live_server: LiveServer, operator_api: httpx.Client, page: Page
):
    tour = Tour(page, live_server.url, prefix="framing")
    sign_in(tour)
    direct = tour.goto("/ui/")
    assert direct is not None
    assert direct.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in direct.headers["content-security-policy"]
    # A page served from the dashboard's own origin (by the browser itself; PNA keeps a
    # public origin from framing loopback at all) frames the dashboard and, as a control,
    # a page without the headers. Even same-origin framing must be refused.
    attacker = live_server.url + "/framer.html"
    frames = (
        f'<iframe id="ui" src="{live_server.url}/ui/"></iframe>'
        f'<iframe id="control" src="{live_server.url}/healthz"></iframe>'
    )
    page.route(
        attacker,
        lambda route: route.fulfill(
            status=200, content_type="text/html", body=f"<h1>framer</h1>{frames}"
        ),
    )

    page.goto(attacker, wait_until="load")
    page.wait_for_timeout(500)
    tour.snap("framing attempt")

    children = [frame.url for frame in page.frames if frame != page.main_frame]
    assert f"{live_server.url}/healthz" in children, f"the control did not load: {children}"
    assert not [url for url in children if "/ui" in url], f"the dashboard was framed: {children}"
    ui_frame = page.frame_locator("#ui")
    assert ui_frame.locator("form[action='/ui/logout']").count() == 0
