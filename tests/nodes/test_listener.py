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
