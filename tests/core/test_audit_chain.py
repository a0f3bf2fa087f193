"""The audit hash chain: honest chains verify, every kind of tampering is named at its seq."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from keyfob.audit import (
    GENESIS,
    ChainVerifier,
    Checkpoint,
    Event,
    canonical,
    event_hash,
)
from keyfob.crypto import SystemKeys
from keyfob.errors import Conflict, Unavailable, ValidationFailed
from keyfob.store.audit_writer import AuditChain, Draft
from keyfob.store.engine import Tx
from keyfob.store.tables import audit_events, audit_head
from keyfob.vault import Context, Vault
from keyfob.vault.core import Core
from tests.conftest import CANARY

from .conftest import audit_count, create_set, fetch, run_sql, snapshot, version_count

# -- the chain as pure data (Hypothesis) ---------------------------------------------------

CONTENT_FIELDS = ("ts", "actor", "action", "target", "outcome", "request_id", "details")

short_text = st.text(max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | short_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
    max_leaves=4,
)
bodies = st.fixed_dictionaries(
    {
        "ts": short_text,
        "actor": short_text,
        "action": short_text,
        "target": short_text,
        "outcome": short_text,
        "request_id": short_text,
        "details": st.dictionaries(short_text, json_values, max_size=3),
    }
)


def build_chain(contents: list[dict[str, Any]]) -> list[Event]:
    """An honest chain, built by the store's one audit writer."""
    return AuditChain(0, GENESIS).append([Draft(**body) for body in contents])


def rehash(event: Event) -> Event:
    """The event with its hash recomputed (an attacker who knows the recipe)."""
    return replace(event, hash=event_hash(event))


def chain_hash(prev_hash: str, seq: int, body: dict[str, Any]) -> str:
    """The hash a forger computes for a row with ``body`` at ``seq``."""
    return event_hash(Event(seq=seq, prev_hash=prev_hash, hash="", **body))


def two_indexes(data: st.DataObject, length: int) -> tuple[int, int]:
    first = data.draw(st.integers(0, length - 2))
    return first, data.draw(st.integers(first + 1, length - 1))


def first_bad(events: list[Event]) -> int | None:
    verifier = ChainVerifier()
    for event in events:
        verifier.feed(event)
    return None if verifier.first_bad is None else verifier.first_bad["seq"]


chains = st.lists(bodies, min_size=1, max_size=10).map(build_chain)
long_chains = st.lists(bodies, min_size=2, max_size=10).map(build_chain)
quick = settings(max_examples=40, deadline=None)


@quick
@given(contents=st.lists(bodies, max_size=12))
def test_an_honest_chain_verifies(contents: list[dict[str, Any]]):
    events = build_chain(contents)
    verifier = ChainVerifier()
    for event in events:
        verifier.feed(event)

    assert verifier.first_bad is None
    assert verifier.count == len(events)
    assert verifier.head == (events[-1].hash if events else GENESIS)


def stored(event: Event, details_text: str | None = None) -> tuple[Any, ...]:
    """The row as the table holds it: details as (canonical) JSON text."""
    text = canonical(event.details) if details_text is None else details_text
    return (
        event.seq, event.ts, event.actor, event.action, event.target, event.outcome,
        event.request_id, text, event.prev_hash, event.hash,
    )  # fmt: skip


def verdicts(events: list[Event], rows: list[tuple[Any, ...]]) -> tuple[Any, Any]:
    """(count, head, first_bad) from ``feed`` and from ``feed_stored`` (in two pages)."""
    one, two = ChainVerifier(watch={2}), ChainVerifier(watch={2})
    for event in events:
        one.feed(event)
    middle = len(rows) // 2
    two.feed_stored(rows[:middle])
    two.feed_stored(rows[middle:])
    return (
        (one.count, one.head, one.first_bad, one.hashes_at),
        (two.count, two.head, two.first_bad, two.hashes_at),
    )


@quick
@given(events=chains, data=st.data())
def test_verify_from_stored_rows_judges_every_chain_as_feed_does(
    events: list[Event], data: st.DataObject
):
    # verify walks stored rows without building Events; any tampering must be named the same.
    index = data.draw(st.integers(0, len(events) - 1))
    kind = data.draw(st.sampled_from(("none", "edit", "rehash", "delete", "swap")))
    if kind == "edit":
        field = data.draw(st.sampled_from((*CONTENT_FIELDS[:-1], "seq", "prev_hash", "hash")))
        new: Any = data.draw(st.integers(-5, 50) if field == "seq" else short_text)
        events[index] = replace(events[index], **{field: new})
    elif kind == "rehash":
        events[index] = rehash(replace(events[index], actor=data.draw(short_text)))
    elif kind == "delete":
        del events[index]
    elif kind == "swap" and len(events) > 1:
        other = data.draw(st.integers(0, len(events) - 1))
        events[index], events[other] = events[other], events[index]

    plain, from_rows = verdicts(events, [stored(e) for e in events])

    assert from_rows == plain


