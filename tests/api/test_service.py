"""Service routes: liveness, readiness (and honest unreadiness), the OpenAPI document."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyfob.api.service import NOT_READY
from keyfob.app import create_app
from keyfob.settings import Settings
from keyfob.vault import Context, Vault
from tests.access.factories import (
    bearer,
    make_agent,
    make_grant,
    make_lease,
    make_secret_set,
    without_request_id,
)
from tests.support.docs import documented_routes, shape
from tests.support.http import assert_problem
from tests.support.relay import Relay


async def test_healthz(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_the_database_and_audit_log_take_writes(
    anonymous: httpx.AsyncClient,
) -> None:
    response = await anonymous.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_every_answer_carries_a_request_id_and_no_cache_headers(
    client: httpx.AsyncClient,
) -> None:
    ids = set()
    for path in ("/healthz", "/v1/keys", "/nope"):
        response = await client.get(path)
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"
        ids.add(response.headers["x-request-id"])
    assert len(ids) == 3


def app_client(settings: Settings, vault: Vault, token: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, vault=vault)),
        base_url="http://keyfob.test",
        headers=bearer(token) if token else {},
    )


async def not_operators(operator: httpx.AsyncClient) -> dict[str, dict[str, str]]:
    """The headers of every caller that is not an operator: a load balancer (none), an
    agent, a lease, and operator tokens that are not (or no longer) valid."""
    await make_secret_set(operator)
    agent = await make_agent(operator)
    await make_grant(operator, agent)
    lease = await make_lease(operator, agent["token"])
    revoked = (await operator.post("/v1/tokens", json={"name": "gone"})).json()
    assert (await operator.delete(f"/v1/tokens/{revoked['id']}")).status_code == 200
    return {
        "none": {},
        "agent": bearer(agent["token"]),
        "lease": bearer(lease["token"]),
        "unknown operator token": bearer("kfo_" + "Q" * 43),
        "revoked operator token": bearer(revoked["token"]),
        "malformed": bearer("not-a-token-at-all"),
        "wrong scheme": {"Authorization": "Basic a2V5Zm9iOmtmb18="},
    }


async def answers(http: httpx.AsyncClient, callers: dict[str, dict[str, str]]) -> list[Any]:
    """What ``/readyz`` tells each caller (status and body, without the request id)."""
    out = []
    for headers in callers.values():
        answer = await http.get("/readyz", headers=headers)
        out.append((answer.status_code, without_request_id(answer.json())))
    return out


@pytest.fixture
async def checkpoint_vault(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[Vault, str]]:
    """A vault whose audit checkpoints live in their own directory (so it can go away),
    and its operator token."""
    own = settings.model_copy(update={"audit_checkpoint_file": tmp_path / "audit" / "cp.json"})
    vault, done = await Vault.initialise(own)
    try:
        yield vault, done.operator_token.reveal()
    finally:
        await vault.close()


async def test_readyz_is_503_when_the_audit_checkpoint_cannot_be_written(
    settings: Settings, checkpoint_vault: tuple[Vault, str], tmp_path: Path
) -> None:
    vault, token = checkpoint_vault
    audit_dir = tmp_path / "audit"
    async with app_client(settings, vault) as http, app_client(settings, vault, token) as operator:
        callers = await not_operators(operator)
        assert await answers(http, callers) == [(200, {"status": "ready"})] * len(callers)
        # The checkpoint's volume is gone: a plain file now sits where its directory was.
        # (Tests run as root here, so taking away permissions would prove nothing.)
        shutil.rmtree(audit_dir)
        audit_dir.write_text("not a directory")

        body = assert_problem(await operator.get("/readyz"), 503, "unavailable")
        assert "checkpoint" in body["detail"]
        # Anyone else: unready, and nothing about why; the same answer whatever they send.
        anonymous = assert_problem(await http.get("/readyz"), 503, "unavailable")
        assert anonymous["detail"] == NOT_READY
        unready = (503, without_request_id(anonymous))
        assert await answers(http, callers) == [unready] * len(callers)

        audit_dir.unlink()
        assert (await http.get("/readyz")).status_code == 200


async def test_a_probe_without_a_token_is_not_audited_a_bad_token_is(
    vault: Vault, settings: Settings, anonymous: httpx.AsyncClient
) -> None:
    """Load balancers probe every few seconds: that writes nothing to the audit log. A
    token that is not valid is a failed authentication, audited as on any operator route."""
    before = await vault.audit.verify()
    for _ in range(3):
        assert (await anonymous.get("/readyz")).status_code == 200
    assert (await vault.audit.verify())["count"] == before["count"]

    unknown = bearer("kfo_" + "Q" * 43)
    assert (await anonymous.get("/readyz", headers=unknown)).json() == {"status": "ready"}
    failed = [e async for e in vault.audit.export() if e.action == "auth.failed"]
    assert [(e.target, e.details["reason"]) for e in failed] == [("route:/readyz", "unknown")]


class Outage:
    """Takes the database out of reach and brings it back, as an operator would see it."""

    def __init__(self, vault: Vault, settings: Settings, relay: Relay | None) -> None:
        self.vault = vault
        self.settings = settings
        self.relay = relay
        self.moved = settings.data_dir.with_name("elsewhere")

    async def cut(self) -> None:
        if self.relay is not None:
            await self.relay.cut()  # the network to PostgreSQL is gone
            return
        # The SQLite volume is unmounted: open connections go and the path leads nowhere.
        # (Tests run as root here, so taking away file permissions would prove nothing.)
        await self.vault.db.engine.dispose()
        self.settings.data_dir.rename(self.moved)
        self.settings.data_dir.write_text("not a directory")

    async def heal(self) -> None:
        if self.relay is not None:
            await self.relay.start()
            return
        self.settings.data_dir.unlink()
        self.moved.rename(self.settings.data_dir)


@pytest.fixture
async def outage(settings: Settings) -> AsyncIterator[Outage]:
    relay = None
    if settings.database_url is not None:
        relay = Relay(settings.database_url)
        await relay.start()
        settings = settings.model_copy(update={"database_url": relay.url})
    vault, _ = await Vault.initialise(settings)
    try:
        yield Outage(vault, settings, relay)
    finally:
        await vault.close()
        if relay is not None:
            await relay.cut()


async def test_readyz_is_503_while_the_database_is_out_of_reach(outage: Outage) -> None:
    _, token = await outage.vault.operators.create_token(Context(actor="operator:test"), "probe")
    async with app_client(outage.settings, outage.vault) as http:
        assert (await http.get("/readyz")).status_code == 200

        await outage.cut()
        body = assert_problem(await http.get("/readyz"), 503, "unavailable")
        assert body["detail"] == NOT_READY
        # An operator token cannot be checked without the database: the same answer.
        as_operator = await http.get("/readyz", headers=bearer(token.reveal()))
        assert assert_problem(as_operator, 503, "unavailable")["detail"] == NOT_READY
        assert (await http.get("/healthz")).status_code == 200

        await outage.heal()
        assert (await http.get("/readyz")).status_code == 200


async def test_openapi_lists_every_documented_route(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/openapi.json")
    assert response.status_code == 200
    published = {
        (method.upper(), shape(path))
        for path, item in response.json()["paths"].items()
        for method in item
    }

    unlisted = ("/openapi.json", "/docs")
    documented = {(m, shape(p)) for m, p in documented_routes() if p not in unlisted}

    assert len(documented) >= 30
    assert documented - published == set()
