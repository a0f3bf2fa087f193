"""The one audit writer: chains drafts onto the head and holds the rows to insert.

Every audit record keyfob writes is chained here, whichever way it is committed: a
``Tx`` (an audited change, one record inserted at once) and a grouped-commit ``Batch``
(the proxy's records, inserted in one statement before the commit) are both an
``AuditChain``. The hashed bytes are defined by ``keyfob.audit.record_hash`` alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from keyfob.audit import Event, canonical, record_hash


@dataclass(frozen=True, slots=True)
class Draft:
    """An audit record before the chain gives it a place."""

    ts: str
    actor: str
    action: str
    target: str
    outcome: str
    request_id: str
    details: dict[str, Any]


# The audit_events columns of a row ``append`` makes, in the row's order.
COLUMNS = (
    "seq",
    "ts",
    "actor",
    "action",
    "target",
    "outcome",
    "request_id",
    "details",
    "prev_hash",
    "hash",
)
Row = tuple[int, str, str, str, str, str, str, str, str, str]

SQL_INSERT = (
    f"INSERT INTO audit_events ({', '.join(COLUMNS)}) "  # noqa: S608 - constant names
    f"VALUES ({', '.join('?' * len(COLUMNS))})"
)


def as_mappings(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """Rows as SQLAlchemy's executemany parameters."""
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]


class AuditChain:
    """The chain head inside one locked write transaction, and what was appended to it."""

    def __init__(self, seq: int, head: str) -> None:
        self.seq = seq
        self.head = head
        self.events: list[Event] = []
        self._pending: list[Row] = []

    def append(self, drafts: Iterable[Draft]) -> list[Event]:
        """Chain ``drafts`` in order; their rows wait for ``take_rows`` (all or none)."""
        seq, head = self.seq, self.head
        added: list[Event] = []
        rows: list[Row] = []
        for d in drafts:
            seq += 1
            details = canonical(d.details)
            digest = record_hash(
                head,
                seq=seq,
                ts=d.ts,
                actor=d.actor,
                action=d.action,
                target=d.target,
                outcome=d.outcome,
                request_id=d.request_id,
                details_json=details,
            )
            added.append(
                Event(
                    seq,
                    d.ts,
                    d.actor,
                    d.action,
                    d.target,
                    d.outcome,
                    d.request_id,
                    d.details,
                    head,
                    digest,
                )
            )
            rows.append(
                (
                    seq,
                    d.ts,
                    d.actor,
                    d.action,
                    d.target,
                    d.outcome,
                    d.request_id,
                    details,
                    head,
                    digest,
                )
            )
            head = digest
        self.seq, self.head = seq, head
        self.events.extend(added)
        self._pending.extend(rows)
        return added

    def take_rows(self) -> list[Row]:
        """The rows appended since the last call, to be inserted in this transaction."""
        rows, self._pending = self._pending, []
        return rows
