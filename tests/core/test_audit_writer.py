"""The one audit writer: both commit paths store the same chain, in the released format."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import asdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from keyfob.audit import GENESIS, ChainVerifier, Event, event_hash
from keyfob.store import Database, audit_log
from keyfob.store.audit_writer import AuditChain, Draft
from keyfob.store.tables import audit_events, audit_head
from keyfob.vault import Vault

from .conftest import run_sql

# -- strategies -----------------------------------------------------------------------

# No lone surrogates: they cannot be encoded as UTF-8, so no record can hold them.
_chars = st.characters(blacklist_categories=["Cs"])
_text = st.text(_chars, max_size=12)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)
drafts = st.builds(
    Draft,
    ts=_text,
    actor=_text,
    action=_text,
    target=_text,
    outcome=_text,
    request_id=_text,
    details=st.dictionaries(_text, _json, max_size=4),
)


def fields(draft: Draft) -> dict[str, Any]:
    return asdict(draft)


# -- the hashed bytes: what the current release wrote ---------------------------------


def released_hash(prev_hash: str, seq: int, draft: Draft) -> str:
    """The recipe of keyfob's released audit format, written out independently of the
    code: SHA-256 of the previous hash's 32 bytes and the record as sorted, compact JSON."""
    record = {"seq": seq, **fields(draft)}
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(bytes.fromhex(prev_hash) + text.encode()).hexdigest()


KNOWN = Draft(
    ts="2026-12-04T17:00:00.123456Z",
    actor="agent:01JEXAMPLE",
    action="lease.use",
    target="secret_set:openai/prod/default",
    outcome="ok",
    request_id="0123456789abcdef",
    details={
        "method": "POST",
        "path": "/v1/chat/completions",
        "keys": ["OPENAI_API_KEY"],
        "ü": 'é\u2028"x\\',
        "n": 1.5,
        "z": None,
    },
)


def test_the_hash_of_a_known_record_is_what_the_release_wrote():
    """Hashes computed by the released ``compute_hash`` (before the two were merged)."""
    second = Draft(**{**fields(KNOWN), "action": "proxy.request", "details": {}})

    first, then = AuditChain(0, GENESIS).append([KNOWN, second])

    assert first.hash == "ee58c83779b9ac53f6a0855f60994601eca6f67d6ed94b82062f68a3f53f784a"
    assert then.hash == "377df6402b15a79d998df3ef04cef4d384decbcf5990ad86eb91f89f493279fa"


@settings(max_examples=100, deadline=None)
@given(contents=st.lists(drafts, min_size=1, max_size=6))
def test_a_chain_in_the_released_format_verifies_and_is_what_the_writer_writes(
    contents: list[Draft],
):
    events, head = [], GENESIS
    for seq, draft in enumerate(contents, start=1):
        digest = released_hash(head, seq, draft)
        events.append(Event(seq=seq, prev_hash=head, hash=digest, **fields(draft)))
        head = digest
    verifier = ChainVerifier()
    for event in events:
        verifier.feed(event)

    assert verifier.first_bad is None
    assert verifier.count == len(events)
    assert AuditChain(0, GENESIS).append(contents) == events


# -- the two commit paths on a real database ------------------------------------------


async def rows_after(db: Database, seq: int) -> list[dict[str, Any]]:
    async with db.read() as conn:
        query = select(audit_events).where(audit_events.c.seq > seq).order_by(audit_events.c.seq)
        return [dict(r._mapping) for r in (await conn.execute(query)).all()]


async def chain_head(db: Database) -> tuple[int, str]:
    async with db.read() as conn:
        head = await audit_log.head(conn)
    assert head is not None
    return head


async def rewind(db: Database, seq: int, head: str) -> None:
    """Take the chain back to ``seq`` behind keyfob's back (the test's own reset)."""
    async with db.engine.begin() as conn:
        await conn.execute(delete(audit_events).where(audit_events.c.seq > seq))
        await conn.execute(update(audit_head).values(seq=seq, head=head))


async def first_bad_seq(db: Database) -> int | None:
    verifier = ChainVerifier()
    async with db.read() as conn:
        async for event in audit_log.stream(conn):
            verifier.feed(event)
    return None if verifier.first_bad is None else int(verifier.first_bad["seq"])


