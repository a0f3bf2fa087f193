"""Lease retention: leases long expired are deleted with their budget counters, in audited
batches, on SQLite and PostgreSQL; live and recently expired ones stay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from keyfob.app import asgi as app_module
from keyfob.clock import isoformat
from keyfob.settings import Settings
from keyfob.store.tables import budget_usage, lease_bundles, lease_requests, leases
from keyfob.vault import Vault
from keyfob.vault.retention import Retention
from tests.access.factories import audit, audit_count, check, make_grant, make_lease
from tests.proxy.test_fail_closed import drop_trigger, make_audit_unwritable

WEEK = timedelta(days=7)


class Later:
    """The real clock, moved ``ahead``: what the vault sees some days from now."""

    def __init__(self, ahead: timedelta) -> None:
        self.ahead = ahead

    def now(self) -> datetime:
        return datetime.now(UTC) + self.ahead


async def _column(vault: Vault, column: Any) -> set[str]:
    """Every value of ``column`` (a key column) in the vault's database."""
    async with vault.db.read() as conn:
        return {row[0] for row in (await conn.execute(select(column))).all()}


async def _lease_ids(vault: Vault) -> set[str]:
    return await _column(vault, leases.c.id)


async def _add_rows(
    vault: Vault,
    owners: list[str],
    bundles: dict[str, datetime],
    requests: dict[str, datetime] | None = None,
) -> None:
    """Budget counters, multi-set leases and lease requests (expiring when given)."""
    async with vault.core.write() as tx:
        for owner in owners:
            await tx.conn.execute(
                budget_usage.insert().values(owner=owner, unit="requests", period="total", used=3)
            )
        for bundle_id, expires in bundles.items():
            await tx.conn.execute(
                lease_bundles.insert().values(
                    id=bundle_id,
                    digest=bundle_id.ljust(64, "0"),
                    agent_id="a",
                    lease_ids="[]",
                    set_paths="[]",
                    created_at=isoformat(expires - timedelta(hours=1)),
                    expires_at=isoformat(expires),
                )
            )
        for request_id, expires in (requests or {}).items():
            await tx.conn.execute(
                lease_requests.insert().values(
                    id=request_id,
                    agent_id="a",
                    grant_id="g",
                    set_path="openai/prod/default",
                    scope="request",
                    ttl=60,
                    status="approved",
                    created_at=isoformat(expires - timedelta(minutes=10)),
                    expires_at=isoformat(expires),
                    lease_id="l",
                )
            )


