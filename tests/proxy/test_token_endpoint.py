"""A token endpoint that is slow: the call that timed out is not retried (the endpoint
may have spent a one-time refresh token), the agent gets 502 ``credential-refresh-failed``,
nothing is saved but the failure's audit record, and the claim is let go at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from sqlalchemy import update

from keyfob.errors import CredentialRefreshFailed
from keyfob.proxy import egress
from keyfob.proxy.token_fetch import TokenFetcher
from keyfob.settings import Settings
from keyfob.store.tables import credential_tokens
from keyfob.vault import Context, Vault
from tests.support.oauth_server import CLIENT_ID, FakeAuthServer


@pytest.fixture
async def auth() -> AsyncIterator[FakeAuthServer]:
    fake = FakeAuthServer(rotate=False).start()
    try:
        yield fake
    finally:
        fake.stop()


async def oauth_set(
    vault: Vault, ctx: Context, auth: FakeAuthServer, name: str, **inject: str
) -> Any:
    """An OAuth set against the fake authorization server (``inject``: the grant's fields)."""
    return await vault.sets.create(
        ctx,
        provider="oauth",
        environment="test",
        name=name,
        entries={
            "CLIENT_ID": CLIENT_ID,
            "CLIENT_SECRET": auth.client_secret,
            "REFRESH_TOKEN": auth.new_refresh_token(),
        },
        profile={
            "base_url": auth.url + "/api",
            "hosts": [auth.host],
            "inject": {"kind": "oauth2", "token_url": auth.token_url, **inject},
            "allow_private_upstream": True,
        },
    )


async def test_a_slow_token_endpoint_is_tried_once_and_nothing_is_saved(
    vault: Vault, ctx: Context, auth: FakeAuthServer
) -> None:
    created = await oauth_set(
        vault, ctx, auth, "slow", grant="refresh_token", refresh_token="REFRESH_TOKEN"
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


@pytest.fixture
async def fetch() -> AsyncIterator[TokenFetcher]:
    routes = egress.Egress(None)
    try:
        yield TokenFetcher(routes, timeout=aiohttp.ClientTimeout(total=5))
    finally:
        await routes.close()


async def client_credentials(vault: Vault, ctx: Context, auth: FakeAuthServer) -> Any:
    return await oauth_set(
        vault,
        ctx,
        auth,
        "keys",
        grant="client_credentials",
        client_id="CLIENT_ID",
        client_secret="CLIENT_SECRET",
    )


async def test_a_stored_token_moves_with_keys_rewrap_and_outlives_the_old_term(
    vault: Vault, ctx: Context, settings: Settings, auth: FakeAuthServer, fetch: TokenFetcher
) -> None:
    created = await client_credentials(vault, ctx, auth)
    first = await vault.refresh.token(created.id, created.version, fetch)
    await vault.keys.rotate(ctx)
    await vault.keys.rewrap(ctx)
    await vault.keys.retire(ctx, 1)
    other = await Vault.open(settings)  # another node: nothing in memory
    try:
        again = await other.refresh.token(created.id, created.version, fetch)
    finally:
        await other.close()

    assert again.reveal() == first.reveal()
    assert auth.token_calls == 1  # read from the database, not fetched again


async def test_a_stored_token_that_does_not_open_is_fetched_again(
    vault: Vault, ctx: Context, auth: FakeAuthServer, fetch: TokenFetcher
) -> None:
    created = await client_credentials(vault, ctx, auth)
    first = await vault.refresh.token(created.id, created.version, fetch)
    async with vault.db.engine.begin() as conn:
        await conn.execute(
            update(credential_tokens)
            .where(credential_tokens.c.set_id == created.id)
            .values(ciphertext=b"\0" * 64)
        )
    vault.refresh.forget_all()
    again = await vault.refresh.token(created.id, created.version, fetch)

    assert again.reveal() != first.reveal()
    assert auth.token_calls == 2
