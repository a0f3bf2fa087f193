"""Refreshed credentials through the proxy: OAuth grants, service accounts, GitHub Apps.

A fake authorization server (tests/support/oauth_server.py) issues the tokens and answers
the API; it records a refresh token used twice, which must never happen.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.proxy.factories import Proxied, audit, proxied, unique
from tests.support import loopback
from tests.support.http import assert_problem
from tests.support.oauth_server import CLIENT_ID, FakeAuthServer


@pytest.fixture(scope="module")
def auth() -> Iterator[FakeAuthServer]:
    fake = FakeAuthServer().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(autouse=True)
def _no_refresh_token_used_twice(auth: FakeAuthServer) -> Iterator[None]:
    auth.lifetime, auth.rotate, auth.fail_next, auth.delay = 3600, True, 0, 0.0
    auth.clock_behind, auth.on_dead_refresh = 0.0, None
    yield
    assert auth.reused == [], "a refresh token was used twice"


def oauth_profile(
    auth: FakeAuthServer, grant: str = "refresh_token", **inject: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "kind": "oauth2",
        "grant": grant,
        "token_url": auth.token_url,
        "client_id": "CLIENT_ID",
        "client_secret": "CLIENT_SECRET",
        "scopes": ["read", "write"],
        **inject,
    }
    if grant == "refresh_token":
        spec.setdefault("refresh_token", "REFRESH_TOKEN")
    return {
        "base_url": auth.url + "/api",
        "hosts": [auth.host],
        "inject": spec,
        "allow_private_upstream": True,
    }


def refresh_set(operator: httpx.Client, auth: FakeAuthServer, **profile: Any) -> Proxied:
    entries = {
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": auth.client_secret,
        "REFRESH_TOKEN": auth.new_refresh_token(),
    }
    return proxied(operator, {**oauth_profile(auth), **profile}, entries, provider="oauth")


def call(
    target: Proxied, lease: str | None = None, method: str = "GET", **kw: Any
) -> httpx.Response:
    lease = lease or target.lease()
    return loopback.request(
        method,
        target.url("/things"),
        headers={"Authorization": f"Bearer {lease}"},
        timeout=30,
        **kw,
    )


def test_client_credentials_token_is_minted_once_and_injected(
    operator: httpx.Client, auth: FakeAuthServer
) -> None:
    target = proxied(
        operator,
        oauth_profile(auth, "client_credentials"),
        {"CLIENT_ID": CLIENT_ID, "CLIENT_SECRET": auth.client_secret},
        provider="oauth",
    )
    before = auth.token_calls
    lease = target.lease()
    first = call(target, lease)
    assert first.status_code == 200, first.text
    assert first.json()["ok"] is True
    second = call(target, lease)
    assert second.json()["token"] == first.json()["token"]
    assert auth.token_calls == before + 1  # cached, not minted per request


def test_refresh_token_rotation_is_saved_as_a_new_version_before_use(
    operator: httpx.Client, auth: FakeAuthServer
) -> None:
    target = refresh_set(operator, auth)
    answer = call(target)
    assert answer.status_code == 200, answer.text
    versions = operator.get(f"/v1/secret-sets/{target.set_path}/versions").json()
    assert versions["items"][0]["version"] == 2
    events = audit(operator, target=f"secret_set:{target.set_path}")
    actions = [e["action"] for e in events]
    assert "secret_set.rotate" in actions
    assert actions.index("secret_set.rotate") < actions.index("credential.refresh")
    # The stored refresh token is the rotated one: a forced refresh uses it without reuse.
    auth.expire_access()
    again = call(target)
    assert again.status_code == 200, again.text
    assert again.json()["token"] != answer.json()["token"]
    latest = operator.get(f"/v1/secret-sets/{target.set_path}").json()
    assert latest["version"] == 3


def test_a_401_refreshes_and_retries_once(operator: httpx.Client, auth: FakeAuthServer) -> None:
    target = refresh_set(operator, auth)
    lease = target.lease()
    assert call(target, lease).status_code == 200
    refreshes = auth.refreshes
    auth.expire_access()
    answer = call(target, lease, method="POST", content=b'{"x": 1}')
    assert answer.status_code == 200, answer.text
    assert auth.refreshes == refreshes + 1


def test_a_401_to_a_streamed_body_is_not_replayed(
    operator: httpx.Client, auth: FakeAuthServer
) -> None:
    """A POST whose body keyfob streamed on (never held whole) cannot be sent twice: the
    upstream's 401 goes back to the agent, and the upstream saw the request once."""
    target = refresh_set(operator, auth)
    lease = target.lease(max_uses=5)
    assert call(target, lease).status_code == 200
    auth.expire_access()
    calls, refreshes = auth.api_calls, auth.refreshes

    def body() -> Iterator[bytes]:
        for piece in (b'{"part": 1,', b' "part": 2}'):
            time.sleep(0.05)  # pieces arrive apart, so keyfob streams them on
            yield piece

    answer = call(target, lease, method="POST", content=body())

    assert answer.status_code == 401, answer.text
    assert auth.api_calls == calls + 1
    assert auth.api_bodies[-1] == b'{"part": 1, "part": 2}'
    assert auth.refreshes == refreshes
    # A buffered request on the same lease is refreshed and replayed as usual.
    assert call(target, lease, method="POST", content=b"{}").status_code == 200
    assert auth.refreshes == refreshes + 1


