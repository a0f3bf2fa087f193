"""What a node keeps in memory that another node can change, and how it is dropped.

Every exact decision (lease use, caps, rate, budgets, revocation, the audit chain) reads
the database inside the locked write transaction; nothing here takes part in one. These
caches only save work: KEK terms and unwrapped data keys, the price table, keyfob's CA
signer and leaf certificates, OAuth access tokens, and (through ``subscribe``) the
proxy's scrubbers. A change made on one node is announced (``Tx.announce``) and every
node drops its copy when the notice arrives (see ``store.notify``; docs/deploy.md lists
each cache).

Notices: ``keys`` (a KEK term added or retired, DEKs rewrapped), ``prices``, ``ca``,
``set:<id>`` (a set's versions changed, it was deleted or purged), ``token:<id>`` (a
set's access token was refreshed or dropped), ``all`` (the database was restored).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from keyfob.store import keyring as keyring_sql
from keyfob.store.notify import Listener

if TYPE_CHECKING:
    from keyfob.vault.authority import Authority
    from keyfob.vault.core import Core
    from keyfob.vault.refresh import Refresher
    from keyfob.vault.usage import Pricing

log = logging.getLogger("keyfob.caches")

KEYS = "keys"
PRICES = "prices"
CA = "ca"
SET = "set"
TOKEN = "token"  # noqa: S105 - a notice topic, not a credential
TOPICS = (KEYS, PRICES, CA, SET, TOKEN)
ALL = "all"  # the database was replaced (restore): drop everything


class Caches:
    def __init__(
        self, core: Core, pricing: Pricing, authority: Authority, refresh: Refresher
    ) -> None:
        self._core = core
        self._pricing = pricing
        self._authority = authority
        self._refresh = refresh
        self._set_hooks: list[Callable[[str | None], None]] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._listener: Listener | None = None
        self._polling: asyncio.Task[None] | None = None
        # Counted per topic (and ``reset``) for /metrics: how often this node dropped what.
        self.dropped: dict[str, int] = dict.fromkeys((*TOPICS, "reset"), 0)

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener.connected

    def subscribe(self, hook: Callable[[str | None], None]) -> None:
        """Call ``hook(set_id)`` when a set's cached material must go (None: every set)."""
        if hook not in self._set_hooks:
            self._set_hooks.append(hook)

    async def start(self, ttl: float) -> None:
        """Listen for other nodes' notices (PostgreSQL). SQLite has no notices: the only
        cache another process's change can leave stale there is the price table (every
        exact decision reads the file), so it is checked every ``RELOAD_SECONDS``."""
        if self._listener is not None or self._polling is not None:
            return
        self._listener = self._core.db.listener(self.notice, self.reset, ttl)
        if self._listener is not None:
            await self._listener.start()
        else:
            self._polling = asyncio.get_running_loop().create_task(self._poll_prices())

    async def _poll_prices(self) -> None:
        from keyfob.vault import usage

        while True:
            await asyncio.sleep(usage.RELOAD_SECONDS)
            await self._pricing.reload_if_changed()

    async def close(self) -> None:
        polling, self._polling = self._polling, None
        if polling is not None:
            polling.cancel()
            await asyncio.gather(polling, return_exceptions=True)
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def notice(self, payload: str) -> None:
        """Drop what ``payload`` names (``topic`` or ``topic:id``)."""
        topic, _, key = payload.partition(":")
        if topic == ALL:
            self.reset()
            return
        if topic not in self.dropped:
            return
        self.dropped[topic] += 1
        if topic == KEYS:
            self._core.data_keys.clear()
            self._later(self.sync_terms())
        elif topic == PRICES:
            self._later(self._pricing.load())
        elif topic == CA:
            self._authority.reset()
        elif topic == SET and key:
            self._core.data_keys.forget(key)
            self._refresh.forget(key)
            for hook in self._set_hooks:
                hook(key)
        elif topic == TOKEN and key:
            self._refresh.forget(key)

    def reset(self) -> None:
        """Drop everything: notices may have been missed (listener down or reconnected)."""
        self.dropped["reset"] += 1
        self._core.data_keys.clear()
        self._refresh.forget_all()
        self._authority.reset()
        for hook in self._set_hooks:
            hook(None)
        self._later(self.sync_terms())
        self._later(self._pricing.load())

    async def sync_terms(self) -> None:
        """Load KEK terms another node added; forget the ones it retired."""
        async with self._core.db.read() as conn:
            self._core.apply_terms(await keyring_sql.list_terms(conn))

    def _later(self, work: Coroutine[Any, Any, Any]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception as exc:  # the next notice or reset tries again
                log.warning("cache refresh failed: %s", type(exc).__name__)

        task = asyncio.get_running_loop().create_task(run())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
