"""Fixtures for API tests: a seeded vault and an app with a small body limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from keyfob.app import create_app
from keyfob.settings import Settings
from keyfob.vault import Vault
from tests.conftest import CANARY, make_set

SMALL_BODY_LIMIT = 1024
SEEDED = "openai/prod/default"
DELETED = "stripe/prod/billing"


@pytest.fixture
async def seeded(client: httpx.AsyncClient) -> dict[str, Any]:
    """A live set (``openai/prod/default``, preset profile) and a soft-deleted one."""
    created = await client.post(
        "/v1/secret-sets", json=make_set(labels={"team": "ml"}, profile={"preset": "openai"})
    )
    assert created.status_code == 201, created.text
    other = make_set("stripe", "prod", "billing", {"STRIPE_API_KEY": CANARY + "-stripe"})
    assert (await client.post("/v1/secret-sets", json=other)).status_code == 201
    assert (await client.delete(f"/v1/secret-sets/{DELETED}")).status_code == 200
    view: dict[str, Any] = created.json()
    return view


@pytest.fixture
async def small_client(
    vault: Vault, operator_token: str, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with ``max_body_bytes`` at its minimum, sharing the vault of ``client``."""
    small = settings.model_copy(update={"max_body_bytes": SMALL_BODY_LIMIT})
    app = create_app(small, vault=vault)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://keyfob.test",
        headers={"Authorization": f"Bearer {operator_token}"},
    ) as http:
        yield http


@pytest.fixture
async def operator_actor(client: httpx.AsyncClient) -> str:
    """The audit actor of the first operator token."""
    (first,) = (await client.get("/v1/tokens")).json()["items"]
    return f"operator:{first['id']}"


@pytest.fixture
async def anonymous(vault: Vault, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app of ``client`` (same vault) with no credentials at all."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, vault=vault)),
        base_url="http://keyfob.test",
    ) as http:
        yield http