@quick
@given(events=chains, data=st.data())
def test_details_stored_in_another_json_spelling_verify_as_before(
    events: list[Event], data: st.DataObject
):
    # Text that is the same JSON but not canonical (spaces, key order) hashed as the value.
    index = data.draw(st.integers(0, len(events) - 1))
    loose = json.dumps(events[index].details, indent=1, sort_keys=False)
    assume(loose != canonical(events[index].details))
    rows = [stored(e, loose if i == index else None) for i, e in enumerate(events)]

    plain, from_rows = verdicts(events, rows)

    assert from_rows == plain
    assert from_rows[2] is None


@quick
@given(events=chains, data=st.data())
def test_details_edited_in_the_stored_text_are_named_at_their_row(
    events: list[Event], data: st.DataObject
):
    index = data.draw(st.integers(0, len(events) - 1))
    edited = data.draw(st.sampled_from(("not json", '{"x":1}', "[]", "null")))
    assume(edited != canonical(events[index].details))
    rows = [stored(e, edited if i == index else None) for i, e in enumerate(events)]

    verifier = ChainVerifier()
    verifier.feed_stored(rows)

    assert verifier.first_bad is not None
    assert verifier.first_bad["seq"] == index + 1
    assert verifier.count == index


@quick
@given(events=chains, data=st.data())
def test_a_single_field_edit_is_named_at_its_row(events: list[Event], data: st.DataObject):
    index = data.draw(st.integers(0, len(events) - 1))
    field = data.draw(st.sampled_from((*CONTENT_FIELDS, "seq", "prev_hash", "hash")))
    original = getattr(events[index], field)
    if field == "seq":
        new: Any = data.draw(st.integers(-5, 50))
    elif field == "details":
        new = data.draw(st.dictionaries(short_text, json_values, max_size=3))
    elif field in ("prev_hash", "hash"):
        new = data.draw(st.text("0123456789abcdef", min_size=64, max_size=64))
    else:
        new = data.draw(short_text)
    assume(new != original)
    events[index] = replace(events[index], **{field: new})

    assert first_bad(events) == index + 1


@quick
@given(events=long_chains, data=st.data())
def test_an_edit_with_a_recomputed_hash_is_named_at_the_next_row(
    events: list[Event], data: st.DataObject
):
    index = data.draw(st.integers(0, len(events) - 2))
    new_actor = data.draw(short_text)
    assume(new_actor != events[index].actor)
    events[index] = rehash(replace(events[index], actor=new_actor))

    assert first_bad(events) == index + 2


@quick
@given(events=long_chains, data=st.data())
def test_deleting_a_row_is_named_at_its_seq(events: list[Event], data: st.DataObject):
    index = data.draw(st.integers(0, len(events) - 2))
    del events[index]

    assert first_bad(events) == index + 1


@quick
@given(events=chains)
def test_deleting_the_last_row_needs_the_checkpoint(events: list[Event]):
    """The chain alone cannot see a shortened tail; verify() adds head and checkpoint checks."""
    verifier = ChainVerifier()
    for event in events[:-1]:
        verifier.feed(event)

    assert verifier.first_bad is None
    assert verifier.count == len(events) - 1


@quick
@given(events=long_chains, data=st.data())
def test_swapping_two_rows_is_named_at_the_first(events: list[Event], data: st.DataObject):
    i, j = two_indexes(data, len(events))
    events[i], events[j] = events[j], events[i]

    assert first_bad(events) == i + 1


@quick
@given(events=long_chains, data=st.data())
def test_swapping_two_rows_contents_keeping_seq_is_named_at_the_first(
    events: list[Event], data: st.DataObject
):
    i, j = two_indexes(data, len(events))
    assume(events[i].as_dict() | {"seq": 0} != events[j].as_dict() | {"seq": 0})
    a, b = events[i], events[j]
    events[i], events[j] = replace(b, seq=a.seq), replace(a, seq=b.seq)

    assert first_bad(events) == i + 1


