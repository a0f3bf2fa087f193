"""Audit shipping: committed records to each configured sink, at least once, in order.

One task per sink in the serving process, off the request path: it reads the records
after the sink's cursor (``audit_ship_cursors``), a batch at a time in ``seq`` order,
hands them to the sink, and only once the sink has them moves the cursor. A failed
delivery is retried with a doubling wait (capped) and noted on the cursor row, so
``/readyz`` on every node can say which sink is behind, since when and why. Nothing is
skipped: the cursor moves only past what was delivered; what was delivered but not yet
recorded (a crash in between) is delivered again.

On several nodes one node ships each sink: the one that holds the row's claim, taken
and renewed by conditional updates (``store.audit_ship``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from keyfob.audit import Event
from keyfob.clock import isoformat
from keyfob.errors import KeyfobError
from keyfob.metrics import Metrics
from keyfob.settings import Settings
from keyfob.store import audit_log
from keyfob.store import audit_ship as cursor_sql
from keyfob.tokens import new_id
from keyfob.vault.core import Core

log = logging.getLogger("keyfob.audit.shipping")

# Seconds ``close`` lets a batch in flight finish before cancelling it.
CLOSE_GRACE = 5.0


class ShipFailed(Exception):
    """A delivery did not happen; the message is safe to log and store (no secret, no
    URL path or query)."""


class Sink(Protocol):
    """Somewhere shipped records go; ``send`` returns once they are delivered."""

    name: str

    async def send(self, events: Sequence[Event]) -> None: ...

    async def close(self) -> None: ...


def configured_sinks(settings: Settings) -> list[str]:
    """The sink names ``settings`` turns on, in a fixed order."""
    names = []
    if settings.audit_ship_file is not None:
        names.append("file")
    if settings.audit_ship_syslog is not None:
        names.append("syslog")
    if settings.audit_ship_webhook is not None:
        names.append("webhook")
    return names


@dataclass(frozen=True)
class Policy:
    batch: int = 500
    poll: float = 1.0
    retry_initial: float = 1.0
    retry_max: float = 60.0
    claim_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            settings.audit_ship_batch,
            settings.audit_ship_poll,
            settings.audit_ship_retry_initial,
            max(settings.audit_ship_retry_max, settings.audit_ship_retry_initial),
            settings.audit_ship_claim_seconds,
        )

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` failures in a row: doubling, capped."""
        return float(min(self.retry_max, self.retry_initial * 2 ** min(failures - 1, 32)))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ShipFailed):
        return str(exc)[:300]
    return type(exc).__name__  # a foreign exception's text may hold anything