async def both_paths(db: Database, contents: list[Draft]) -> tuple[list[Any], list[Any]]:
    """The same drafts from the same head: each an audited change (``Tx.audit``), then
    (after rewinding) one grouped commit (``Batch.append``). Leaves the second chain."""
    seq, head = await chain_head(db)
    async with db.write() as tx:
        for draft in contents:
            await tx.audit(**fields(draft))
    single = await rows_after(db, seq)
    await rewind(db, seq, head)
    await db.batch(lambda batch: batch.append(contents))
    grouped = await rows_after(db, seq)
    return single, grouped


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('chain') / 'keyfob.db'}"

    async def migrate() -> None:
        db = Database(url)
        await db.migrate()
        await db.close()

    asyncio.run(migrate())
    return url


@settings(max_examples=25, deadline=None)
@given(contents=st.lists(drafts, min_size=1, max_size=5), data=st.data())
def test_single_and_grouped_commits_write_the_same_verified_chain(
    sqlite_url: str, contents: list[Draft], data: st.DataObject
):
    column = data.draw(st.sampled_from(("ts", "actor", "action", "details", "prev_hash", "hash")))
    index = data.draw(st.integers(0, len(contents) - 1))

    async def run() -> tuple[list[Any], list[Any], int | None, int | None]:
        db = Database(sqlite_url)
        try:
            single, grouped = await both_paths(db, contents)
            honest = await first_bad_seq(db)
            row = grouped[index]
            if column == "details":
                forged = '{"forged":2}' if row[column] == '{"forged":1}' else '{"forged":1}'
            else:
                forged = row[column] + "0"
            at = audit_events.c.seq == row["seq"]
            async with db.engine.begin() as conn:
                await conn.execute(update(audit_events).where(at).values({column: forged}))
            tampered = await first_bad_seq(db)
            async with db.engine.begin() as conn:
                await conn.execute(update(audit_events).where(at).values({column: row[column]}))
            return single, grouped, honest, tampered
        finally:
            await db.close()

    single, grouped, honest, tampered = asyncio.run(run())

    assert single == grouped
    assert [r["seq"] for r in grouped] == list(range(grouped[0]["seq"], grouped[-1]["seq"] + 1))
    assert honest is None
    assert tampered == grouped[index]["seq"]


async def test_both_paths_write_the_same_chain_on_each_backend(vault: Vault):
    """The real ``Tx`` and the backend's own batch (SQLite's, or SQLAlchemy's on PostgreSQL)."""
    contents = [
        KNOWN,
        Draft(**{**fields(KNOWN), "outcome": "denied", "details": {"nested": {"b": [1, 2.5]}}}),
        Draft(**{**fields(KNOWN), "action": "proxy.request", "details": {}}),
    ]
    seq, _ = await chain_head(vault.db)

    single, grouped = await both_paths(vault.db, contents)
    report = await vault.audit.verify()

    assert single == grouped
    assert [r["seq"] for r in grouped] == [seq + 1, seq + 2, seq + 3]
    assert report["ok"] is True, report["first_bad"]
    await run_sql(
        vault, update(audit_events).where(audit_events.c.seq == seq + 2).values(outcome="ok")
    )
    assert (await vault.audit.verify())["first_bad"]["seq"] == seq + 2


def test_a_failed_draft_appends_nothing():
    """All or none: a draft the writer cannot encode leaves the head and pending rows alone."""
    chain = AuditChain(7, "ab" * 32)
    bad = Draft(**{**fields(KNOWN), "details": {"x": object()}})

    with pytest.raises(TypeError):
        chain.append([KNOWN, bad])

    assert (chain.seq, chain.head, chain.events, chain.take_rows()) == (7, "ab" * 32, [], [])


def test_rows_match_the_events_the_writer_returns():
    chain = AuditChain(0, GENESIS)

    events = chain.append([KNOWN, KNOWN])
    rows = chain.take_rows()

    assert [event_hash(e) for e in events] == [e.hash for e in events]
    assert [r[0] for r in rows] == [1, 2]
    assert [json.loads(r[7]) for r in rows] == [KNOWN.details, KNOWN.details]
    assert chain.take_rows() == []
