"""What shipped audit records look like, and how a receiver checks their chain.

A shipped record is the record as exported (``Event.as_dict``): ``seq``, the fields,
``prev_hash`` and ``hash``. A receiver feeds what it gets, in arrival order, to
``ShippedChain``: it verifies each new record with the same hash as ``keyfob audit
verify`` (``event_hash``, i.e. ``record_hash``), and tells re-deliveries (at-least-once)
from gaps, reordering and edits.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keyfob.audit.chain import GENESIS, ChainVerifier, Event

# RFC 5424 structured-data id: name@<private enterprise number>; 32473 is the number
# RFC 5612 reserves for documentation, used until keyfob has its own.
SD_ID = "keyfob@32473"
# Facility 13 is "log audit" (RFC 5424, table 1).
LOG_AUDIT = 13
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")
_FIELDS = (
    "seq", "ts", "actor", "action", "target", "outcome", "request_id", "details",
    "prev_hash", "hash",
)  # fmt: skip


def wire(event: Event) -> dict[str, Any]:
    """The shipped form of one record (the export's)."""
    return event.as_dict()


def line(event: Event) -> str:
    """One JSON line, as ``keyfob audit export`` writes it (no newline)."""
    return json.dumps(wire(event), separators=(",", ":"))


def from_wire(record: Mapping[str, Any]) -> Event:
    """A shipped record back as an ``Event``; KeyError/TypeError when a field is missing."""
    return Event(**{name: record[name] for name in _FIELDS})


def _sd_value(value: str) -> str:
    # RFC 5424 6.3.3: '"', '\' and ']' are escaped inside PARAM-VALUE.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_message(
    event: Event, *, hostname: str, procid: int, facility: int = LOG_AUDIT
) -> bytes:
    """One RFC 5424 message: the chain in structured data, the record as JSON in MSG."""
    severity = 6 if event.outcome == "ok" else 5  # informational; notice for the rest
    # keyfob's ts (RFC 3339, UTC, microseconds, Z) is already an RFC 5424 TIMESTAMP.
    stamp = event.ts if _TIMESTAMP.fullmatch(event.ts) else "-"
    msgid = "".join(c for c in event.action if 33 <= ord(c) <= 126)[:32] or "-"
    host = "".join(c for c in hostname if 33 <= ord(c) <= 126)[:255] or "-"
    sd = (
        f'[{SD_ID} seq="{event.seq}" prev_hash="{_sd_value(event.prev_hash)}" '
        f'hash="{_sd_value(event.hash)}"]'
    )
    header = f"<{facility * 8 + severity}>1 {stamp} {host} keyfob {procid} {msgid} {sd} "
    return header.encode() + b"\xef\xbb\xbf" + line(event).encode()


@dataclass
class ShippedChain:
    """Receiver-side verification of shipped records, re-deliveries allowed.

    ``feed`` each record as it arrives. A record already verified (same ``seq``) is a
    re-delivery: counted in ``duplicates`` if it is the same record, a failure if not.
    Anything else must be the next record of the chain. ``first_bad`` names the first
    failure, as ``keyfob audit verify`` does; start mid-log with ``after=(seq, hash)``.
    """

    after: tuple[int, str] = (0, GENESIS)
    remember: int = 100_000
    duplicates: int = 0
    farthest_back: int = 0
    _chain: ChainVerifier = field(init=False)
    _seen: OrderedDict[int, str] = field(init=False, default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self._chain = ChainVerifier(count=self.after[0], head=self.after[1])

    @property
    def count(self) -> int:
        """The seq of the last record verified."""
        return self._chain.count

    @property
    def head(self) -> str:
        return self._chain.head

    @property
    def first_bad(self) -> dict[str, Any] | None:
        return self._chain.first_bad

    @property
    def ok(self) -> bool:
        return self._chain.first_bad is None

    def feed(self, record: Mapping[str, Any]) -> bool:
        """True when ``record`` was new and verified; False for a re-delivery or a break."""
        if self._chain.first_bad is not None:
            return False
        try:
            event = from_wire(record)
        except (KeyError, TypeError):
            self._chain.first_bad = {"seq": record.get("seq"), "reason": "malformed record"}
            return False
        if isinstance(event.seq, int) and event.seq <= self._chain.count:
            known = self._seen.get(event.seq)
            if known is not None and known != event.hash:
                self._chain.first_bad = {
                    "seq": event.seq,
                    "reason": "re-delivered record differs from the one verified (edited)",
                }
                return False
            self.duplicates += 1
            self.farthest_back = max(self.farthest_back, self._chain.count - event.seq + 1)
            return False
        self._chain.feed(event)
        if self._chain.first_bad is not None:
            return False
        self._seen[event.seq] = event.hash
        while len(self._seen) > self.remember:
            self._seen.popitem(last=False)
        return True

    def feed_all(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Feed ``records`` in order; how many were new and verified."""
        return sum(self.feed(r) for r in records)