@quick
@given(events=chains, body=bodies, data=st.data())
def test_an_inserted_forged_row_is_caught(
    events: list[Event], body: dict[str, Any], data: st.DataObject
):
    """A forged row chained onto its predecessor, later rows renumbered: caught at the next."""
    index = data.draw(st.integers(0, len(events) - 1))
    prev = events[index - 1].hash if index else GENESIS
    forged = build_chain([body])[0]
    forged = rehash(replace(forged, seq=index + 1, prev_hash=prev))
    shifted = [replace(e, seq=e.seq + 1) for e in events[index:]]

    assert first_bad([*events[:index], forged, *shifted]) == index + 2


@quick
@given(events=chains, body=bodies, data=st.data())
def test_an_inserted_row_with_a_made_up_hash_is_named_at_its_seq(
    events: list[Event], body: dict[str, Any], data: st.DataObject
):
    index = data.draw(st.integers(0, len(events)))
    prev = events[index - 1].hash if index else GENESIS
    forged = replace(build_chain([body])[0], seq=index + 1, prev_hash=prev, hash="ab" * 32)
    shifted = [replace(e, seq=e.seq + 1) for e in events[index:]]

    assert first_bad([*events[:index], forged, *shifted]) == index + 1


# -- tampering with a real vault's log ----------------------------------------------------


@pytest.fixture
async def busy_vault(vault: Vault, ctx: Context) -> Vault:
    """A vault with a handful of audited changes (init, token and the CA make the first three)."""
    created = await create_set(vault, ctx)
    await vault.sets.update(ctx, created.path, entries={"OPENAI_API_KEY": CANARY + "2"})
    await create_set(vault, ctx, "stripe/prod/billing", entries={"STRIPE_SECRET_KEY": "sk_x"})
    await vault.sets.delete(ctx, "stripe/prod/billing")
    await vault.sets.restore(ctx, "stripe/prod/billing")
    await vault.keys.rotate(ctx)
    assert (await vault.audit.verify())["ok"]
    return vault


async def log_rows(vault: Vault) -> list[dict[str, Any]]:
    rows = await fetch(vault, select(audit_events).order_by(audit_events.c.seq))
    return [dict(r._mapping) for r in rows]


def at(seq: int) -> Any:
    return audit_events.c.seq == seq


async def test_a_real_log_verifies_and_holds_no_secret(busy_vault: Vault):
    report = await busy_vault.audit.verify()
    rows = await log_rows(busy_vault)

    assert report["ok"] is True
    assert report["first_bad"] is None
    assert report["count"] == len(rows) == 9
    assert report["checkpoint"]["count"] == 9
    assert CANARY not in json.dumps(rows)


async def test_editing_a_rows_details_names_that_seq(busy_vault: Vault):
    await run_sql(busy_vault, update(audit_events).where(at(4)).values(details='{"version":9}'))

    report = await busy_vault.audit.verify()

    assert report["ok"] is False
    assert report["first_bad"]["seq"] == 4


@pytest.mark.parametrize("details", ["{not json", "[]", "", '"text"'])
async def test_details_that_are_not_an_object_name_that_seq(busy_vault: Vault, details: str):
    await run_sql(busy_vault, update(audit_events).where(at(4)).values(details=details))

    report = await busy_vault.audit.verify()

    assert report["ok"] is False
    assert report["first_bad"]["seq"] == 4


@pytest.mark.parametrize("column", ["actor", "action", "target", "outcome", "ts", "request_id"])
async def test_editing_any_column_names_that_seq(busy_vault: Vault, column: str):
    await run_sql(busy_vault, update(audit_events).where(at(5)).values({column: "forged"}))

    assert (await busy_vault.audit.verify())["first_bad"]["seq"] == 5


async def test_deleting_a_middle_row_names_it(busy_vault: Vault):
    await run_sql(busy_vault, delete(audit_events).where(at(5)))

    report = await busy_vault.audit.verify()

    assert report["ok"] is False
    assert report["first_bad"]["seq"] == 5
    assert "missing" in report["first_bad"]["reason"]


async def test_swapping_two_rows_contents_names_the_first(busy_vault: Vault):
    rows = {r["seq"]: r for r in await log_rows(busy_vault)}
    columns = [c for c in rows[3] if c != "seq"]
    await run_sql(
        busy_vault,
        update(audit_events).where(at(3)).values({c: rows[6][c] for c in columns}),
        update(audit_events).where(at(6)).values({c: rows[3][c] for c in columns}),
    )

    report = await busy_vault.audit.verify()

    assert report["ok"] is False
    assert report["first_bad"]["seq"] == 3


