"""Cache notices between nodes: PostgreSQL ``LISTEN``/``NOTIFY`` on one channel.

A write that changes something other nodes keep in memory (a KEK term, the price table,
the CA, a set's data keys, an access token) adds a notice to its transaction
(``Tx.announce``); PostgreSQL delivers it to every listening node when, and only if,
the transaction commits. The database stays the source of truth for every decision
that must be exact: notices only drop caches.

``Listener`` holds one dedicated connection per node (outside the pool). A notice
arrives as ``on_notice(payload)``. Whenever the node may have missed notices — at
(re)connection, and every ``ttl`` seconds while the connection is down — it calls
``on_reset()`` instead, which drops every cache: staleness stays bounded by ``ttl``
even without the listener. Liveness is checked every ``ttl`` seconds with a query,
since a dead TCP peer is otherwise noticed only when the kernel gives up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from keyfob.secret import Secret
from keyfob.store._asyncio import AsyncConnection

log = logging.getLogger("keyfob.store")

CHANNEL = "keyfob_cache"
APP_NAME = "keyfob-listener"  # how the connection shows in pg_stat_activity
# A notice payload is at most 8000 bytes in PostgreSQL; ours are a topic and an id.
MAX_PAYLOAD = 200
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


async def send(conn: AsyncConnection, notices: list[str]) -> None:
    """Queue ``notices`` on the open transaction (delivered at its commit)."""
    for payload in dict.fromkeys(notices):  # once each, in order
        await conn.execute(_NOTIFY, {"channel": CHANNEL, "payload": payload[:MAX_PAYLOAD]})


def _connect_args(url: str) -> dict[str, Any]:
    """``asyncpg.connect`` keywords as the engine's own dialect derives them from ``url``,
    so the listener connects as the engine does (``?ssl=verify-full`` included)."""
    import inspect

    import asyncpg

    parsed = make_url(url)
    _, params = parsed.get_dialect()().create_connect_args(parsed)
    accepted = inspect.signature(asyncpg.connect).parameters
    return {k: v for k, v in params.items() if k in accepted}


class Listener:
    """One node's ``LISTEN`` connection, reconnected forever until ``close``."""

    def __init__(
        self,
        url: str,
        on_notice: Callable[[str], None],
        on_reset: Callable[[], None],
        ttl: float,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self._url = Secret(url)  # may hold the database password
        self._on_notice = on_notice
        self._on_reset = on_reset
        self._on_state = on_state
        self.ttl = ttl
        self.connected = False
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closing = False

    async def start(self, wait: float = 5.0) -> None:
        """Start listening; waits up to ``wait`` s for the first connection (a node that
        cannot listen still serves, on the TTL)."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), wait)

    async def _ping(self, conn: Any) -> None:
        """Wait ``ttl``, then check that the connection still answers."""
        await asyncio.sleep(self.ttl)
        async with asyncio.timeout(max(self.ttl, 1.0)):
            await conn.fetchval("SELECT 1")

    async def close(self) -> None:
        # The flag ends the loops even if the cancellation below is lost: Python 3.11's
        # ``asyncio.wait_for`` returns the result of an inner call that finished in the
        # same turn and drops the cancel (a node's close then waited forever, pinging).
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _state(self, up: bool) -> None:
        self.connected = up
        if self._on_state is not None:
            self._on_state(up)

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            self._on_notice(payload)
        except Exception:  # a bad handler must not kill the listener
            log.exception("cache notice handler failed")

    async def _run(self) -> None:
        import asyncpg

        backoff = 0.1
        while not self._closing:
            conn = None
            try:
                async with asyncio.timeout(max(self.ttl, 1.0)):
                    conn = await asyncpg.connect(
                        **_connect_args(self._url.reveal()),
                        server_settings={"application_name": APP_NAME},
                    )
                await conn.add_listener(CHANNEL, self._notified)
                self._state(True)
                # Anything changed while this node was not listening is unknown: drop all.
                self._on_reset()
                self._ready.set()
                backoff = 0.1
                while not self._closing and not conn.is_closed():
                    await self._ping(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected:
                    log.warning("cache listener lost its connection: %s", type(exc).__name__)
            finally:
                self._state(False)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(1.0):
                            await conn.close()
            self._ready.set()
            if self._closing:
                return
            # While down, caches live at most ``ttl`` seconds.
            self._on_reset()
            await asyncio.sleep(min(backoff, self.ttl))
            backoff = min(backoff * 2, 5.0)
