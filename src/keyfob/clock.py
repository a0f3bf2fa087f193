"""Time, injected: every expiry and timestamp takes a ``Clock`` so tests can move it.

Also the one place times are read from text (``parse_iso``) and written as text
(``isoformat``). The rule for both: a time without an offset is UTC, never the server's
local time, and only moments from ``EARLIEST`` up to (not including) ``END`` are taken.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Protocol

# Before 1970 or after 9998 a time is almost surely a mistake, and near the ends of what
# a datetime holds, adding a TTL or converting an offset overflows (once a 500).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
END = datetime(9999, 1, 1, tzinfo=UTC)

# RFC 3339 (``T``, ``t`` or a space between date and time; ``Z`` or ``±HH:MM``) plus the
# shorter forms people type: no offset (UTC), no seconds (an HTML ``datetime-local``),
# or a date alone (midnight UTC).
_TIME = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[Tt ](?P<hm>[0-9]{2}:[0-9]{2})(?::(?P<s>[0-9]{2})(?:\.(?P<frac>[0-9]+))?)?"
    r"(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})?)?"
)
FORMAT_HINT = "a date and time such as 2026-12-01T10:00:00Z (RFC 3339; no offset means UTC)"
RANGE_HINT = "between 1970-01-01T00:00:00Z and 9998-12-31T23:59:59Z"


class BadTime(ValueError):
    """A time keyfob does not take; the message says what it takes (and never echoes it)."""


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
        self._now = self._now + timedelta(seconds=seconds)


def monotonic() -> float:
    return time.monotonic()


def isoformat(moment: datetime) -> str:
    """RFC 3339 with a ``Z``, microseconds kept (stable text for the audit chain)."""
    if moment.tzinfo is not UTC:
        moment = _utc(moment)
    # isoformat() is several times faster than strftime and gives the same text here.
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_iso(text: str, *, bounded: bool = True) -> datetime:
    """``text`` as an aware UTC datetime; ``BadTime`` if it is not a time keyfob takes.

    ``bounded=False`` skips the range check, for times read back from the database
    (older releases stored any year).
    """
    match = _TIME.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise BadTime(f"must be {FORMAT_HINT}")
    year, month, day = (int(part) for part in match["date"].split("-"))
    hour, minute = (int(part) for part in (match["hm"] or "00:00").split(":"))
    offset = match["offset"]
    try:
        local = datetime(
            year,
            month,
            day,
            hour,
            minute,
            int(match["s"] or 0),
            int((match["frac"] or "0")[:6].ljust(6, "0")),
            tzinfo=_zone(offset) if offset else UTC,
        )
    except ValueError:
        if year == 0:
            raise BadTime(f"must be {RANGE_HINT}") from None
        raise BadTime(f"must be {FORMAT_HINT}; that day or time does not exist") from None
    return in_range(local) if bounded else _utc(local)


def in_range(moment: datetime) -> datetime:
    """``moment`` in UTC (no tzinfo means UTC); ``BadTime`` outside EARLIEST … END."""
    moment = _utc(moment)
    if not EARLIEST <= moment < END:
        raise BadTime(f"must be {RANGE_HINT}")
    return moment


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # Year 1 east of Greenwich, or year 9999 west of it.
        raise BadTime(f"must be {RANGE_HINT}") from None


def _zone(offset: str) -> timezone:
    # "-00:00" (RFC 3339: offset unknown) comes out as UTC too.
    if offset in ("Z", "z"):
        return UTC
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    if hours > 23 or minutes > 59:
        raise ValueError("no such offset")
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if offset[0] == "-" else delta)