class Shipping:
    """Ships the audit log to ``sinks``; ``status`` reads how far each one is."""

    def __init__(self, core: Core, settings: Settings, metrics: Metrics | None = None) -> None:
        self._core = core
        self.policy = Policy.from_settings(settings)
        self.configured = configured_sinks(settings)
        self._metrics = metrics
        # Who holds a claim: readable in the table, unique per process.
        self.who = f"{socket.gethostname()[:32]}:{os.getpid()}:{new_id()[:12]}"[:64]
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sinks: list[Sink] = []
        self._wakes: dict[str, asyncio.Event] = {}
        self._held_until: dict[str, datetime] = {}
        self._stopping = False
        self._stop = asyncio.Event()

    def wake(self) -> None:
        """New records were committed here: look at once (cheap; called per commit)."""
        for event in self._wakes.values():
            event.set()

    async def start(self, sinks: Sequence[Sink]) -> None:
        """Start one shipping task per sink."""
        loop = asyncio.get_running_loop()
        for sink in sinks:
            self._sinks.append(sink)
            self._wakes[sink.name] = asyncio.Event()
            self._tasks[sink.name] = loop.create_task(self._run(sink))

    async def close(self) -> None:
        """Stop shipping, give the claims up and close the sinks (what was not recorded as
        delivered is delivered again by whoever ships next)."""
        self._stopping = True
        self._stop.set()
        self.wake()
        tasks = list(self._tasks.values())
        if tasks:
            # A batch in flight finishes and is recorded, unless the sink hangs.
            _, hung = await asyncio.wait(tasks, timeout=CLOSE_GRACE)
            for task in hung:
                task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sink in self._sinks:
            with contextlib.suppress(Exception):
                await sink.close()
            with contextlib.suppress(Exception):
                async with self._core.db.write() as tx:
                    await cursor_sql.release(tx.conn, sink.name, self.who)
        self._tasks.clear()
        self._sinks.clear()

    async def _run(self, sink: Sink) -> None:
        failures = 0
        wake = self._wakes[sink.name]
        while not self._stopping:
            try:
                moved = await self._step(sink)
            except KeyfobError as exc:  # the database is unavailable: try again later
                log.warning("audit shipping to %s: %s", sink.name, exc.detail)
                failures += 1
                await self._pause(self.policy.delay(failures))
                continue
            except Exception as exc:  # ShipFailed, or anything a sink raised
                failures += 1
                await self._failed(sink, exc)
                await self._pause(self.policy.delay(failures))
                continue
            failures = 0
            if moved:
                continue  # more may be waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.policy.poll)
            wake.clear()

    async def _pause(self, seconds: float) -> None:
        """Wait before a retry; only stopping cuts it short (commits do not)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _claim(self, sink: str) -> bool:
        """Hold the claim to ship ``sink``, renewing it once half of it has passed."""
        now = self._core.clock.now()
        held = self._held_until.get(sink)
        claim = timedelta(seconds=self.policy.claim_seconds)
        if held is not None and now < held - claim / 2:
            return True
        until = now + claim
        async with self._core.db.read() as conn:
            row = await cursor_sql.get(conn, sink)
        if (
            row is not None
            and row.claimed_by not in (None, self.who)
            and row.claimed_until is not None
            and row.claimed_until >= isoformat(now)
        ):
            # Another node ships it: look again next time without taking the write lock.
            self._held_until.pop(sink, None)
            return False
        async with self._core.db.write() as tx:
            await cursor_sql.ensure(tx.conn, sink, isoformat(now))
            won = await cursor_sql.claim(tx.conn, sink, self.who, isoformat(now), isoformat(until))
        if won:
            self._held_until[sink] = until
        else:
            self._held_until.pop(sink, None)
        return won

    async def _step(self, sink: Sink) -> bool:
        """Ship one batch; True when the cursor moved."""
        if not await self._claim(sink.name):
            return False
        async with self._core.db.read() as conn:
            cursor = await cursor_sql.get(conn, sink.name)
            if cursor is None:
                return False
            events = await audit_log.query(conn, after=cursor.seq, limit=self.policy.batch)
            head = await audit_log.head(conn)
        behind = (head[0] if head else cursor.seq) - cursor.seq
        if self._metrics is not None:
            self._metrics.ship_lag(sink.name, behind)
        if not events:
            return False
        await sink.send(events)
        now = self._core.clock.now()
        until = now + timedelta(seconds=self.policy.claim_seconds)
        async with self._core.db.write() as tx:
            moved = await cursor_sql.advance(
                tx.conn,
                sink.name,
                self.who,
                after=cursor.seq,
                seq=events[-1].seq,
                digest=events[-1].hash,
                now=isoformat(now),
                until=isoformat(until),
            )
        if not moved:
            # Another node took the sink over meanwhile: it resends from the cursor.
            self._held_until.pop(sink.name, None)
            return False
        self._held_until[sink.name] = until
        if self._metrics is not None:
            self._metrics.shipped(sink.name, len(events), behind - len(events))
        return True

    async def _failed(self, sink: Sink, exc: BaseException) -> None:
        error = _describe(exc)
        log.warning("audit shipping to %s failed, will retry: %s", sink.name, error)
        if self._metrics is not None:
            self._metrics.ship_failed(sink.name)
        with contextlib.suppress(Exception):
            async with self._core.db.write() as tx:
                await cursor_sql.failed(tx.conn, sink.name, self.who, self._core.now(), error)

    async def status(self) -> list[dict[str, Any]]:
        """Each configured sink: how far behind, and what is wrong (``problem``) if so."""
        if not self.configured:
            return []
        async with self._core.db.read() as conn:
            cursors = await cursor_sql.every(conn)
            head = await audit_log.head(conn)
        last = head[0] if head else 0
        now = self._core.now()
        out = []
        for name in self.configured:
            cursor = cursors.get(name)
            seq = cursor.seq if cursor else 0
            behind = max(0, last - seq)
            shipping = bool(
                cursor and cursor.claimed_until is not None and cursor.claimed_until >= now
            )
            problem = None
            if cursor is not None and cursor.failing_since is not None:
                problem = (
                    f"audit shipping to {name} is {behind} records behind since "
                    f"{cursor.failing_since}, last error: {cursor.last_error}"
                )
            elif behind and not shipping:
                problem = (
                    f"audit shipping to {name} is {behind} records behind and no node ships it"
                )
            out.append(
                {
                    "sink": name,
                    "shipped_seq": seq,
                    "behind": behind,
                    "failing_since": cursor.failing_since if cursor else None,
                    "last_error": cursor.last_error if cursor else None,
                    "problem": problem,
                }
            )
        return out