def test_64_concurrent_requests_on_an_expired_token_refresh_once(
    operator: httpx.Client, auth: FakeAuthServer
) -> None:
    target = refresh_set(operator, auth)
    lease = target.lease(max_uses=100)
    auth.lifetime = 1
    assert call(target, lease).status_code == 200
    auth.lifetime = 3600
    time.sleep(1.05)  # the live server's clock is the real one
    refreshes = auth.refreshes
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: call(target, lease), range(64)))
    assert [a.status_code for a in answers] == [200] * 64
    assert auth.refreshes == refreshes + 1
    assert len({a.json()["token"] for a in answers}) == 1


@contextmanager
def signed_in(operator: httpx.Client) -> Iterator[httpx.Client]:
    """A dashboard session on the same server as ``operator``."""
    name, password = unique("viewer"), "correct horse battery staple"
    created = operator.post("/v1/users", json={"name": name, "password": password})
    assert created.status_code == 201, created.text
    with httpx.Client(base_url=str(operator.base_url), timeout=30) as browser:
        form = browser.get("/ui/login").text
        csrf = re.search(r'name="csrf" value="([^"]*)"', form)
        assert csrf
        done = browser.post(
            "/ui/login", data={"csrf": csrf.group(1), "name": name, "password": password}
        )
        assert done.status_code == 303, done.text
        yield browser


def test_invalid_grant_marks_the_set_for_reconnect(
    operator: httpx.Client, auth: FakeAuthServer
) -> None:
    target = refresh_set(operator, auth)
    auth.revoke_all()
    answer = call(target)
    assert_problem(answer, 502, "credential-refresh-failed")
    assert answer.json()["reason"] == "invalid_grant"
    events = audit(operator, action="credential.reconnect_needed")
    assert any(e["target"] == f"secret_set:{target.set_path}" for e in events)
    calls = auth.token_calls
    again = call(target)
    assert_problem(again, 502, "credential-refresh-failed")
    assert again.json()["reason"] == "reconnect_needed"
    assert auth.token_calls == calls  # no second try with a dead refresh token
    shown = operator.get(f"/v1/secret-sets/{target.set_path}").json()
    assert shown["needs_reconnect"] is True
    with signed_in(operator) as browser:
        listed = browser.get("/ui/credentials").text
        page = browser.get(f"/ui/credentials/{target.set_path}").text
    row = listed.split(target.set_path, 1)[1].split("</tr>", 1)[0]
    assert "needs reconnect" in row
    assert "Needs reconnect" in page
    # A new refresh token (a new version) clears the mark.
    patched = operator.patch(
        f"/v1/secret-sets/{target.set_path}",
        json={"entries": {"REFRESH_TOKEN": auth.new_refresh_token()}},
    )
    assert patched.status_code == 200, patched.text
    assert call(target).status_code == 200
    assert operator.get(f"/v1/secret-sets/{target.set_path}").json()["needs_reconnect"] is False


def test_invalid_grant_after_another_node_rotated_the_set_uses_the_new_version(
    operator: httpx.Client, auth: FakeAuthServer
) -> None:
    """The provider says invalid_grant because another node (here: the hook) already
    stored a new refresh token: keyfob reads the set again and refreshes with that one
    instead of marking the set for reconnect."""
    target = refresh_set(operator, auth)
    auth.revoke_all()  # the refresh token keyfob holds is dead now

    def another_node_rotates() -> None:
        patched = operator.patch(
            f"/v1/secret-sets/{target.set_path}",
            json={"entries": {"REFRESH_TOKEN": auth.new_refresh_token()}},
        )
        assert patched.status_code == 200, patched.text

    auth.on_dead_refresh = another_node_rotates
    answer = call(target)

    assert answer.status_code == 200, answer.text
    assert auth.on_dead_refresh is None  # the dead token was tried (once)
    shown = operator.get(f"/v1/secret-sets/{target.set_path}").json()
    assert shown["needs_reconnect"] is False
    assert shown["version"] == 3  # the other node's version, then the rotation
    marked = audit(operator, action="credential.reconnect_needed")
    assert all(e["target"] != f"secret_set:{target.set_path}" for e in marked)


