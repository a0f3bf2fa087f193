"""A cap on lease requests waiting for approval, per agent and per grant (issue 10, item 14).

Fails on the commit before the fix (30e7c86^): an agent could file pending requests
without limit, flooding the operators' approval queue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyfob.app import create_app
from keyfob.clock import FrozenClock
from keyfob.settings import Settings
from keyfob.vault import Vault
from tests.access.factories import (
    OTHER_SET,
    SET,
    audit,
    bearer,
    make_agent,
    make_grant,
    make_secret_set,
    mint,
)
from tests.support.http import assert_problem

CAP = 3


@pytest.fixture
async def capped(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path / "data", max_pending_requests=CAP)
    vault, done = await Vault.initialise(settings, clock=clock)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, vault=vault)),
            base_url="http://keyfob.test",
            headers=bearer(done.operator_token.reveal()),
        ) as http:
            yield http
    finally:
        await vault.close()


async def _requests(client: httpx.AsyncClient, agent: dict[str, Any], path: str, n: int) -> None:
    for _ in range(n):
        answer = await mint(client, agent["token"], path, scope="workflow")
        assert answer.status_code == 202, answer.text


def test_the_default_cap_is_twenty() -> None:
    assert Settings().max_pending_requests == 20


async def test_one_request_past_the_cap_is_429_and_audited(
    capped: httpx.AsyncClient, clock: FrozenClock
) -> None:
    await make_secret_set(capped, SET)
    await make_secret_set(capped, OTHER_SET)
    bot = await make_agent(capped, "billing-bot")
    for path in (SET, OTHER_SET):
        await make_grant(capped, bot, path, scopes=["workflow"], approval="required")
    await _requests(capped, bot, SET, CAP)

    over = await mint(capped, bot["token"], SET, scope="workflow")
    # The cap is per agent too: the same agent's request under its other grant waits.
    elsewhere = await mint(capped, bot["token"], OTHER_SET, scope="workflow")

    for answer in (over, elsewhere):
        body = assert_problem(answer, 429, "rate-limited")
        assert body["reason"] == "too_many_pending"
    pending = (await capped.get("/v1/lease-requests")).json()["items"]
    assert len(pending) == CAP
    denials = [e["details"]["reason"] for e in await audit(capped, "lease.deny")]
    assert denials == ["too_many_pending", "too_many_pending"]

    # A decided request frees its place; so does an expired one.
    await capped.post(f"/v1/lease-requests/{pending[0]['id']}/deny")
    assert (await mint(capped, bot["token"], SET, scope="workflow")).status_code == 202
    assert (await mint(capped, bot["token"], SET, scope="workflow")).status_code == 429
    clock.advance(600)
    await _requests(capped, bot, SET, CAP)


async def test_each_agent_and_grant_has_its_own_room(capped: httpx.AsyncClient) -> None:
    await make_secret_set(capped, SET)
    bots = [await make_agent(capped, f"bot-{i}") for i in range(2)]
    for bot in bots:
        await make_grant(capped, bot, SET, scopes=["workflow"], approval="required")
    await _requests(capped, bots[0], SET, CAP)

    assert (await mint(capped, bots[0]["token"], SET, scope="workflow")).status_code == 429
    # Another agent's grant on the same set has its own room.
    await _requests(capped, bots[1], SET, CAP)
