"""argon2 password hashing off the event loop, on a small pool with a bounded queue.

An argon2 hash costs tens of MiB and a good part of a CPU second; on the event loop it
would stall every proxied request. Here it runs on ``WORKERS`` threads (argon2-cffi
releases the GIL) and at most ``QUEUE`` more wait: beyond that a sign-in is refused at
once with 429 instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from keyfob.errors import TooManyRequests
from keyfob.settings import Settings

WORKERS = 2
QUEUE = 8
BUSY_RETRY_AFTER = 1

T = TypeVar("T")


def password_hasher(settings: Settings) -> PasswordHasher:
    """The argon2id hasher the ``KEYFOB_PASSWORD_HASH_*`` settings describe."""
    return PasswordHasher(
        time_cost=settings.password_hash_time_cost,
        memory_cost=settings.password_hash_memory_kib,
        parallelism=settings.password_hash_parallelism,
    )


class Passwords:
    """Hash and verify passwords on a bounded worker pool (429 when it is full)."""

    def __init__(self, hasher: PasswordHasher) -> None:
        self._hasher = hasher
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight = 0
        self._dummy: str | None = None

    @contextmanager
    def slot(self) -> Iterator[None]:
        """A place in the pool's queue, held across a whole sign-in; 429 if none is free.

        Taken before any other work, so a refused sign-in costs nothing and counts nothing.
        """
        # One event loop: the check and the increment cannot interleave with another task.
        if self._in_flight >= WORKERS + QUEUE:
            raise TooManyRequests(
                "too many sign-ins at once; try again shortly", retry_after=BUSY_RETRY_AFTER
            )
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    async def hash(self, password: str) -> str:
        with self.slot():
            return await self._run(self._hasher.hash, password)

    async def verify(self, digest: str | None, password: str) -> bool:
        """Whether ``password`` matches ``digest`` (call inside ``slot``); with no digest
        (an unknown user) the same work is done against a dummy hash, so the time tells
        no names apart."""
        if self._dummy is None:
            self._dummy = await self._run(self._hasher.hash, secrets.token_hex(16))
        matched = await self._run(_check, self._hasher, digest or self._dummy, password)
        return matched and digest is not None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="keyfob-argon2")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _check(hasher: PasswordHasher, digest: str, password: str) -> bool:
    try:
        return hasher.verify(digest, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
