"""Fail closed: when the audit record cannot be written, the proxy answers 503 and the
upstream is never contacted; once storage is back, the same lease works."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyfob.app import create_app
from keyfob.settings import Settings
from keyfob.vault import Vault
from tests.conftest import CANARY
from tests.support.backends import PG_SKIP_REASON, PG_URL, reset_postgres
from tests.support.http import assert_problem
from tests.support.relay import Relay
from tests.support.upstream import FakeUpstream

_PG_FUNCTION = "keyfob_test_audit_full"


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    try:
        yield upstream
    finally:
        upstream.stop()


@dataclass
class Setup:
    http: httpx.AsyncClient
    set_path: str
    lease: str
    lease_id: str

    async def call(self, rest: str = "/echo/fail-closed") -> httpx.Response:
        return await self.http.get(
            f"/proxy/{self.set_path}{rest}", headers={"Authorization": f"Bearer {self.lease}"}
        )

    async def lease_view(self) -> dict[str, Any]:
        answer = await self.http.get("/v1/leases", params={"all": "true"})
        assert answer.status_code == 200, answer.text
        return next(i for i in answer.json()["items"] if i["id"] == self.lease_id)


async def prepare(vault: Vault, operator_token: str, settings: Settings, fake: FakeUpstream) -> Any:
    """The app in-process with a set for ``fake``, an agent, a grant and a workflow lease."""
    app = create_app(settings, vault=vault)
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://keyfob.test",
        headers={"Authorization": f"Bearer {operator_token}"},
    )
    profile = {
        "base_url": fake.url,
        "hosts": [fake.host],
        "inject": {"kind": "bearer", "key": "API_KEY"},
        "allow_private_upstream": True,
    }
    created = await http.post(
        "/v1/secret-sets",
        json={
            "provider": "generic",
            "environment": "test",
            "name": "closed",
            "entries": {"API_KEY": CANARY},
            "profile": profile,
        },
    )
    assert created.status_code == 201, created.text
    agent = await http.post("/v1/agents", json={"name": "closed"})
    assert agent.status_code == 201, agent.text
    granted = await http.post(
        "/v1/grants",
        json={"agent": "closed", "secret_set": "generic/test/closed", "scopes": ["workflow"]},
    )
    assert granted.status_code == 201, granted.text
    minted = await http.post(
        "/v1/leases",
        json={"secret_set": "generic/test/closed", "scope": "workflow"},
        headers={"Authorization": f"Bearer {agent.json()['token']}"},
    )
    assert minted.status_code == 201, minted.text
    return app, Setup(http, "generic/test/closed", minted.json()["token"], minted.json()["id"])


@pytest.fixture
async def setup(
    vault: Vault, operator_token: str, settings: Settings, fake: FakeUpstream
) -> AsyncIterator[Setup]:
    app, ready = await prepare(vault, operator_token, settings, fake)
    try:
        yield ready
    finally:
        await ready.http.aclose()
        await app.aclose()
        await drop_trigger(settings)


# -- direct database access, behind keyfob's back ------------------------------------------


async def run_sql(settings: Settings, sqlite_sql: str, pg_sql: str) -> None:
    if settings.database_url is None:
        conn = sqlite3.connect(Path(settings.data_dir) / "keyfob.db", timeout=30)
        try:
            conn.executescript(sqlite_sql)
            conn.commit()
        finally:
            conn.close()
        return
    import asyncpg

    pg = await asyncpg.connect(
        settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
    )
    try:
        await pg.execute(pg_sql)
    finally:
        await pg.close()


async def make_audit_unwritable(settings: Settings) -> None:
    await run_sql(
        settings,
        "CREATE TRIGGER audit_full BEFORE INSERT ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        f"""
        CREATE OR REPLACE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'disk full'; END $$;
        CREATE TRIGGER audit_full BEFORE INSERT ON audit_events
            FOR EACH ROW EXECUTE FUNCTION {_PG_FUNCTION}();
        """,
    )


async def drop_trigger(settings: Settings) -> None:
    await run_sql(
        settings,
        "DROP TRIGGER IF EXISTS audit_full;",
        "DROP TRIGGER IF EXISTS audit_full ON audit_events; "
        f"DROP FUNCTION IF EXISTS {_PG_FUNCTION}();",
    )


# -- tests ---------------------------------------------------------------------------------


async def test_unwritable_audit_log_refuses_before_upstream(
    setup: Setup, settings: Settings, fake: FakeUpstream
) -> None:
    warm = await setup.call()
    assert warm.status_code == 200, warm.text
    assert (await setup.lease_view())["uses"] == 1
    fake.clear()
    await make_audit_unwritable(settings)

    refused = [await setup.call(f"/echo/refused-{i}") for i in range(3)]

    for answer in refused:
        assert_problem(answer, 503, "unavailable")
        assert CANARY not in answer.text
    assert fake.seen == []
    await drop_trigger(settings)
    assert (await setup.lease_view())["uses"] == 1

    # Fail closed, not broken: with storage back, the same lease works.
    again = await setup.call("/echo/after")
    assert again.status_code == 200, again.text
    assert [s.path for s in fake.seen] == ["/echo/after"]
    assert (await setup.lease_view())["uses"] == 2
    verify = (await setup.http.get("/v1/audit/verify")).json()
    assert verify["ok"] is True, verify


async def test_missing_chain_head_makes_readyz_and_proxy_503(
    setup: Setup, settings: Settings, fake: FakeUpstream
) -> None:
    assert (await setup.http.get("/readyz")).status_code == 200
    fake.clear()
    saved: dict[str, Any] = {}
    if settings.database_url is None:
        conn = sqlite3.connect(Path(settings.data_dir) / "keyfob.db", timeout=30)
        try:
            saved["row"] = conn.execute("SELECT id, seq, head FROM audit_head").fetchone()
            conn.execute("DELETE FROM audit_head")
            conn.commit()
        finally:
            conn.close()
        restore = "INSERT INTO audit_head (id, seq, head) VALUES ({}, {}, '{}');"
    else:
        import asyncpg

        pg = await asyncpg.connect(settings.database_url)
        try:
            saved["row"] = tuple(await pg.fetchrow("SELECT id, seq, head FROM audit_head"))
            await pg.execute("DELETE FROM audit_head")
        finally:
            await pg.close()
        restore = "INSERT INTO audit_head (id, seq, head) VALUES ({}, {}, '{}')"

    ready = await setup.http.get("/readyz")
    refused = await setup.call("/echo/headless")

    assert_problem(ready, 503, "unavailable")
    assert_problem(refused, 503, "unavailable")
    assert fake.seen == []
    sql = restore.format(*saved["row"])
    await run_sql(settings, sql, sql)
    assert (await setup.http.get("/readyz")).status_code == 200
    assert (await setup.call("/echo/headed")).status_code == 200
    assert (await setup.lease_view())["uses"] == 1


@pytest.mark.postgres
@pytest.mark.skipif(PG_URL is None, reason=PG_SKIP_REASON)
async def test_database_connection_cut_refuses_before_upstream(
    tmp_path: Path, fake: FakeUpstream
) -> None:
    url = await asyncio.to_thread(reset_postgres)  # it runs its own event loop
    relay = Relay(url)
    await relay.start()
    settings = Settings(data_dir=tmp_path / "data", database_url=relay.url)
    vault, done = await Vault.initialise(settings)
    app, setup = await prepare(vault, done.operator_token.reveal(), settings, fake)
    try:
        assert (await setup.call("/echo/before")).status_code == 200
        fake.clear()

        await relay.cut()
        refused = [await setup.call(f"/echo/cut-{i}") for i in range(3)]

        for answer in refused:
            assert_problem(answer, 503, "unavailable")
        assert fake.seen == []

        await relay.start()
        assert (await setup.lease_view())["uses"] == 1
        again = await setup.call("/echo/reconnected")
        assert again.status_code == 200, again.text
        assert [s.path for s in fake.seen] == ["/echo/reconnected"]
    finally:
        await setup.http.aclose()
        await app.aclose()
        await vault.close()
        await relay.cut()
