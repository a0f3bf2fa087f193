"""The cache listener: a node that cannot listen drops its caches every TTL (no database
needed: the listener points at a closed port, as when PostgreSQL or the path to it is gone
for the dedicated connection), and ``close`` ends it even when a cancellation is lost.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keyfob.store.notify import Listener
from tests.support.backends import PG_SKIP_REASON, PG_URL, reset_postgres
from tests.support.server import free_port


async def test_a_listener_that_cannot_connect_drops_caches_every_ttl() -> None:
    resets: list[int] = []
    notices: list[str] = []
    url = f"postgresql+asyncpg://keyfob@127.0.0.1:{free_port()}/nowhere"
    listener = Listener(url, notices.append, lambda: resets.append(1), ttl=0.1)

    await listener.start(wait=0.5)
    try:
        # Resets keep coming while it is down (a bounded wait, not a timing claim).
        for _ in range(100):
            if len(resets) >= 3:
                break
            await asyncio.sleep(0.05)
    finally:
        await listener.close()

    assert not listener.connected
    assert notices == []
    assert len(resets) >= 3


def test_the_listener_connects_with_the_engines_tls_settings() -> None:
    """``?ssl=verify-full`` reaches asyncpg as its ``ssl`` argument (a DSN would turn it
    into a server setting and connect with ``prefer``, unverified)."""
    from keyfob.store.notify import _connect_args

    url = "postgresql+asyncpg://keyfob:pw@db.example:5433/vault?ssl=verify-full"
    args = _connect_args(url)
    assert args["ssl"] == "verify-full"
    assert (args["host"], args["port"], args["database"], args["user"]) == (
        "db.example",
        5433,
        "vault",
        "keyfob",
    )


@pytest.fixture
def pg_url() -> str:
    return reset_postgres()


@pytest.mark.postgres
@pytest.mark.skipif(PG_URL is None, reason=PG_SKIP_REASON)
async def test_close_ends_the_listener_even_when_a_cancellation_is_lost(pg_url: str) -> None:
    """Python 3.11's ``asyncio.wait_for`` drops a cancellation that arrives in the turn its
    inner call finishes; the listener's close then waited forever while it kept pinging.
    Here the ping swallows the cancellation outright."""
    lost: list[int] = []

    class Swallowing(Listener):
        async def _ping(self, conn: Any) -> None:
            try:
                await super()._ping(conn)
            except asyncio.CancelledError:
                lost.append(1)

    listener = Swallowing(pg_url, lambda _: None, lambda: None, ttl=0.05)
    await listener.start()
    assert listener.connected
    closing = asyncio.ensure_future(listener.close())
    done, _ = await asyncio.wait({closing}, timeout=5)
    if not done:  # the old close: clean up, then fail
        listener._closing = True
        await asyncio.wait({closing}, timeout=5)
        pytest.fail("close() did not end the listener")
    assert lost == [1]
    assert not listener.connected
