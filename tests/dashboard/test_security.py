"""The dashboard's security properties: CSRF, headers, cookie flags, sign-out, sign-in backoff."""

from __future__ import annotations

import json
from http.cookies import SimpleCookie

import httpx
import pytest

from keyfob.app import create_app
from keyfob.settings import Settings
from keyfob.vault import Vault
from keyfob.vault.users import BASE_LOCK, FREE_ATTEMPTS

from .conftest import PASSWORD, USER, Ui, csrf_of, sign_in

WRONG = "not the password at all"

# Pages that must carry the headers whether or not they exist yet (404 pages are /ui too).
PAGES = [
    "/ui/",
    "/ui/credentials",
    "/ui/credentials/new",
    "/ui/agents",
    "/ui/grants",
    "/ui/leases",
    "/ui/audit",
    "/ui/no-such-page",
    "/ui/static/keyfob.css",
    "/ui/static/keyfob.js",
]


def plain(
    vault: Vault, settings: Settings, base_url: str = "http://keyfob.test"
) -> httpx.AsyncClient:
    """A client with no session, on the same vault as the ``ui`` fixture."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, vault=vault)), base_url=base_url
    )


def cookie_attributes(response: httpx.Response, name: str) -> dict[str, str | bool]:
    """The attributes of the ``Set-Cookie`` for ``name`` (keys lower-cased)."""
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if name in jar:
            morsel = jar[name]
            attributes: dict[str, str | bool] = {"value": morsel.value}
            for part in header.split(";")[1:]:
                key, _, value = part.strip().partition("=")
                attributes[key.lower()] = value or True
            return attributes
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers.get_list('set-cookie')}")


def assert_security_headers(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    csp = response.headers.get("content-security-policy", "")
    assert csp, f"no Content-Security-Policy on {where}"
    assert "'unsafe-inline'" not in csp, where
    assert "'unsafe-eval'" not in csp, where
    assert "frame-ancestors 'none'" in csp, where
    assert response.headers.get("x-frame-options") == "DENY", where
    assert response.headers.get("referrer-policy") == "no-referrer", where


async def failed_logins(vault: Vault) -> list[dict[str, object]]:
    events = await vault.audit.query(action="user.login_failed", limit=100)
    return [e.details | {"target": e.target, "outcome": e.outcome} for e in events]


# --- CSRF ---------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong-token-0123456789abcdef"])
async def test_a_form_post_without_the_right_csrf_token_is_refused(ui: Ui, token: str | None):
    data = {} if token is None else {"csrf": token}

    answer = await ui.http.post("/ui/logout", data=data)

    assert answer.status_code == 403
    assert "CSRF" in answer.text
    assert_security_headers(answer)
    # Nothing changed: the session still works.
    still = await ui.get("/ui/")
    assert still.status_code == 200
    assert USER in still.text


async def test_a_csrf_token_from_another_session_is_refused(
    ui: Ui, vault: Vault, settings: Settings
):
    async with plain(vault, settings) as other:
        assert (await sign_in(other)).status_code == 303
        foreign = csrf_of((await other.get("/ui/")).text)
        mine = csrf_of((await ui.get("/ui/")).text)
        assert foreign != mine

        answer = await ui.http.post("/ui/logout", data={"csrf": foreign})

        assert answer.status_code == 403
        assert (await ui.get("/ui/")).status_code == 200
        assert (await other.get("/ui/")).status_code == 200


async def test_sign_in_needs_the_double_submit_cookie(ui: Ui, vault: Vault, settings: Settings):
    form = {"name": USER, "password": PASSWORD}
    async with plain(vault, settings) as fresh:
        # A cross-site form post: no login-CSRF cookie at all.
        no_cookie = await fresh.post("/ui/login", data={**form, "csrf": "forged"})
        # The cookie is there, but the form's token does not match it.
        await fresh.get("/ui/login")
        mismatch = await fresh.post("/ui/login", data={**form, "csrf": "forged"})
        # No token in the form.
        missing = await fresh.post("/ui/login", data=form)

        for answer in (no_cookie, mismatch, missing):
            assert answer.status_code == 403
            assert "The form expired" in answer.text
            assert "kf_session" not in answer.headers.get("set-cookie", "")
        assert (await fresh.get("/ui/")).status_code == 303  # still signed out

        good = await sign_in(fresh)
        assert good.status_code == 303
        assert good.headers["location"] == "/ui/"


# --- headers --------------------------------------------------------------------------------


async def test_every_ui_response_has_the_security_headers(ui: Ui, vault: Vault, settings: Settings):
    for url in PAGES:
        assert_security_headers(await ui.get(url))
    assert_security_headers(await ui.http.post("/ui/logout", data={}))  # the CSRF refusal
    async with plain(vault, settings) as anonymous:
        assert_security_headers(await anonymous.get("/ui/login"))
        assert_security_headers(await anonymous.post("/ui/login", data={}))
        for url in PAGES:
            assert_security_headers(await anonymous.get(url))  # redirects to sign in
        assert_security_headers(await sign_in(anonymous, USER, WRONG))
        assert_security_headers(await sign_in(anonymous))


# --- cookies --------------------------------------------------------------------------------


async def test_session_cookie_is_httponly_and_strict_but_not_secure_over_http(
    ui: Ui, vault: Vault, settings: Settings
):
    async with plain(vault, settings) as http:
        login_form = await http.get("/ui/login")
        csrf_cookie = cookie_attributes(login_form, "kf_login_csrf")
        answer = await sign_in(http)

    session = cookie_attributes(answer, "kf_session")
    assert session["httponly"] is True
    assert str(session["samesite"]).lower() == "strict"
    assert str(session["path"]) == "/ui"
    assert "secure" not in session
    assert "max-age" not in session  # a browser-session cookie: gone when the browser closes
    assert "expires" not in session
    assert csrf_cookie["httponly"] is True
    assert str(csrf_cookie["samesite"]).lower() == "strict"


async def test_cookies_are_secure_over_https(ui: Ui, vault: Vault, settings: Settings):
    async with plain(vault, settings, base_url="https://keyfob.test") as https:
        login_form = await https.get("/ui/login")
        answer = await sign_in(https)
        assert (await https.get("/ui/")).status_code == 200

    assert cookie_attributes(login_form, "kf_login_csrf")["secure"] is True
    session = cookie_attributes(answer, "kf_session")
    assert session["secure"] is True
    assert session["httponly"] is True
    assert str(session["samesite"]).lower() == "strict"


# --- sign-out -------------------------------------------------------------------------------


async def test_sign_out_ends_the_session(ui: Ui, vault: Vault, settings: Settings):
    old = ui.http.cookies["kf_session"]

    answer = await ui.post("/ui/logout", {}, form_page="/ui/")

    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login?done=signed-out"
    assert cookie_attributes(answer, "kf_session")["value"] == ""
    async with plain(vault, settings) as replay:
        replay.cookies.set("kf_session", old, domain="keyfob.test", path="/ui")
        again = await replay.get("/ui/")
        assert again.status_code == 303
        assert again.headers["location"] == "/ui/login"
    events = await vault.audit.query(action="user.logout")
    assert [e.actor for e in events] == [f"user:{ui.user_id}"]


async def test_a_made_up_session_cookie_is_sent_to_sign_in(vault: Vault, settings: Settings):
    async with plain(vault, settings) as http:
        http.cookies.set("kf_session", "x" * 43, domain="keyfob.test", path="/ui")
        answer = await http.get("/ui/")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login"


# --- backoff --------------------------------------------------------------------------------


async def test_failed_sign_ins_lock_the_account_and_are_audited(
    ui: Ui, vault: Vault, settings: Settings
):
    async with plain(vault, settings) as http:
        for _ in range(FREE_ATTEMPTS):
            wrong = await sign_in(http, USER, WRONG)
            assert wrong.status_code == 401
            assert "Wrong user name or password" in wrong.text

        locked = await sign_in(http)  # the right password, but too late

        assert locked.status_code == 429
        assert "Try again in" in locked.text
        assert "kf_session" not in locked.headers.get("set-cookie", "")
        assert (await http.get("/ui/")).status_code == 303

    failures = await failed_logins(vault)
    assert len(failures) == FREE_ATTEMPTS + 1
    assert {f["reason"] for f in failures[:FREE_ATTEMPTS]} == {"bad_password"}
    assert [f["failures"] for f in failures[:FREE_ATTEMPTS]] == list(range(1, FREE_ATTEMPTS + 1))
    assert [f["locked_for"] for f in failures[:FREE_ATTEMPTS]] == [0] * (FREE_ATTEMPTS - 1) + [
        BASE_LOCK
    ]
    assert failures[-1]["reason"] == "locked"
    assert {f["target"] for f in failures} == {f"user:{ui.user_id}"}
    assert {f["outcome"] for f in failures} == {"denied"}
    # The session signed in before the lock is untouched.
    assert (await ui.get("/ui/")).status_code == 200


async def test_an_unknown_user_name_is_audited(vault: Vault, settings: Settings):
    async with plain(vault, settings) as http:
        answer = await sign_in(http, "mallory", PASSWORD)

    assert answer.status_code == 401
    assert "Wrong user name or password" in answer.text  # the same words as a bad password
    [failure] = await failed_logins(vault)
    assert failure["reason"] == "unknown_user"
    assert failure["name_hash"] == vault.users.name_hash("mallory")
    assert "mallory" not in json.dumps(failure)
    assert failure["target"] == "user:?"


# --- the audit export never holds a credential ----------------------------------------------


async def test_no_password_hash_or_session_token_in_the_audit_export(
    ui: Ui, vault: Vault, settings: Settings, client: httpx.AsyncClient
):
    tokens = [ui.http.cookies["kf_session"]]
    async with plain(vault, settings) as http:
        await sign_in(http, USER, WRONG)
        await sign_in(http, "mallory", WRONG + "-2")
        await sign_in(http)
        tokens.append(http.cookies["kf_session"])
        await http.post("/ui/logout", data={"csrf": csrf_of((await http.get("/ui/")).text)})
    created = await client.post("/v1/users", json={"name": "bob", "password": PASSWORD + "-bob"})
    assert created.status_code == 201, created.text
    assert "password" not in created.text

    export = await client.get("/v1/audit/export")

    assert export.status_code == 200
    events = [json.loads(line) for line in export.text.splitlines()]
    actions = {event["action"] for event in events}
    assert {"user.create", "user.login", "user.login_failed", "user.logout"} <= actions
    for secret in (PASSWORD, WRONG, WRONG + "-2", PASSWORD + "-bob", *tokens):
        assert secret not in export.text
    assert "$argon2" not in export.text
    assert "password_hash" not in export.text