async def _short_and_long(
    client: httpx.AsyncClient, agent: dict[str, Any], short: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``short`` request leases (60 s) and one workflow lease of a day."""
    await make_grant(client, agent, scopes=["request", "workflow"], max_lease_ttl=86400)
    gone = [await make_lease(client, agent["token"], scope="request") for _ in range(short)]
    kept = await make_lease(client, agent["token"], scope="workflow", ttl=86400)
    return gone, kept


async def test_leases_past_retention_go_with_their_counters_and_one_record(
    client: httpx.AsyncClient, vault: Vault, agent: dict[str, Any], settings: Settings
) -> None:
    gone, kept = await _short_and_long(client, agent, 3)
    grant_owner = f"grant:{kept['grant_id']}"
    await _add_rows(
        vault,
        [f"lease:{gone[0]['id']}", f"lease:{kept['id']}", grant_owner],
        {"bundle_old": datetime.now(UTC), "bundle_new": datetime.now(UTC) + timedelta(days=2)},
        {"request_old": datetime.now(UTC), "request_new": datetime.now(UTC) + timedelta(days=2)},
    )
    before = await audit_count(client)
    # A week and an hour on: the request leases expired more than a week ago, the
    # workflow lease (a day long) less than that.
    vault.core.clock = Later(WEEK + timedelta(hours=1))

    assert await vault.leases.prune(WEEK) == 3

    assert await _lease_ids(vault) == {kept["id"]}
    assert await _column(vault, budget_usage.c.owner) == {f"lease:{kept['id']}", grant_owner}
    assert await _column(vault, lease_bundles.c.id) == {"bundle_new"}
    assert await _column(vault, lease_requests.c.id) == {"request_new"}
    (record,) = await audit(client, "lease.prune")
    assert record["actor"] == "system"
    assert record["target"] == "vault"
    assert record["details"]["leases"] == 3
    assert record["details"]["bundles"] == 1
    assert record["details"]["requests"] == 1
    cutoff = datetime.fromisoformat(record["details"]["expired_before"])
    assert timedelta(hours=1) - timedelta(minutes=1) < cutoff - datetime.now(UTC)
    assert cutoff - datetime.now(UTC) < timedelta(hours=1) + timedelta(minutes=1)
    assert await audit_count(client) == before + 1  # the chain verifies with it
    listed = (await client.get("/v1/leases", params={"all": "true"})).json()["items"]
    assert [lease["id"] for lease in listed] == [kept["id"]]
    # A deleted lease's token is unknown now; the kept one is known to have expired.
    unknown = await check(client, gone[1]["token"], action="export")
    expired = await check(client, kept["token"], action="export")
    assert unknown.status_code == 401, unknown.text
    assert expired.status_code == 200, expired.text
    assert expired.json()["reason"] == "expired"
    # Nothing more is due: no deletion, no record.
    assert await vault.leases.prune(WEEK) == 0
    assert len(await audit(client, "lease.prune")) == 1


async def test_nothing_within_retention_is_deleted(
    client: httpx.AsyncClient, vault: Vault, agent: dict[str, Any]
) -> None:
    gone, kept = await _short_and_long(client, agent, 2)
    vault.core.clock = Later(WEEK - timedelta(hours=1))  # expired, but not a week ago

    assert await vault.leases.prune(WEEK) == 0

    assert await _lease_ids(vault) == {gone[0]["id"], gone[1]["id"], kept["id"]}
    assert await audit(client, "lease.prune") == []


async def test_an_old_request_alone_is_deleted_and_audited(
    client: httpx.AsyncClient, vault: Vault
) -> None:
    await _add_rows(vault, [], {}, {"request_old": datetime.now(UTC) - timedelta(days=8)})

    assert await vault.leases.prune(WEEK) == 0  # no lease went

    assert await _column(vault, lease_requests.c.id) == set()
    (record,) = await audit(client, "lease.prune")
    assert (record["details"]["leases"], record["details"]["requests"]) == (0, 1)


async def test_a_backlog_goes_in_batches_each_with_its_record(
    client: httpx.AsyncClient, vault: Vault, agent: dict[str, Any]
) -> None:
    await _short_and_long(client, agent, 5)
    vault.core.clock = Later(WEEK + timedelta(hours=1))

    assert await vault.leases.prune(WEEK, batch=2) == 5

    records = await audit(client, "lease.prune")
    assert [r["details"]["leases"] for r in records] == [2, 2, 1]
    text = (await client.get("/metrics")).text
    (line,) = [x for x in text.splitlines() if x.startswith("keyfob_leases_pruned_total ")]
    assert float(line.split()[1]) == 5
    assert len({r["request_id"] for r in records}) == 1  # one run
    assert len(await _lease_ids(vault)) == 1


async def test_no_audit_record_no_deletion(
    client: httpx.AsyncClient, vault: Vault, agent: dict[str, Any], settings: Settings
) -> None:
    gone, kept = await _short_and_long(client, agent, 2)
    await _add_rows(vault, [f"lease:{gone[0]['id']}"], {})
    vault.core.clock = Later(WEEK + timedelta(hours=1))
    await make_audit_unwritable(settings)
    try:
        with pytest.raises(Exception, match="disk full"):
            await vault.leases.prune(WEEK)
        assert await _lease_ids(vault) == {gone[0]["id"], gone[1]["id"], kept["id"]}
        assert await _column(vault, budget_usage.c.owner) == {f"lease:{gone[0]['id']}"}
    finally:
        await drop_trigger(settings)
    assert await vault.leases.prune(WEEK) == 2


async def test_the_task_prunes_on_its_own_and_stops(
    client: httpx.AsyncClient, vault: Vault, agent: dict[str, Any]
) -> None:
    await _short_and_long(client, agent, 2)
    vault.core.clock = Later(timedelta(days=8, hours=1))
    task = Retention(vault.leases, days=8, first=0.01, interval=0.01)
    task.start()
    try:
        for _ in range(500):
            if len(await _lease_ids(vault)) == 1:
                break
            await asyncio.sleep(0.01)
        assert len(await _lease_ids(vault)) == 1
    finally:
        await task.close()
    assert len(await audit(client, "lease.prune")) == 1


async def test_retention_zero_keeps_leases_forever(
    client: httpx.AsyncClient, vault: Vault, agent: dict[str, Any]
) -> None:
    await _short_and_long(client, agent, 1)
    vault.core.clock = Later(timedelta(days=3650))
    task = Retention(vault.leases, days=0, first=0.0, interval=0.0)
    assert not task.enabled
    task.start()
    await asyncio.sleep(0.05)
    await task.close()
    assert len(await _lease_ids(vault)) == 2


async def test_the_serving_process_runs_the_task(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``create_app`` without a vault (as ``keyfob serve``) starts it in its lifespan."""
    monkeypatch.setattr(app_module, "settle_heap", lambda: None)  # leave the test's gc alone
    vault, _ = await Vault.initialise(settings)
    await vault.close()
    app = app_module.create_app(settings)
    async with app.router.lifespan_context(app.api):
        running: Vault = app.state.vault
        assert running.retention.running
    assert not running.retention.running


def test_the_server_keeps_a_week_by_default() -> None:
    assert Settings.model_fields["lease_retention_days"].default == 7
