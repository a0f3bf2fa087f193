"""Time, injected: every expiry and timestamp takes a ``Clock`` so tests can move it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to (tests, reproducible runs)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self._now = self._now + timedelta(seconds=seconds)


def monotonic() -> float:
    return time.monotonic()


def isoformat(moment: datetime) -> str:
    """RFC 3339 with a ``Z``, microseconds kept (stable text for the audit chain)."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    # isoformat() is several times faster than strftime and gives the same text here.
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