async def test_inserting_a_forged_row_is_caught(busy_vault: Vault):
    rows = await log_rows(busy_vault)
    last = rows[-1]
    body = {
        "ts": last["ts"],
        "actor": "operator:test",
        "action": "secret_set.export",
        "target": "secret_set:openai/prod/default",
        "outcome": "ok",
        "request_id": "f" * 16,
        "details": {},
    }
    seq = last["seq"] + 1
    digest = chain_hash(last["hash"], seq, body)
    await run_sql(
        busy_vault,
        audit_events.insert().values(
            seq=seq, prev_hash=last["hash"], hash=digest, **{**body, "details": "{}"}
        ),
    )

    report = await busy_vault.audit.verify()

    assert report["ok"] is False
    assert report["first_bad"]["seq"] == seq + 1


async def test_inserting_a_forged_row_in_the_middle_is_caught(busy_vault: Vault):
    rows = await log_rows(busy_vault)
    statements: list[Any] = [
        update(audit_events).where(at(r["seq"])).values(seq=r["seq"] + 1)
        for r in reversed(rows)
        if r["seq"] >= 4
    ]
    body = {
        "ts": rows[2]["ts"],
        "actor": "operator:test",
        "action": "secret_set.update",
        "target": "secret_set:openai/prod/default",
        "outcome": "ok",
        "request_id": "f" * 16,
        "details": {},
    }
    digest = chain_hash(rows[2]["hash"], 4, body)
    statements.append(
        audit_events.insert().values(
            seq=4, prev_hash=rows[2]["hash"], hash=digest, **{**body, "details": "{}"}
        )
    )
    statements.append(update(audit_head).values(seq=len(rows) + 1))
    await run_sql(busy_vault, *statements)

    report = await busy_vault.audit.verify()

    assert report["ok"] is False
    assert report["first_bad"]["seq"] == 5


async def test_truncating_the_tail_is_caught_by_the_checkpoint(busy_vault: Vault):
    rows = await log_rows(busy_vault)
    keep = rows[-3]
    await run_sql(
        busy_vault,
        delete(audit_events).where(audit_events.c.seq > keep["seq"]),
        update(audit_head).values(seq=keep["seq"], head=keep["hash"]),
    )

    report = await busy_vault.audit.verify()

    assert report["ok"] is False
    assert report["first_bad"]["seq"] == keep["seq"] + 1
    assert "checkpoint" in report["first_bad"]["reason"]


async def test_truncating_the_tail_without_fixing_the_head_is_caught(busy_vault: Vault):
    await run_sql(busy_vault, delete(audit_events).where(audit_events.c.seq > 6))

    report = await busy_vault.audit.verify()

    assert report["ok"] is False
    assert report["first_bad"]["seq"] == 7


async def test_rewriting_the_whole_log_with_fresh_hashes_is_caught_by_the_checkpoint(
    busy_vault: Vault,
):
    rows = await log_rows(busy_vault)
    statements, head = [], GENESIS
    for row in rows:
        body = {f: row[f] for f in CONTENT_FIELDS}
        body["details"] = json.loads(row["details"])
        if row["seq"] == 4:
            body["actor"] = "operator:someone-else"
        digest = chain_hash(head, row["seq"], body)
        statements.append(
            update(audit_events)
            .where(at(row["seq"]))
            .values(actor=body["actor"], prev_hash=head, hash=digest)
        )
        head = digest
    statements.append(update(audit_head).values(seq=len(rows), head=head))
    await run_sql(busy_vault, *statements)

    report = await busy_vault.audit.verify()

    assert report["ok"] is False
    assert report["first_bad"]["seq"] == len(rows)
    assert "checkpoint" in report["first_bad"]["reason"]


async def test_a_checkpoint_signed_by_another_key_is_not_accepted(busy_vault: Vault):
    """Truncate, then sign a matching checkpoint with the attacker's own key."""
    rows = await log_rows(busy_vault)
    keep = rows[-3]
    await run_sql(
        busy_vault,
        delete(audit_events).where(audit_events.c.seq > keep["seq"]),
        update(audit_head).values(seq=keep["seq"], head=keep["hash"]),
    )
    attacker = SystemKeys.generate()[0].signer
    forged = Checkpoint.make(
        keep["seq"], keep["hash"], keep["ts"], attacker.sign, attacker.public_bytes()
    )
    path = busy_vault.core.checkpoints.path
    path.write_text(json.dumps(forged.as_dict()))

    report = await busy_vault.audit.verify()

    assert report["ok"] is False
    assert "signature" in report["first_bad"]["reason"]


async def test_a_checkpoint_with_a_garbled_signature_is_not_accepted(busy_vault: Vault):
    path = busy_vault.core.checkpoints.path
    data = json.loads(path.read_text())
    signature = bytearray(base64.b64decode(data["signature"]))
    signature[0] ^= 1
    data["signature"] = base64.b64encode(bytes(signature)).decode()
    path.write_text(json.dumps(data))

    assert (await busy_vault.audit.verify())["ok"] is False


