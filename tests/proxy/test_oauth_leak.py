"""Canary scan for refreshed credentials: refresh tokens, access tokens, client secrets and
private keys must not appear in any API answer, dashboard page, audit record, log line or
raw database file (the access-token cache is sealed, never plaintext at rest)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.dashboard.conftest import csrf_of
from tests.proxy.factories import proxied
from tests.proxy.test_oauth import oauth_profile, refresh_set, sa_profile
from tests.support import loopback
from tests.support.oauth_server import CLIENT_ID, FakeAuthServer
from tests.support.server import LiveServer
from tests.test_leak import leaks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def auth() -> Iterator[FakeAuthServer]:
    fake = FakeAuthServer().start()
    try:
        yield fake
    finally:
        fake.stop()


def _key_body(pem: str) -> str:
    """A run of the key's base64 body (PEM line breaks removed): what a leak would hold."""
    lines = [ln for ln in pem.splitlines() if ln and not ln.startswith("-----")]
    return lines[3] + lines[4]


def test_no_refresh_token_access_token_or_private_key_leaks(
    server: LiveServer, operator: httpx.Client, auth: FakeAuthServer
) -> None:
    seen: dict[str, bytes] = {}

    def keep(response: httpx.Response) -> httpx.Response:
        seen[f"{len(seen):03d} {response.request.method} {response.request.url.path}"] = (
            response.content
        )
        return response

    def get(target: str, path: str) -> None:
        lease = proxied_sets[target].lease()
        keep(
            loopback.get(
                proxied_sets[target].url(path),
                headers={"Authorization": f"Bearer {lease}"},
                timeout=30,
            )
        )

    account = auth.service_account()
    app_key = auth.github_app("5151")
    proxied_sets = {
        "refresh": refresh_set(operator, auth),
        "dead": refresh_set(operator, auth),
        "client": proxied(
            operator,
            oauth_profile(auth, "client_credentials"),
            {"CLIENT_ID": CLIENT_ID, "CLIENT_SECRET": auth.client_secret},
            provider="oauth",
        ),
        "google": proxied(
            operator,
            sa_profile(auth),
            {"SERVICE_ACCOUNT_JSON": json.dumps(account)},
            provider="google",
        ),
        "app": proxied(
            operator,
            {
                "base_url": auth.url + "/api",
                "hosts": [auth.host],
                "inject": {"kind": "github_app", "api_url": auth.url},
                "allow_private_upstream": True,
            },
            {
                "GITHUB_APP_ID": "5151",
                "GITHUB_APP_PRIVATE_KEY": app_key,
                "GITHUB_INSTALLATION_ID": "9",
            },
            provider="github",
        ),
    }
    for target in ("refresh", "client", "google", "app"):
        get(target, "/things")
    auth.expire_access()
    get("refresh", "/after-401")  # refreshed on the 401, rotated again
    for refresh in list(auth.refresh_tokens):
        if refresh not in auth.uses:
            auth.refresh_tokens.discard(refresh)  # "dead"'s token is refused now
    get("dead", "/refused")
    assert any(b"invalid_grant" in body for body in seen.values())

    for target in proxied_sets.values():
        keep(operator.get(f"/v1/secret-sets/{target.set_path}"))
        keep(operator.get(f"/v1/secret-sets/{target.set_path}/versions"))
    keep(operator.get("/v1/secret-sets"))
    keep(operator.get("/v1/audit", params={"limit": 1000}))
    keep(operator.get("/v1/audit/export"))
    assert b"credential.refresh" in seen[next(k for k in seen if k.endswith("/v1/audit"))]

    created = operator.post(
        "/v1/users", json={"name": "leakcheck", "password": "long password 123"}
    )
    assert created.status_code == 201, created.text
    with httpx.Client(base_url=server.url, timeout=30) as ui:
        form = ui.get("/ui/login")
        ui.post(
            "/ui/login",
            data={"csrf": csrf_of(form.text), "name": "leakcheck", "password": "long password 123"},
        )
        pages = ["/ui/credentials", "/ui/audit", "/ui/connect"]
        pages += [f"/ui/credentials/{t.set_path}" for t in proxied_sets.values()]
        for path in pages:
            answer = keep(ui.get(path))
            assert answer.status_code == 200, path
        assert b"needs reconnect" in keep(ui.get("/ui/credentials")).content.lower()

    kept = {"server log": server.log_path.read_bytes()}
    for path in sorted(server.settings.data_dir.rglob("*")):
        if path.is_file():
            kept[f"file {path.name}"] = path.read_bytes()
    assert any(name.startswith("file keyfob.db") for name in kept)

    refresh_tokens = sorted(auth.issued)
    access_tokens = sorted(auth.access)
    assert len(refresh_tokens) >= 4
    assert len(access_tokens) >= 5
    keys = [_key_body(account["private_key"]), _key_body(app_key)]
    needles = [*refresh_tokens, *access_tokens, auth.client_secret, *keys]
    assert leaks(needles, seen) == []
    assert leaks(needles, kept) == []