def test_token_endpoint_down_gives_502_after_bounded_retries_and_saves_nothing(
    operator: httpx.Client, auth: FakeAuthServer
) -> None:
    target = refresh_set(operator, auth)
    auth.fail_next = 3
    calls = auth.token_calls
    answer = call(target)
    assert_problem(answer, 502, "credential-refresh-failed")
    assert auth.token_calls == calls + 3
    assert operator.get(f"/v1/secret-sets/{target.set_path}").json()["version"] == 1
    auth.fail_next = 2
    assert call(target).status_code == 200


def test_a_private_token_url_needs_allow_private_upstream(
    operator: httpx.Client, auth: FakeAuthServer
) -> None:
    profile = oauth_profile(auth, "client_credentials")
    profile["base_url"] = "https://api.example.com"
    profile["hosts"] = ["api.example.com"]
    profile["allow_private_upstream"] = False
    answer = operator.post(
        "/v1/secret-sets",
        json={
            "provider": "oauth",
            "environment": "test",
            "name": "private-token-url",
            "entries": {"CLIENT_ID": CLIENT_ID, "CLIENT_SECRET": "x"},
            "profile": profile,
        },
    )
    assert_problem(answer, 422, "validation-failed")
    assert "token_url" in answer.json()["detail"]


def sa_profile(auth: FakeAuthServer) -> dict[str, Any]:
    return {
        "base_url": auth.url + "/api",
        "hosts": [auth.host],
        "inject": {"kind": "google_service_account", "scopes": ["https://x/auth/cloud"]},
        "allow_private_upstream": True,
    }


def test_google_service_account_signs_a_jwt_for_a_token(
    operator: httpx.Client, auth: FakeAuthServer
) -> None:
    import json

    key = json.dumps(auth.service_account())
    target = proxied(operator, sa_profile(auth), {"SERVICE_ACCOUNT_JSON": key}, provider="google")
    answer = call(target)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("kind", ["google_service_account", "github_app"])
def test_an_assertion_is_accepted_by_an_endpoint_whose_clock_runs_behind(
    operator: httpx.Client, auth: FakeAuthServer, kind: str
) -> None:
    """The endpoint refuses an ``iat`` in its future; keyfob issues assertions in the past."""
    import json

    auth.clock_behind = 30
    if kind == "google_service_account":
        key = json.dumps(auth.service_account("skewed@project.iam.gserviceaccount.com"))
        target = proxied(
            operator, sa_profile(auth), {"SERVICE_ACCOUNT_JSON": key}, provider="google"
        )
    else:
        entries = {
            "GITHUB_APP_ID": "4343",
            "GITHUB_APP_PRIVATE_KEY": auth.github_app("4343"),
            "GITHUB_INSTALLATION_ID": "78",
        }
        profile = {
            "base_url": auth.url + "/api",
            "hosts": [auth.host],
            "inject": {"kind": "github_app", "api_url": auth.url},
            "allow_private_upstream": True,
        }
        target = proxied(operator, profile, entries, provider="github")
    answer = call(target)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    ("field", "change"),
    [
        (
            "private_key",
            {"private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"},
        ),
        ("client_email", {"client_email": None}),
        ("token_uri", {"token_uri": "ftp://example.com/token"}),
        ("type", {"type": "authorized_user"}),
    ],
)
def test_a_malformed_service_account_file_is_refused_naming_the_field(
    operator: httpx.Client, auth: FakeAuthServer, field: str, change: dict[str, Any]
) -> None:
    import json

    key = {**auth.service_account(), **change}
    answer = operator.post(
        "/v1/secret-sets",
        json={
            "provider": "google",
            "environment": "test",
            "name": f"bad-{field.replace('_', '-')}",
            "entries": {"SERVICE_ACCOUNT_JSON": json.dumps(key)},
            "profile": sa_profile(auth),
        },
    )
    assert_problem(answer, 422, "validation-failed")
    assert answer.json()["errors"][0]["loc"] == ["entries", "SERVICE_ACCOUNT_JSON", field]
    assert (
        operator.get("/v1/secret-sets/google/test/bad-" + field.replace("_", "-")).status_code
        == 404
    )


def test_github_app_installation_token(operator: httpx.Client, auth: FakeAuthServer) -> None:
    pem = auth.github_app("4242")
    profile = {
        "base_url": auth.url + "/api",
        "hosts": [auth.host],
        "inject": {"kind": "github_app", "api_url": auth.url},
        "allow_private_upstream": True,
    }
    entries = {
        "GITHUB_APP_ID": "4242",
        "GITHUB_APP_PRIVATE_KEY": pem,
        "GITHUB_INSTALLATION_ID": "77",
    }
    target = proxied(operator, profile, entries, provider="github")
    answer = call(target)
    assert answer.status_code == 200, answer.text
