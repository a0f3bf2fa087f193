"""Two shippers on one database: only the one holding a sink's claim ships it; when it
stops (cleanly, or its claim lapses) the other carries on from the cursor."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from keyfob.audit import Event, ShippedChain
from keyfob.clock import FrozenClock
from keyfob.settings import Settings
from keyfob.vault import Vault
from keyfob.vault.shipping import Shipping
from tests.shipping.conftest import (
    FAST,
    app_client,
    head_seq,
    make_records,
    operator_token,
    wait_for,
)


class Collecting:
    """A sink that keeps what it is sent (shared by both shippers, as one SIEM would be)."""

    name = "webhook"

    def __init__(self, into: list[tuple[str, int]], who: str, events: list[Event]) -> None:
        self.into = into
        self.who = who
        self.events = events

    async def send(self, events: Sequence[Event]) -> None:
        self.into.extend((self.who, e.seq) for e in events)
        self.events.extend(events)

    async def close(self) -> None:
        return None


async def test_one_node_ships_a_sink_and_another_takes_over(
    settings: Settings, open_shipping_vault: Callable[..., Awaitable[Vault]]
) -> None:
    if settings.database_url is None:
        # Two vaults on one SQLite file in one event loop can deadlock on the file lock
        # (one's on-loop batch waits for the other's transaction, which needs the loop):
        # a test artefact, not a deployment. The claim is the same conditional UPDATE on
        # both backends; PostgreSQL runs it here with two shippers.
        pytest.skip("two shippers in one process need PostgreSQL (SQLite file lock)")
    clock = FrozenClock()
    first = await open_shipping_vault(audit_ship_webhook="https://siem.invalid/hook")
    second_settings = first.settings
    second = await Vault.open(second_settings, clock=clock)
    try:
        first.core.clock = clock
        delivered: list[tuple[str, int]] = []
        events: list[Event] = []
        a = Shipping(first.core, second_settings)
        b = Shipping(second.core, second_settings)
        await a.start([Collecting(delivered, "a", events)])
        await make_records(first, 10)
        last = await head_seq(first)
        await wait_for(lambda: len(delivered) >= last)
        await b.start([Collecting(delivered, "b", events)])
        await make_records(second, 10)
        last = await head_seq(first)
        await wait_for(lambda: max(s for _, s in delivered) == last)
        # b has been polling all along, but a holds the claim: only a shipped.
        assert {who for who, _ in delivered} == {"a"}

        # a dies without letting go: b waits until a's claim lapses, then carries on.
        before_crash = len(delivered)
        for task in a._tasks.values():
            task.cancel()
        await make_records(first, 7)
        last = await head_seq(first)
        await asyncio.sleep(0.2)  # ten of b's polls: the claim is a's still
        assert max(s for _, s in delivered) < last
        clock.advance(FAST.get("audit_ship_claim_seconds", 30) + 1)
        await wait_for(lambda: max(s for _, s in delivered) == last)
        assert {who for who, s in delivered if s > last - 7} == {"b"}
    finally:
        await a.close()
        await b.close()
        await second.close()
    # Every record in order across both shippers, the chain verified. Killing a between
    # a delivery and its cursor update (at least once) may repeat that one batch, no more.
    chain = ShippedChain()
    assert chain.feed_all(e.as_dict() for e in events) == last
    assert chain.ok, chain.first_bad
    assert chain.farthest_back <= FAST["audit_ship_batch"]
    assert len(delivered) - last == chain.duplicates <= FAST["audit_ship_batch"]
    assert [s for _, s in delivered[: before_crash]] == list(range(1, before_crash + 1))


async def test_readyz_says_when_no_node_ships_a_sink(
    open_shipping_vault: Callable[..., Awaitable[Vault]], tmp_path: Path
) -> None:
    """Configured but shipped by nobody (its node gone): degraded, the vault still ready."""
    vault = await open_shipping_vault(audit_ship_file=tmp_path / "never.jsonl")
    await make_records(vault, 2)
    async with app_client(vault, await operator_token(vault)) as http:
        answer = await http.get("/readyz")
    async with app_client(vault) as http:
        anonymous = await http.get("/readyz")
    # A load balancer learns only that it is degraded: not the sink, nor its file.
    assert anonymous.status_code == 200
    assert anonymous.json() == {"status": "degraded"}
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "degraded"
    last = await head_seq(vault)
    assert body["degraded"] == [
        f"audit shipping to file is {last} records behind and no node ships it"
    ]
    assert body["audit_shipping"][0]["shipped_seq"] == 0
