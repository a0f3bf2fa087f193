"""The dashboard's OAuth connect flows in the database: live ten minutes, taken once,
only by the starting browser, bounded in number, and tamper-evident at rest."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from keyfob.clock import FrozenClock
from keyfob.errors import Conflict
from keyfob.secret import Secret
from keyfob.store.tables import oauth_flows
from keyfob.vault import Context, Vault
from keyfob.vault import connect_flows as flows
from tests.core.conftest import run_sql


def flow(name: str = "default") -> flows.Flow:
    return flows.Flow(
        actor="user:u1",
        preset="oauth",
        environment="prod",
        name=name,
        profile={"preset": "oauth"},
        client_id="client-1",
        client_secret=Secret("cs-canary-0123456789"),
        verifier=flows.new_verifier(),
        redirect_uri="https://keyfob.example/ui/connect/callback",
    )


async def test_a_flow_is_taken_once_by_its_browser(clocked: Vault) -> None:
    started = await clocked.connect_flows.start(flow())

    assert await clocked.connect_flows.take(started.state, "another-browser") is None
    taken = await clocked.connect_flows.take(started.state, started.browser)
    again = await clocked.connect_flows.take(started.state, started.browser)

    assert taken is not None
    assert taken.client_secret.reveal() == "cs-canary-0123456789"
    assert (taken.actor, taken.name, taken.client_id) == ("user:u1", "default", "client-1")
    assert again is None


async def test_a_flow_expires_after_ten_minutes(clocked: Vault, clock: FrozenClock) -> None:
    late = await clocked.connect_flows.start(flow("late"))
    in_time = await clocked.connect_flows.start(flow("in-time"))

    clock.advance(flows.FLOW_SECONDS - 1)
    assert await clocked.connect_flows.take(in_time.state, in_time.browser) is not None
    clock.advance(2)
    assert await clocked.connect_flows.take(late.state, late.browser) is None


async def test_flows_in_progress_are_bounded_and_expired_ones_make_room(
    clocked: Vault, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flows, "MAX_FLOWS", 3)
    for _ in range(3):
        await clocked.connect_flows.start(flow())

    with pytest.raises(Conflict):
        await clocked.connect_flows.start(flow())
    clock.advance(flows.FLOW_SECONDS + 1)
    assert await clocked.connect_flows.start(flow()) is not None


async def test_a_row_moved_to_another_state_does_not_open(clocked: Vault) -> None:
    """The sealed flow is bound to its state's digest: copied under another key, it fails."""
    first = await clocked.connect_flows.start(flow("first"))
    second = await clocked.connect_flows.start(flow("second"))
    digest = flows._digest  # the key the rows are stored under
    async with clocked.db.read() as conn:
        row = (
            await conn.execute(
                oauth_flows.select().where(oauth_flows.c.state_digest == digest(first.state))
            )
        ).one()
    await run_sql(
        clocked,
        update(oauth_flows)
        .where(oauth_flows.c.state_digest == digest(second.state))
        .values(kek_term=row.kek_term, wrapped_dek=row.wrapped_dek, ciphertext=row.ciphertext),
    )

    assert await clocked.connect_flows.take(second.state, second.browser) is None


async def test_a_flow_in_progress_survives_rotate_rewrap_retire(clocked: Vault) -> None:
    ctx = Context("operator:test")
    started = await clocked.connect_flows.start(flow())

    await clocked.keys.rotate(ctx)
    await clocked.keys.rewrap(ctx)
    await clocked.keys.retire(ctx, 1)
    taken = await clocked.connect_flows.take(started.state, started.browser)

    assert taken is not None
    assert taken.client_secret.reveal() == "cs-canary-0123456789"
