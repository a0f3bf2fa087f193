"""A token endpoint that is slow: the call that timed out is not retried (the endpoint
may have spent a one-time refresh token), the agent gets 502 ``credential-refresh-failed``,
nothing is saved but the failure's audit record, and the claim is let go at once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from keyfob.errors import CredentialRefreshFailed
from keyfob.proxy import egress
from keyfob.proxy.token_fetch import TokenFetcher
from keyfob.vault import Context, Vault
from tests.support.oauth_server import CLIENT_ID, FakeAuthServer


@pytest.fixture
async def auth() -> AsyncIterator[FakeAuthServer]:
    fake = FakeAuthServer(rotate=False).start()
    try:
        yield fake
    finally:
        fake.stop()


async def test_a_slow_token_endpoint_is_tried_once_and_nothing_is_saved(
    vault: Vault, ctx: Context, auth: FakeAuthServer
) -> None:
    created = await vault.sets.create(
        ctx,
        provider="oauth",
        environment="test",
        name="slow",
        entries={
            "CLIENT_ID": CLIENT_ID,
            "CLIENT_SECRET": auth.client_secret,
            "REFRESH_TOKEN": auth.new_refresh_token(),
        },
        profile={
            "base_url": auth.url + "/api",
            "hosts": [auth.host],
            "inject": {
                "kind": "oauth2",
                "grant": "refresh_token",
                "token_url": auth.token_url,
                "refresh_token": "REFRESH_TOKEN",
            },
            "allow_private_upstream": True,
        },
    )
    routes = egress.Egress(None)
    fetch = TokenFetcher(routes, timeout=aiohttp.ClientTimeout(total=0.3))
    auth.delay = 2.0
    try:
        with pytest.raises(CredentialRefreshFailed) as failed:
            await vault.refresh.token(created.id, created.version, fetch)

        assert failed.value.status == 502
        assert failed.value.extra["reason"] == "endpoint_timeout"
        assert auth.token_calls == 1  # not retried
        assert (await vault.sets.get("oauth/test/slow")).version == 1
        records = await vault.audit.query(action="credential.refresh")
        assert [(r.outcome, r.details["reason"]) for r in records] == [
            ("error", "endpoint_timeout")
        ]
        # Nothing half-saved: no token was stored, and the claim is free for the next try.
        auth.delay = 0.0
        token = await vault.refresh.token(created.id, created.version, fetch)
        assert token.reveal() in auth.access
        assert auth.token_calls == 2
    finally:
        await routes.close()
