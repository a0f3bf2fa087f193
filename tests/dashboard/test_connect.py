"""Connect an OAuth provider from the dashboard: authorization code + PKCE + state.

In Chromium: an operator connects the generic OAuth provider (the fake authorization
server), the set appears, and an agent's proxied call works with it. Without a browser:
the callback takes only a state this server handed out, and only from the starting
browser. No refresh token, access token or client secret shows in a page or the log.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser

from tests.conftest import make_set
from tests.support import loopback
from tests.support.browser import Tour, chromium_path, launch, step
from tests.support.oauth_server import CLIENT_ID, FakeAuthServer
from tests.support.server import LiveServer
from tests.test_leak import leaks

USER = "olivia"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def auth() -> Iterator[FakeAuthServer]:
    fake = FakeAuthServer().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def operator(live_server: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {live_server.operator_token}"}
    with httpx.Client(base_url=live_server.url, headers=headers, timeout=30) as http:
        created = http.post("/v1/users", json={"name": USER, "password": PASSWORD})
        assert created.status_code == 201, created.text
        yield http


def issued_refresh_tokens(auth: FakeAuthServer) -> list[str]:
    assert auth.issued, "the provider issued no refresh token"
    return list(auth.issued)


def test_a_callback_with_a_state_keyfob_did_not_issue_is_refused(
    live_server: LiveServer, operator: httpx.Client
) -> None:
    answer = loopback.get(
        f"{live_server.url}/ui/connect/callback",
        params={"state": "made-up", "code": "stolen-code"},
        timeout=30,
    )
    assert answer.status_code == 400
    assert "not one keyfob started" in answer.text
    assert operator.get("/v1/secret-sets").json()["items"] == []


@pytest.mark.slow
@pytest.mark.skipif(chromium_path() is None, reason="no chromium binary (apt-get install chromium)")
def test_connect_generic_oauth_in_the_browser_then_proxy_with_it(
    live_server: LiveServer, operator: httpx.Client, auth: FakeAuthServer
) -> None:
    with launch() as chromium:
        run_tour(chromium, live_server, auth)
    # The set exists with the refresh token the provider issued, and it proxies.
    path = "oauth/test/connected"
    shown = operator.get(f"/v1/secret-sets/{path}")
    assert shown.status_code == 200, shown.text
    assert [k["name"] for k in shown.json()["keys"]] == [
        "CLIENT_ID",
        "CLIENT_SECRET",
        "REFRESH_TOKEN",
    ]
    agent = operator.post("/v1/agents", json={"name": "connector"}).json()
    granted = operator.post("/v1/grants", json={"agent": "connector", "secret_set": path})
    assert granted.status_code == 201, granted.text
    lease = loopback.post(
        f"{live_server.url}/v1/leases",
        json={"secret_set": path},
        headers={"Authorization": f"Bearer {agent['token']}"},
        timeout=30,
    ).json()["token"]
    proxied = loopback.get(
        f"{live_server.url}/proxy/{path}/things",
        headers={"Authorization": f"Bearer {lease}"},
        timeout=30,
    )
    assert proxied.status_code == 200, proxied.text
    assert proxied.json()["ok"] is True
    assert auth.reused == []
    log = live_server.log_path.read_bytes()
    secrets = [*issued_refresh_tokens(auth), *auth.access, auth.client_secret]
    assert leaks(secrets, {"server log": log}) == []
    assert operator.post("/v1/secret-sets", json=make_set()).status_code == 201


def run_tour(chromium: Browser, live_server: LiveServer, auth: FakeAuthServer) -> None:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    tour = Tour(page, live_server.url, prefix="connect")
    try:
        with step(tour, "sign in"):
            tour.goto("/ui/")
            page.fill("input[name=name]", USER)
            page.fill("input[name=password]", PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{tour.base_url}/ui/")
        with step(tour, "pick the generic OAuth provider"):
            tour.goto("/ui/credentials/new")
            page.get_by_role("link", name="Connect with OAuth").click()
            page.get_by_role("link", name="Connect Other (generic OAuth 2.0)").click()
            tour.snap("connect form")
        with step(tour, "fill and connect"):
            page.fill("input[name=client_id]", CLIENT_ID)
            page.fill("input[name=client_secret]", auth.client_secret)
            page.fill("input[name=scopes]", "read write")
            page.fill("input[name=authorize_url]", auth.url + "/authorize")
            page.fill("input[name=token_url]", auth.token_url)
            page.fill("input[name=base_url]", auth.url + "/api")
            page.check("input[name=allow_private]")
            page.fill("input[name=environment]", "test")
            page.fill("input[name=name]", "connected")
            page.get_by_role("button", name="Connect").click()
            page.wait_for_url(f"{tour.base_url}/ui/connect/oauth")
            tour.snap("continue to the provider")
            page.click("#authorize")
            page.wait_for_url(f"{tour.base_url}/ui/connect/callback*")
            assert "Connected" in tour.snap("connected")
        with step(tour, "the set appears"):
            page.click("#connected-set")
            html = tour.snap("set page")
            assert "oauth/test/connected" in html
            assert "REFRESH_TOKEN" in html
            tour.goto("/ui/credentials")
            assert "oauth/test/connected" in tour.snap("credentials list")
        secrets = [*issued_refresh_tokens(auth), auth.client_secret]
        pages = {name: html.encode() for name, html in tour.pages.items()}
        urls = {
            "urls": "\n".join(s.url + " " + (s.location or "") for s in tour.responses).encode()
        }
        assert leaks(secrets, {**pages, **urls}) == []
    finally:
        context.close()
