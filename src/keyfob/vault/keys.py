"""Key management: status, rotate (new KEK term), rewrap (move DEKs to it), retire."""

from __future__ import annotations

from keyfob import crypto
from keyfob.errors import Conflict, NotFound
from keyfob.store import Tx
from keyfob.store import keyring as keyring_sql
from keyfob.store import secrets as sql
from keyfob.vault.authority import Authority
from keyfob.vault.connect_flows import rewrap_flows
from keyfob.vault.context import Context
from keyfob.vault.core import Core
from keyfob.vault.refresh import rewrap_tokens
from keyfob.vault.views import KeyStatus, KeyTerm, Rewrapped, Rotated, TermRetired

_BATCH = 200


class Keys:
    def __init__(self, core: Core) -> None:
        self._core = core

    async def status(self) -> KeyStatus:
        async with self._core.db.read() as conn:
            rows = await keyring_sql.list_terms(conn)
            counts = await sql.records_per_term(conn)
        live = [r.term for r in rows if r.wrapped is not None]
        active = max(live) if live else 0
        terms = []
        for row in rows:
            if row.wrapped is None:
                status = "retired"
            elif row.term == active:
                status = "active"
            else:
                status = "previous"
            terms.append(
                KeyTerm(row.term, status, row.created_at, row.retired_at, counts.get(row.term, 0))
            )
        return KeyStatus(
            active, tuple(terms), self._core.public_key, self._core.ring.master.describe()
        )

    async def rotate(self, ctx: Context) -> Rotated:
        async with self._core.write() as tx:
            await self._core.sync_terms(tx)
            rows = await keyring_sql.list_terms(tx.conn)
            # Terms are never reused, even retired ones: a term names one key forever.
            kek = self._core.ring.new_term(max((r.term for r in rows), default=0) + 1)
            await keyring_sql.add_term(tx.conn, kek.term, kek.wrapped, self._core.now())
            await self._core.record(
                tx, ctx, "keys.rotate", f"kek:{kek.term}", details={"term": kek.term}
            )
            tx.announce("keys")
        self._core.data_keys.clear()
        return Rotated(kek.term)

    async def rewrap(self, ctx: Context) -> Rewrapped:
        """Move every wrapped DEK to the active term, a batch per transaction."""
        moved = 0
        while True:
            async with self._core.write() as tx:
                await self._core.sync_terms(tx)
                term = self._core.ring.active_term
                batch = await sql.versions_on_old_terms(tx.conn, term, _BATCH)
                if not batch:
                    break
                done = 0
                for set_id, version, stored_term, wrapped in batch:
                    await self._core.ensure_term(wrapped)
                    new_term, rewrapped = crypto.rewrap(
                        self._core.ring, wrapped, set_id=set_id, version=version
                    )
                    # Match on the stored term column: the same one the batch query used,
                    # so a row that moves is never selected again.
                    if await sql.set_wrapped_dek(
                        tx.conn, set_id, version, stored_term, new_term, rewrapped
                    ):
                        done += 1
                await self._core.record(
                    tx, ctx, "keys.rewrap", f"kek:{term}", details={"term": term, "rewrapped": done}
                )
                tx.announce("keys")
                moved += done
        self._core.data_keys.clear()
        # keyfob's CA key, stored access tokens and connect flows in progress are sealed
        # like secret versions and move with them (not counted: ``rewrapped`` counts
        # secret versions).
        async with self._core.write() as tx:
            await self._sealed_with_them(tx)
        return Rewrapped(moved, self._core.ring.active_term)

    async def _sealed_with_them(self, tx: Tx) -> None:
        await Authority(self._core).rewrap_in(tx)
        await rewrap_tokens(self._core, tx)
        await rewrap_flows(self._core, tx)

    async def retire(self, ctx: Context, term: int) -> TermRetired:
        async with self._core.write() as tx:
            await self._core.sync_terms(tx)
            rows = {r.term: r for r in await keyring_sql.list_terms(tx.conn)}
            row = rows.get(term)
            if row is None:
                raise NotFound(f"key term {term} does not exist")
            if row.wrapped is None:
                raise Conflict(f"key term {term} is already retired")
            if term == self._core.ring.active_term:
                raise Conflict(f"key term {term} is the active term; rotate first")
            still = (await sql.records_per_term(tx.conn)).get(term, 0)
            if still:
                raise Conflict(
                    f"key term {term} still wraps {still} records; run keys rewrap first",
                    records=still,
                )
            # The CA key, access tokens and connect flows move along by themselves.
            await self._sealed_with_them(tx)
            await keyring_sql.retire_term(tx.conn, term, self._core.now())
            await self._core.record(tx, ctx, "keys.retire", f"kek:{term}", details={"term": term})
            tx.announce("keys")  # every node forgets the term
        self._core.ring.forget(term)
        self._core.data_keys.clear()
        return TermRetired(term)
