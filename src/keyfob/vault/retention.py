"""Lease retention: leases (and multi-set leases and lease requests) that expired
``KEYFOB_LEASE_RETENTION_DAYS`` ago are deleted.

A single-use lease per request leaves a row per request (~0.5 kB with its indexes):
without this the table grows for ever and minting slows with it. The serving process
starts the task (``start``); it runs a minute after start, so a server restarted often
still prunes, then hourly. Every node may run it: a batch is an audited write, so the
audit head's lock orders batches, and one another node deleted first is simply not
found. A failed run is logged (the error's type only) and tried again at the next
interval.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from keyfob.vault.leases import Leases

log = logging.getLogger("keyfob.retention")

FIRST_RUN_SECONDS = 60.0
INTERVAL_SECONDS = 3600.0


class Retention:
    """The pruning task of one serving process: ``start``, then ``close`` on the way out."""

    def __init__(
        self,
        leases: Leases,
        days: float,
        first: float = FIRST_RUN_SECONDS,
        interval: float = INTERVAL_SECONDS,
    ) -> None:
        self._leases = leases
        self._keep = timedelta(days=days)
        self._first = first
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self._keep > timedelta(0)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        wait = self._first
        while True:
            await asyncio.sleep(wait)
            wait = self._interval
            try:
                pruned = await self._leases.prune(self._keep)
            except Exception as exc:  # the next run tries again
                log.warning(
                    "pruning expired leases failed (%s); trying again in %.0f s",
                    type(exc).__name__,
                    self._interval,
                )
            else:
                if pruned:
                    log.info("pruned %d leases past their retention", pruned)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