@pytest.mark.parametrize("text", ["", "{not json", '{"count": 3}', "[]"])
async def test_an_unreadable_checkpoint_is_not_accepted(busy_vault: Vault, text: str):
    busy_vault.core.checkpoints.path.write_text(text)

    assert (await busy_vault.audit.verify())["ok"] is False


# -- one record per change, in the same transaction ---------------------------------------


async def revoke_newest_token(vault: Vault, ctx: Context) -> dict[str, Any]:
    newest = (await vault.operators.list_tokens())[-1]
    return await vault.operators.revoke_token(ctx, newest["id"])


async def test_every_state_change_writes_exactly_one_record(
    vault: Vault, ctx: Context, monkeypatch: pytest.MonkeyPatch
):
    """...and writes it through ``Core.record``, the vault's one audit helper."""
    path = "openai/prod/default"
    recorded: list[str] = []
    helper = Core.record

    async def counted(self: Core, tx: Tx, ctx: Context, action: str, *a: Any, **kw: Any) -> None:
        recorded.append(action)
        await helper(self, tx, ctx, action, *a, **kw)

    monkeypatch.setattr(Core, "record", counted)
    changes = [
        ("secret_set.create", lambda: create_set(vault, ctx)),
        (
            "secret_set.update",
            lambda: vault.sets.update(ctx, path, entries={"OPENAI_API_KEY": "v2"}),
        ),
        ("secret_set.rollback", lambda: vault.sets.rollback(ctx, path, 1)),
        ("secret_set.delete", lambda: vault.sets.delete(ctx, path)),
        ("secret_set.restore", lambda: vault.sets.restore(ctx, path)),
        ("keys.rotate", lambda: vault.keys.rotate(ctx)),
        ("keys.rewrap", lambda: vault.keys.rewrap(ctx)),
        ("keys.retire", lambda: vault.keys.retire(ctx, 1)),
        ("token.create", lambda: vault.operators.create_token(ctx, "second")),
        ("token.revoke", lambda: revoke_newest_token(vault, ctx)),
        ("secret_set.delete", lambda: vault.sets.delete(ctx, path)),
        ("secret_set.purge", lambda: vault.sets.purge(ctx, path)),
    ]
    for action, change in changes:
        before = await audit_count(vault)
        recorded.clear()

        await change()

        assert await audit_count(vault) == before + 1, action
        assert recorded == [action]
        newest = (await vault.audit.query(newest_first=True, limit=1))[0]
        assert newest.action == action
        assert newest.actor == ctx.actor
        assert newest.request_id == ctx.request_id
    assert (await vault.audit.verify())["ok"]


async def test_a_no_op_update_writes_nothing(vault: Vault, ctx: Context):
    created = await create_set(vault, ctx)
    before = await snapshot(vault)

    view = await vault.sets.update(ctx, created.path, entries={"OPENAI_API_KEY": CANARY})

    assert view.version == 1
    assert await snapshot(vault) == before


async def test_failing_changes_write_no_record(vault: Vault, ctx: Context):
    created = await create_set(vault, ctx)
    before = await snapshot(vault)

    with pytest.raises(Conflict):
        await vault.sets.update(ctx, created.path, entries={"A": "b"}, expected_version=7)
    with pytest.raises(Conflict):
        await create_set(vault, ctx)
    with pytest.raises(ValidationFailed):
        await vault.sets.update(ctx, created.path, entries={"lower": "x"})
    with pytest.raises(Conflict):
        await vault.sets.purge(ctx, created.path)
    with pytest.raises(Conflict):
        await vault.keys.retire(ctx, 1)

    assert await snapshot(vault) == before


async def test_a_change_whose_audit_record_fails_does_not_happen(
    vault: Vault, ctx: Context, monkeypatch: pytest.MonkeyPatch
):
    created = await create_set(vault, ctx)
    before = await snapshot(vault)

    async def broken_audit(self: Tx, **_: Any) -> Event:
        raise OSError("audit log is full")

    monkeypatch.setattr(Tx, "audit", broken_audit)
    with pytest.raises(Unavailable):
        await vault.sets.update(ctx, created.path, entries={"OPENAI_API_KEY": "v2"})
    with pytest.raises(Unavailable):
        await create_set(vault, ctx, "openai/prod/second")
    with pytest.raises(Unavailable):
        await vault.keys.rotate(ctx)
    monkeypatch.undo()

    assert await snapshot(vault) == before
    assert await version_count(vault) == 1
    assert (await vault.sets.reveal(created.path))["OPENAI_API_KEY"].reveal() == CANARY
