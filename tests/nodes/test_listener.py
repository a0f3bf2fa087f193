"""The cache listener's fallback: a node that cannot listen drops its caches every TTL.

No database is needed: the listener points at a closed port, as when PostgreSQL (or the
path to it) is gone for the dedicated connection.
"""

from __future__ import annotations

import asyncio

from keyfob.store.notify import Listener
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
