"""The connect flow kept in the database: started on one node, its callback completes on
another, once, and only for the browser that started it. Two vaults on one database stand
for two nodes (SQLite; PostgreSQL too with KEYFOB_TEST_DATABASE_URL)."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from keyfob.app import create_app
from keyfob.secret import Secret
from keyfob.settings import Settings
from keyfob.vault import Context, Vault
from tests.dashboard.conftest import PASSWORD as UI_PASSWORD
from tests.dashboard.conftest import USER, csrf_of, sign_in
from tests.support.oauth_server import CLIENT_ID, FakeAuthServer
from tests.test_leak import leaks

BASE = "http://keyfob.test"
COOKIE = "keyfob_oauth"
_AUTHORIZE = re.compile(r'id="authorize" class="button" href="([^"]+)"')


@pytest.fixture
def auth() -> Iterator[FakeAuthServer]:
    fake = FakeAuthServer().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
async def nodes(
    vault: Vault, settings: Settings
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """A signed-in browser on node A, and a client of node B (same database)."""
    other = await Vault.open(settings)
    apps = [create_app(settings, vault=vault), create_app(settings, vault=other)]
    await vault.users.create(Context("operator:test"), USER, Secret(UI_PASSWORD))
    try:
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[0]), base_url=BASE) as a,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[1]), base_url=BASE) as b,
        ):
            assert (await sign_in(a)).status_code == 303
            yield a, b
    finally:
        for app in apps:
            await app.aclose()
        await other.close()


def flow_form(auth: FakeAuthServer) -> dict[str, str]:
    return {
        "client_id": CLIENT_ID,
        "client_secret": auth.client_secret,
        "scopes": "read write",
        "authorize_url": auth.url + "/authorize",
        "token_url": auth.token_url,
        "base_url": auth.url + "/api",
        "allow_private": "1",
        "environment": "test",
        "name": "multi",
    }


async def start_flow(node: httpx.AsyncClient, auth: FakeAuthServer) -> tuple[str, str]:
    """Post the generic provider's connect form: (the callback URL the provider redirects
    to, the browser cookie keyfob set)."""
    form = await node.get("/ui/connect/oauth")
    started = await node.post(
        "/ui/connect/oauth", data={"csrf": csrf_of(form.text), **flow_form(auth)}
    )
    assert started.status_code == 200, started.text
    match = _AUTHORIZE.search(started.text)
    assert match, started.text
    authorize = html.unescape(match.group(1))
    redirected = await asyncio.to_thread(httpx.get, authorize, follow_redirects=False)
    assert redirected.status_code == 302, redirected.text
    location = urlsplit(redirected.headers["location"])
    cookie = node.cookies.get(COOKIE)
    assert cookie
    return f"{location.path}?{location.query}", cookie


async def test_a_flow_started_on_one_node_completes_on_another_once(
    nodes: tuple[httpx.AsyncClient, httpx.AsyncClient], vault: Vault, auth: FakeAuthServer
) -> None:
    a, b = nodes
    callback, cookie = await start_flow(a, auth)

    # Another browser (no cookie, or a wrong one) cannot use the state, and does not spend it.
    stranger = await b.get(callback)
    wrong = await b.get(callback, headers={"cookie": f"{COOKIE}=not-the-nonce"})
    done = await b.get(callback, headers={"cookie": f"{COOKIE}={cookie}"})
    replay_a = await a.get(callback)
    replay_b = await b.get(callback, headers={"cookie": f"{COOKIE}={cookie}"})

    assert (stranger.status_code, wrong.status_code) == (400, 400)
    assert done.status_code == 200, done.text
    assert "oauth/test/multi" in done.text
    assert (replay_a.status_code, replay_b.status_code) == (400, 400)
    assert "not one keyfob started" in replay_b.text
    view = await vault.sets.get("oauth/test/multi")
    assert [k.name for k in view.keys] == ["CLIENT_ID", "CLIENT_SECRET", "REFRESH_TOKEN"]
    assert auth.reused == []
    pages = {
        name: r.content for name, r in {"done": done, "replay": replay_b, "wrong": wrong}.items()
    }
    assert leaks([*auth.issued, auth.client_secret], pages) == []


async def test_a_flow_whose_starter_was_disabled_stores_nothing(
    nodes: tuple[httpx.AsyncClient, httpx.AsyncClient], vault: Vault, auth: FakeAuthServer
) -> None:
    a, b = nodes
    callback, cookie = await start_flow(a, auth)
    await vault.users.set_disabled(Context("operator:test"), USER, True)

    answer = await b.get(callback, headers={"cookie": f"{COOKIE}={cookie}"})

    assert answer.status_code == 403
    assert (await vault.sets.search())[0] == []
    assert auth.issued == []  # the code was never exchanged


async def test_only_an_operator_starts_and_the_stored_flow_holds_no_secret_in_clear(
    nodes: tuple[httpx.AsyncClient, httpx.AsyncClient],
    vault: Vault,
    settings: Settings,
    auth: FakeAuthServer,
) -> None:
    a, b = nodes
    # Only a signed-in operator starts a flow: node B's client has no session.
    anonymous = await b.post("/ui/connect/oauth", data=flow_form(auth))
    assert anonymous.status_code in (303, 401, 403)
    callback, cookie = await start_flow(a, auth)
    state = dict(p.split("=", 1) for p in callback.split("?", 1)[1].split("&"))["state"]

    from sqlalchemy import text

    async with vault.db.read() as conn:
        rows = (await conn.execute(text("SELECT * FROM oauth_flows"))).all()
    dumped = repr(rows).encode()
    assert len(rows) == 1
    assert leaks([auth.client_secret, state, cookie], {"oauth_flows": dumped}) == []
