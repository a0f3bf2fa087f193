"""Group commit: the lease uses and audit records of concurrent requests share one commit.

Durable auditing must not serialise the proxy. Requests hand their work to one task,
which takes everything waiting, runs it in a single locked write transaction
(``Database.batch``) and answers each waiter after the commit. Two kinds of work:

- *uses* (``submit``): the caller waits for the commit, because what it does next (call
  an upstream) may only happen once its audit record is durable;
- *records* (``record``): outcome records nobody waits for. They ride along with the
  next batch of uses, or are committed on their own after ``LINGER`` seconds.

If a batch fails, every use in it gets ``Unavailable`` (fail closed: no record, no
access); its records are queued once more, then dropped with a log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from keyfob.errors import KeyfobError, Unavailable
from keyfob.store.batch import Batch, Draft
from keyfob.vault.core import Core

log = logging.getLogger("keyfob.audit")

I = TypeVar("I")  # noqa: E741 - the item type
R = TypeVar("R")

LINGER = 0.005
MAX_USES = 256


@dataclass(slots=True)
class _Use(Generic[I, R]):
    item: I
    done: asyncio.Future[R]


@dataclass(slots=True)
class _Queue(Generic[I, R]):
    uses: list[_Use[I, R]] = field(default_factory=list)
    records: list[tuple[Draft, int]] = field(default_factory=list)


class GroupCommit(Generic[I, R]):
    """Commits ``process``-ed uses and pending records together, one batch at a time."""

    def __init__(self, core: Core, process: Callable[[Batch, Sequence[I]], list[R]]) -> None:
        self._core = core
        self._process = process
        self._queue: _Queue[I, R] = _Queue()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def submit(self, item: I) -> R:
        """Process ``item`` in the next batch; returns once that batch is committed."""
        if self._closing:
            raise Unavailable("keyfob is shutting down")
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.uses.append(_Use(item, done))
        self._kick()
        return await done

    def record(self, draft: Draft) -> None:
        """Append ``draft`` to the audit log with the next batch; nobody waits for it."""
        self._queue.records.append((draft, 0))
        self._kick()

    def depth(self) -> int:
        """Uses, mints and records waiting for the next commit."""
        return len(self._queue.uses) + len(self._queue.records)

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        assert self._wake is not None
        self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue.uses and self._queue.records and not self._closing:
                # Only records: wait a little for uses to carry them (a timer, not a task:
                # at one client this happens on every request).
                timer = asyncio.get_running_loop().call_later(LINGER, self._wake.set)
                await self._wake.wait()
                self._wake.clear()
                timer.cancel()
            while self._queue.uses or self._queue.records:
                await self._commit_one()
            if self._closing:
                return

    async def _commit_one(self) -> None:
        queue = self._queue
        uses, queue.uses = queue.uses[:MAX_USES], queue.uses[MAX_USES:]
        records, queue.records = queue.records, []
        items = [u.item for u in uses]
        drafts = [d for d, _ in records]

        def work(batch: Batch) -> list[R]:
            batch.append(drafts)
            return self._process(batch, items)

        try:
            results, batch = await self._core.db.batch(work)
            if len(results) != len(uses):
                raise RuntimeError("a batch answered a different number of uses")
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, KeyfobError)
                else Unavailable("the audit log cannot be written; nothing was done")
            )
            if not isinstance(exc, KeyfobError):
                log.error("grouped commit failed: %s", type(exc).__name__)
            for use in uses:
                if not use.done.done():
                    use.done.set_exception(error)
            retry = [(d, n + 1) for d, n in records if n < 1]
            if len(retry) < len(records):
                log.error("dropped %d audit outcome records", len(records) - len(retry))
            queue.records[:0] = retry
            if retry and not queue.uses:
                await asyncio.sleep(LINGER)
            return
        for use, result in zip(uses, results, strict=False):
            if not use.done.done():
                use.done.set_result(result)
        if batch.events:
            self._core.checkpoint_soon(batch.seq, batch.head)

    async def close(self) -> None:
        """Commit what is queued, then write the last checkpoint."""
        self._closing = True
        if self._task is not None and not self._task.done():
            assert self._wake is not None
            self._wake.set()
            await self._task
        await self._core.flush_checkpoint()
