"""Several processes, one price table: a price an operator sets in one process meters
requests in the others too, without a restart. On PostgreSQL the ``prices`` notice
carries it (tests/nodes); where there are no notices (SQLite) each process checks the
table every ``RELOAD_SECONDS`` in the background."""

from __future__ import annotations

import asyncio

import pytest

from keyfob.settings import Settings
from keyfob.vault import Context, Vault
from keyfob.vault import usage as usage_service


async def _set_price(vault: Vault) -> None:
    await vault.pricing.set(
        Context("operator:test"), {"model": "gpt-4o-mini", "input": 700, "output": 900}
    )


async def test_a_change_check_reads_another_processes_prices(
    vault: Vault, settings: Settings
) -> None:
    other = await Vault.open(settings)
    try:
        before = other.pricing.table.lookup("gpt-4o-mini")
        await _set_price(vault)
        unchanged = other.pricing.table.lookup("gpt-4o-mini")  # nothing read yet
        await other.pricing.reload_if_changed()
        after = other.pricing.table.lookup("gpt-4o-mini")

        assert before is not None
        assert unchanged == before
        assert after is not None
        assert (after.input, after.output, after.source) == (700, 900, "operator")
        assert other.pricing.table.version == vault.pricing.table.version
    finally:
        await other.close()


async def test_without_notices_a_background_check_picks_the_change_up(
    vault: Vault, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not vault.core.db.is_sqlite:
        pytest.skip("PostgreSQL carries price changes as notices (tests/nodes)")
    monkeypatch.setattr(usage_service, "RELOAD_SECONDS", 0.02)
    other = await Vault.open(settings)
    try:
        await other.caches.start(1.0)
        await _set_price(vault)
        for _ in range(200):
            after = other.pricing.table.lookup("gpt-4o-mini")
            if after is not None and after.source == "operator":
                break
            await asyncio.sleep(0.01)
        assert after is not None
        assert (after.input, after.output) == (700, 900)
    finally:
        await other.close()
