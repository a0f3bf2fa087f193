"""Hash chain over audit events.

    hash(n) = SHA-256( prev_hash(n) as 32 bytes || canonical JSON of event n )

where the canonical JSON holds seq, ts, actor, action, target, outcome, request_id and
details, keys sorted, no spaces, UTF-8. ``prev_hash(1)`` is 64 zeros. ``record_hash``
is the one function that defines these bytes; the store's writer and ``ChainVerifier``
both call it. Editing, deleting, reordering or inserting a row breaks the chain at that
row; truncating the tail is caught by a signed checkpoint (``checkpoint.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True)
class Event:
    """One audit record as stored; ``details`` never holds a secret value."""

    seq: int
    ts: str
    actor: str
    action: str
    target: str
    outcome: str
    request_id: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


# One encoder, built once: ``json.dumps`` with these options builds a new one per call.
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def canonical(value: Any) -> str:
    """Keys sorted, no spaces, non-ASCII kept: the text stored in JSON columns and hashed."""
    return _canonical(value)


# The C string encoder json.dumps(ensure_ascii=False) itself uses.
_string: Any = getattr(json.encoder, "c_encode_basestring", None) or json.encoder.encode_basestring


def record_hash(
    prev_hash: str,
    *,
    seq: int,
    ts: str,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    request_id: str,
    details_json: str,
) -> str:
    """The chain hash of one record, ``details_json`` being ``canonical(details)``.

    The only definition of the hashed bytes (the writer and the verifier both call it):
    the canonical JSON of the record's fields, written out in sorted key order rather
    than built as a dict and sorted, because the proxy appends two records per request.
    """
    text = (
        '{"action":'
        + _string(action)
        + ',"actor":'
        + _string(actor)
        + ',"details":'
        + details_json
        + ',"outcome":'
        + _string(outcome)
        + ',"request_id":'
        + _string(request_id)
        + ',"seq":'
        + str(seq)
        + ',"target":'
        + _string(target)
        + ',"ts":'
        + _string(ts)
        + "}"
    )
    return hashlib.sha256(_prev_bytes(prev_hash) + text.encode()).hexdigest()


def _prev_bytes(prev_hash: str) -> bytes:
    try:
        return bytes.fromhex(prev_hash)
    except ValueError:
        return prev_hash.encode()


def parse_details(raw: str) -> Any:
    """Stored details text as a value; text that is not JSON stays text (its hash fails)."""
    try:
        return json.loads(raw)
    except ValueError:
        # Edited outside keyfob: pass the text on so verify names this record instead of
        # failing outright.
        return raw


def stored_event(row: Sequence[Any]) -> Event:
    """An ``Event`` from a stored row, in ``STORED_COLUMNS`` order (details as text)."""
    seq, ts, actor, action, target, outcome, request_id, details, prev_hash, digest = row
    return Event(
        seq=int(seq),
        ts=ts,
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        request_id=request_id,
        details=parse_details(details),
        prev_hash=prev_hash,
        hash=digest,
    )


# The column order of the rows ``ChainVerifier.feed_stored`` takes.
STORED_COLUMNS = (
    "seq", "ts", "actor", "action", "target", "outcome", "request_id", "details",
    "prev_hash", "hash",
)  # fmt: skip


def event_hash(event: Event) -> str:
    """What ``event.hash`` must be if nothing in the record was changed."""
    return record_hash(
        event.prev_hash,
        seq=event.seq,
        ts=event.ts,
        actor=event.actor,
        action=event.action,
        target=event.target,
        outcome=event.outcome,
        request_id=event.request_id,
        details_json=canonical(event.details),
    )


@dataclass
class ChainVerifier:
    """Feed events in seq order; ``first_bad`` names the first record that breaks."""

    count: int = 0
    head: str = GENESIS
    first_bad: dict[str, Any] | None = None
    hashes_at: dict[int, str] = field(default_factory=dict)
    watch: set[int] = field(default_factory=set)

    def feed(self, event: Event) -> None:
        if self.first_bad is not None:
            return
        expected_seq = self.count + 1
        if event.seq != expected_seq:
            reason = (
                f"record {expected_seq} is missing"
                if event.seq > expected_seq
                else f"record {event.seq} is out of order"
            )
            self.first_bad = {"seq": expected_seq, "reason": reason}
            return
        if event.prev_hash != self.head:
            self.first_bad = {
                "seq": event.seq,
                "reason": "prev_hash does not match the previous record (deleted, inserted "
                "or reordered rows)",
            }
            return
        if event_hash(event) != event.hash:
            self.first_bad = {"seq": event.seq, "reason": "hash does not match contents (edited)"}
            return
        self.count = event.seq
        self.head = event.hash
        if event.seq in self.watch:
            self.hashes_at[event.seq] = event.hash

    def feed_stored(self, rows: Iterable[Sequence[Any]]) -> None:
        """``feed`` for rows as stored (``STORED_COLUMNS``), without building ``Event``s."""
        # The writer stores canonical(details), so a record whose stored text hashes to
        # its hash is intact. Any other record (out of order, wrong prev_hash, or a hash
        # that may only match after re-encoding the details) goes through feed, which
        # judges it exactly as before.
        count, head, watch = self.count, self.head, self.watch
        for row in rows:
            if self.first_bad is not None:
                break
            seq, ts, actor, action, target, outcome, request_id, details, prev_hash, digest = row
            if (
                seq != count + 1
                or prev_hash != head
                or not isinstance(details, str)
                or digest
                != record_hash(
                    prev_hash,
                    seq=seq,
                    ts=ts,
                    actor=actor,
                    action=action,
                    target=target,
                    outcome=outcome,
                    request_id=request_id,
                    details_json=details,
                )
            ):
                self.count, self.head = count, head
                self.feed(stored_event(row))
                count, head = self.count, self.head
                continue
            count, head = seq, digest
            if seq in watch:
                self.hashes_at[seq] = digest
        if self.first_bad is None:
            self.count, self.head = count, head
