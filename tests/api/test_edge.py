"""The request edge: the Host allow-list, trusted proxies, and /docs without a CDN.

Each failed before the fix: any Host was answered, forwarded headers never made a
request count as https, and /docs loaded Swagger UI from cdn.jsdelivr.net.
"""

from __future__ import annotations

import re

import httpx
import pytest

from keyfob.app import create_app
from keyfob.app.edge import Edge
from keyfob.settings import Settings
from keyfob.vault import Vault
from tests.dashboard.conftest import PASSWORD, csrf_of, sign_in
from tests.support import loopback
from tests.support.server import LiveServer

ROUTES = ["/healthz", "/v1/secret-sets", "/ui/login", "/proxy/openai/prod/default/v1/models"]


def app_client(
    vault: Vault, settings: Settings, base_url: str = "http://keyfob.test", **update: object
) -> httpx.AsyncClient:
    app = create_app(settings.model_copy(update=update), vault=vault)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


# --- item 6: Host allow-list ---------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
async def test_a_foreign_host_gets_421_on_every_route(
    vault: Vault, settings: Settings, route: str
) -> None:
    async with app_client(vault, settings) as http:
        answer = await http.get(route, headers={"host": "rebind.attacker.example"})
    assert answer.status_code == 421
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "urn:keyfob:problem:misdirected-request"


@pytest.mark.parametrize(
    ("allowed", "host", "status"),
    [
        (None, "localhost:8200", 200),
        (None, "127.0.0.1", 200),
        (None, "[::1]:9999", 200),
        (None, "LOCALHOST", 200),
        (None, "localhost.attacker.example", 421),
        (["vault.example.com"], "vault.example.com:443", 200),
        (["vault.example.com"], "localhost", 421),
        (["*"], "anything.example", 200),
    ],
)
async def test_the_allow_list(
    vault: Vault, settings: Settings, allowed: list[str] | None, host: str, status: int
) -> None:
    async with app_client(vault, settings, allowed_hosts=allowed) as http:
        answer = await http.get("/healthz", headers={"host": host})
    assert answer.status_code == status


def test_the_live_server_answers_its_address_and_loopback_names_only(
    live_server: LiveServer,
) -> None:
    port = live_server.url.rsplit(":", 1)[1]
    for host, status in [
        (f"127.0.0.1:{port}", 200),
        (f"localhost:{port}", 200),
        (f"rebind.attacker.example:{port}", 421),
    ]:
        answer = loopback.get(live_server.url + "/ui/login", headers={"host": host})
        assert answer.status_code == status, host


# --- item 5: trusted proxies ---------------------------------------------------------------


async def _login_answer(http: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    """Sign in as alice; the login CSRF cookie is sent by hand (it may be ``Secure``, and
    the test client itself speaks plain http to the proxy-facing app)."""
    form = await http.get("/ui/login", headers=headers)
    token = csrf_of(form.text)
    return await http.post(
        "/ui/login",
        data={"csrf": token, "name": "alice", "password": PASSWORD},
        headers={**headers, "cookie": f"kf_login_csrf={token}"},
    )


@pytest.fixture
async def alice(vault: Vault) -> Vault:
    from keyfob.secret import Secret
    from keyfob.vault import Context

    await vault.users.create(Context("operator:test"), "alice", Secret(PASSWORD))
    return vault


@pytest.mark.parametrize(
    "forwarded",
    [{"x-forwarded-proto": "https"}, {"forwarded": 'for="203.0.113.5";proto=https'}],
)
async def test_a_trusted_proxy_makes_the_cookie_secure_and_sends_hsts(
    alice: Vault, settings: Settings, forwarded: dict[str, str]
) -> None:
    async with app_client(alice, settings, trusted_proxies=["127.0.0.0/8"]) as http:
        answer = await _login_answer(http, forwarded)
    assert answer.status_code == 303
    cookie = next(h for h in answer.headers.get_list("set-cookie") if "kf_session" in h)
    assert "secure" in cookie.lower()
    assert answer.headers["strict-transport-security"] == "max-age=31536000"


async def test_forwarded_headers_from_anyone_else_are_ignored(
    alice: Vault, settings: Settings
) -> None:
    for proxies in ([], ["10.0.0.0/8"]):
        async with app_client(alice, settings, trusted_proxies=proxies) as http:
            answer = await _login_answer(
                http, {"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.5"}
            )
        assert answer.status_code == 303
        cookie = next(h for h in answer.headers.get_list("set-cookie") if "kf_session" in h)
        assert "secure" not in cookie.lower()
        assert "strict-transport-security" not in answer.headers


async def test_a_trusted_proxy_names_the_client_for_the_sign_in_limits(
    alice: Vault, settings: Settings
) -> None:
    """Behind a proxy each client has its own address limit, not the proxy's."""
    async with app_client(alice, settings, trusted_proxies=["127.0.0.1"]) as http:
        http.headers["x-forwarded-for"] = "198.51.100.1, 127.0.0.1"
        for i in range(25):
            await sign_in(http, f"nobody-{i}", "wrong password here")
        http.headers["x-forwarded-for"] = "198.51.100.2"
        assert (await sign_in(http, "alice", PASSWORD)).status_code == 303


def test_trusted_proxies_must_be_addresses() -> None:
    with pytest.raises(ValueError, match="CIDR"):
        Settings(trusted_proxies=["not-an-address"])
    assert Settings(trusted_proxies="10.0.0.0/8, ::1").trusted_proxies == ["10.0.0.0/8", "::1"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (b'for="[2001:db8::1]:4711";proto=https', "2001:db8::1"),
        (b"for=198.51.100.7:8080;proto=https", "198.51.100.7"),
        (b'for=203.0.113.9, for="[::1]"', "203.0.113.9"),
    ],
)
def test_forwarded_for_is_an_address_without_port_or_brackets(header: bytes, client: str) -> None:
    """The sign-in limits key on the address: ``[2001:db8::1]:4711`` is 2001:db8::1."""
    edge = Edge(Settings(trusted_proxies=["127.0.0.1", "::1"]))
    scope = {"client": ("127.0.0.1", 5000), "scheme": "http", "headers": [(b"forwarded", header)]}
    assert edge.forwarded(scope)["client"] == (client, 0)


# --- item 16: /docs from the package ---------------------------------------------------------


async def test_docs_load_nothing_from_a_cdn_and_have_a_strict_csp(
    vault: Vault, settings: Settings
) -> None:
    async with app_client(vault, settings) as http:
        page = await http.get("/docs")
        assert page.status_code == 200
        assert "cdn" not in page.text
        assert "https://" not in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert "<script>" not in page.text  # no inline script: the CSP would block it
        for src in re.findall(r'(?:src|href)="([^"]+)"', page.text):
            asset = await http.get(src)
            assert asset.status_code == 200, src
            assert len(asset.content) > 100
        assert (await http.get("/openapi.json")).status_code == 200
