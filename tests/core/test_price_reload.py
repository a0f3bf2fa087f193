"""Several nodes, one price table: a price an operator sets on one node meters requests on
the others too, without a restart (each node checks for changes every few seconds)."""

from __future__ import annotations

import pytest

from keyfob.settings import Settings
from keyfob.vault import Context, Vault
from keyfob.vault import usage as usage_service


async def test_another_nodes_price_change_is_picked_up(
    vault: Vault, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = await Vault.open(settings)
    try:
        before = other.pricing.table.lookup("gpt-4o-mini")
        assert before is not None

        await vault.pricing.set(
            Context("operator:test"), {"model": "gpt-4o-mini", "input": 700, "output": 900}
        )
        monkeypatch.setattr(usage_service, "RELOAD_SECONDS", 1e9)
        other.pricing.poke()  # within the check interval: nothing happens yet
        unchanged = other.pricing.table.lookup("gpt-4o-mini")
        monkeypatch.setattr(usage_service, "RELOAD_SECONDS", 0.0)
        other.pricing.poke()
        await other.pricing.close()  # the check it started, done
        after = other.pricing.table.lookup("gpt-4o-mini")

        assert other.proxy.on_request == other.pricing.poke  # every proxied request pokes
        assert unchanged == before
        assert after is not None
        assert (after.input, after.output, after.source) == (700, 900, "operator")
        assert other.pricing.table.version == vault.pricing.table.version
    finally:
        await other.close()
