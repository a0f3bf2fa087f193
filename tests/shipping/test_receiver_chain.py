"""``ShippedChain``, the receiver's check: re-deliveries pass, gaps, edits and altered
re-deliveries are named at their seq, and a syslog line carries the same record."""

from __future__ import annotations

import json
from typing import Any

from keyfob.audit import GENESIS, ShippedChain
from keyfob.audit.shipping import line, syslog_message
from keyfob.store.audit_writer import AuditChain, Draft


def chain_of(count: int) -> list[dict[str, Any]]:
    """``count`` records chained by the one writer, as shipped."""
    chain = AuditChain(0, GENESIS)
    drafts = [
        Draft("2026-12-05T08:00:00.000000Z", "anonymous", "auth.failed", f"route:/{n}",
              "denied", f"{n:016x}", {"n": n, "name": "é"})
        for n in range(count)
    ]  # fmt: skip
    return [e.as_dict() for e in chain.append(drafts)]


def test_in_order_with_a_redelivered_batch_verifies() -> None:
    records = chain_of(8)
    receiver = ShippedChain()
    assert receiver.feed_all(records[:5] + records[3:5] + records[5:]) == 8
    assert receiver.ok
    assert (receiver.count, receiver.duplicates, receiver.farthest_back) == (8, 2, 2)


def test_a_gap_is_named() -> None:
    records = chain_of(5)
    receiver = ShippedChain()
    receiver.feed_all(records[:2] + records[3:])
    assert receiver.first_bad == {"seq": 3, "reason": "record 3 is missing"}
    assert receiver.count == 2


def test_an_edited_record_is_named() -> None:
    records = chain_of(4)
    records[2] = {**records[2], "outcome": "ok"}
    receiver = ShippedChain()
    receiver.feed_all(records)
    assert receiver.first_bad == {"seq": 3, "reason": "hash does not match contents (edited)"}


def test_a_redelivery_that_differs_is_named() -> None:
    records = chain_of(4)
    receiver = ShippedChain()
    receiver.feed_all(records)
    forged = {**records[1], "hash": "f" * 64}
    assert not receiver.feed(forged)
    assert receiver.first_bad is not None
    assert receiver.first_bad["seq"] == 2


def test_starting_mid_log() -> None:
    records = chain_of(6)
    receiver = ShippedChain(after=(3, records[2]["hash"]))
    assert receiver.feed_all(records[3:]) == 3
    assert receiver.ok
    assert ShippedChain(after=(3, "0" * 64)).feed(records[3]) is False  # wrong anchor


def test_jsonl_and_syslog_carry_the_same_record() -> None:
    from keyfob.audit.shipping import from_wire

    (record,) = chain_of(1)
    event = from_wire(record)
    assert json.loads(line(event)) == record
    message = syslog_message(event, hostname="host name", procid=7)
    assert message.startswith(b"<109>1 2026-12-05T08:00:00.000000Z hostname keyfob 7 auth.failed ")
    assert json.loads(message.split(b"\xef\xbb\xbf", 1)[1]) == record
