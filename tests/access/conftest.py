"""Fixtures for agent, grant and lease tests: a secret set, an agent, the operator's actor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from keyfob.app import create_app
from keyfob.settings import Settings
from keyfob.vault import Vault
from tests.access.factories import SET, make_agent, make_secret_set


@pytest.fixture
async def secret_set(client: httpx.AsyncClient) -> dict[str, Any]:
    """``openai/prod/default`` with two keys."""
    return await make_secret_set(client, SET)


@pytest.fixture
async def agent(client: httpx.AsyncClient, secret_set: dict[str, Any]) -> dict[str, Any]:
    """An agent (view plus ``token``) with no grant yet."""
    return await make_agent(client, "billing-bot")


@pytest.fixture
async def operator_actor(client: httpx.AsyncClient) -> str:
    """The audit actor of the first operator token."""
    (first,) = (await client.get("/v1/tokens")).json()["items"]
    return f"operator:{first['id']}"


@pytest.fixture
async def anonymous(vault: Vault, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app of ``client`` (same vault) with no credentials."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, vault=vault)),
        base_url="http://keyfob.test",
    ) as http:
        yield http
