"""A grouped commit that fails under load refuses every request in it: 503 problem+json,
nothing sent upstream, no use taken. Simulated as SQLite reports it (disk full: the
database may not grow; locked: another connection holds the write lock past the wait) and
as an audit insert that fails (both backends)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from keyfob.settings import Settings
from keyfob.store import engine
from keyfob.vault import Vault
from tests.conftest import CANARY
from tests.proxy.test_fail_closed import Setup, drop_trigger, make_audit_unwritable, prepare
from tests.support.http import assert_problem
from tests.support.upstream import FakeUpstream

CONCURRENT = 64


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    try:
        yield upstream
    finally:
        upstream.stop()


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


def sqlite_only(settings: Settings) -> Path:
    if settings.database_url is not None:
        pytest.skip("SQLite's own failure modes")
    return Path(settings.data_dir) / "keyfob.db"


async def burst(setup: Setup, tag: str) -> list[httpx.Response]:
    """``CONCURRENT`` requests with the one workflow lease, all at once."""
    return await asyncio.gather(*(setup.call(f"/echo/{tag}-{i}") for i in range(CONCURRENT)))


def refused(answer: httpx.Response) -> bool:
    if answer.status_code == 200:
        return False
    assert_problem(answer, 503, "unavailable")
    assert CANARY not in answer.text
    return True


async def uses_audited(setup: Setup) -> int:
    found = await setup.http.get("/v1/audit", params={"action": "lease.use", "limit": 1000})
    return sum(e["details"]["lease_id"] == setup.lease_id for e in found.json()["items"])


async def test_disk_full_refuses_what_it_cannot_record(
    setup: Setup, settings: Settings, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database may not grow by a page (SQLITE_FULL, as on a full disk): each request
    reaches upstream only if its use was committed, and the full disk refuses some."""
    path = sqlite_only(settings)
    with sqlite3.connect(path) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    real = engine.Database._writer_connection

    def full_disk(db: engine.Database) -> sqlite3.Connection:
        conn = real(db)
        conn.execute(f"PRAGMA max_page_count={pages}")
        return conn

    monkeypatch.setattr(engine.Database, "_writer_connection", full_disk)
    before = (await setup.lease_view())["uses"]
    fake.clear()

    answers = [await setup.call(f"/echo/fill-{i}") for i in range(4)]
    answers += await burst(setup, "full")

    ok = [a for a in answers if not refused(a)]
    assert len(ok) < len(answers), "the full disk refused nothing: the test proves nothing"
    assert len(fake.seen) == len(ok)
    monkeypatch.undo()
    assert (await setup.lease_view())["uses"] == before + len(ok)
    assert await uses_audited(setup) == before + len(ok)
    again = await setup.call("/echo/after-full")
    assert again.status_code == 200, again.text
    verify = (await setup.http.get("/v1/audit/verify")).json()
    assert verify["ok"] is True, verify


async def test_a_locked_database_refuses_and_sends_nothing(
    setup: Setup, settings: Settings, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the write lock longer than a batch waits for it."""
    path = sqlite_only(settings)
    monkeypatch.setattr(engine, "LOCK_WAIT", 0.3)
    before = (await setup.lease_view())["uses"]
    fake.clear()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        answers = await burst(setup, "locked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert all(refused(a) for a in answers)
    assert fake.seen == []
    assert (await setup.lease_view())["uses"] == before
    again = await setup.call("/echo/unlocked")
    assert again.status_code == 200, again.text
    assert [s.path for s in fake.seen] == ["/echo/unlocked"]


async def test_an_unwritable_audit_log_refuses_a_burst(
    setup: Setup, settings: Settings, fake: FakeUpstream
) -> None:
    before = (await setup.lease_view())["uses"]
    fake.clear()
    await make_audit_unwritable(settings)

    answers = await burst(setup, "burst")

    assert Counter(a.status_code for a in answers) == {503: CONCURRENT}
    assert all(refused(a) for a in answers)
    assert fake.seen == []
    await drop_trigger(settings)
    assert (await setup.lease_view())["uses"] == before
    assert (await setup.call("/echo/burst-after")).status_code == 200
