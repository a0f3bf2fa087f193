"""What every vault service shares: the database, the keyring, the clock, checkpoints."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from keyfob import crypto, tokens
from keyfob.audit import Checkpoint, CheckpointFile
from keyfob.clock import Clock, isoformat
from keyfob.crypto import Keyring, WrappedKek
from keyfob.errors import DecryptionFailed
from keyfob.store import Database, Tx
from keyfob.store import keyring as keyring_sql
from keyfob.vault.context import Context

log = logging.getLogger("keyfob.audit")

# One answer for every failed authentication, whatever the route, token kind or reason.
UNAUTHORIZED = "a valid token is required (Authorization: Bearer kfo_…, kfa_… or kfl_…)"
# Grouped commits sign a checkpoint at most this often (seconds); admin writes at once.
CHECKPOINT_INTERVAL = 0.25


class Core:
    def __init__(
        self, db: Database, ring: Keyring, clock: Clock, checkpoints: CheckpointFile
    ) -> None:
        self.db = db
        self.ring = ring
        self.clock = clock
        self.checkpoints = checkpoints
        # Unwrapped data keys by set version: the proxy opens the same version per request.
        self.data_keys = crypto.DataKeys()
        self._due: tuple[int, str] | None = None
        self._checkpointing: asyncio.Task[None] | None = None

    def now(self) -> str:
        return isoformat(self.clock.now())

    @property
    def public_key(self) -> str:
        return base64.b64encode(self.ring.system.signer.public_bytes()).decode()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        """An audited write transaction; a signed checkpoint follows every commit."""
        async with self.db.write() as tx:
            yield tx
        if tx.events:
            self.checkpoint(tx.seq, tx.head)

    def checkpoint(self, count: int, head: str) -> Checkpoint:
        """Sign and write a checkpoint. The change is already committed and audited, so a
        failing write is logged (and ``/readyz`` turns unready), not raised."""
        signer = self.ring.system.signer
        point = Checkpoint.make(count, head, self.now(), signer.sign, signer.public_bytes())
        try:
            self.checkpoints.write(point)
        except OSError as exc:
            log.warning("could not write the audit checkpoint: %s", type(exc).__name__)
        return point

    def checkpoint_soon(self, count: int, head: str) -> None:
        """Checkpoint after a grouped commit, coalesced and off the event loop: signing and
        an fsync per batch would serialise the proxy's requests."""
        self._due = (count, head)
        if self._checkpointing is None or self._checkpointing.done():
            self._checkpointing = asyncio.get_running_loop().create_task(self._checkpoint_later())

    async def _checkpoint_later(self) -> None:
        await asyncio.sleep(CHECKPOINT_INTERVAL)
        await self.flush_checkpoint()

    async def flush_checkpoint(self) -> None:
        """Write the checkpoint a grouped commit left due, if any."""
        task, self._checkpointing = self._checkpointing, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        due, self._due = self._due, None
        if due is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.checkpoint, *due)

    async def sync_terms(self, tx: Tx) -> None:
        """Pick up KEK terms another node added or retired since this keyring was loaded."""
        rows = await keyring_sql.list_terms(tx.conn)
        live = {r.term for r in rows if r.wrapped is not None}
        for row in rows:
            if row.wrapped is not None and not self.ring.has(row.term):
                self.ring.add_wrapped(WrappedKek(row.term, row.wrapped))
        for term in self.ring.terms:
            if term not in live:
                self.ring.forget(term)

    async def ensure_term(self, wrapped_dek: bytes) -> None:
        """Load the KEK term a wrapped DEK needs if this process has not seen it yet."""
        if self.ring.has(crypto.term_of(wrapped_dek)):
            return
        async with self.db.read() as conn:
            for row in await keyring_sql.list_terms(conn):
                if row.wrapped is not None and not self.ring.has(row.term):
                    self.ring.add_wrapped(WrappedKek(row.term, row.wrapped))
        if not self.ring.has(crypto.term_of(wrapped_dek)):
            raise DecryptionFailed()

    async def open_entries(
        self, set_id: str, version: int, term: int, wrapped_dek: bytes, ciphertext: bytes
    ) -> dict[str, str]:
        """A stored version's entries, decrypted; any failure is ``DecryptionFailed``."""
        await self.ensure_term(wrapped_dek)
        sealed = crypto.Sealed(term, wrapped_dek, ciphertext)
        plain = crypto.open(
            self.ring, sealed, set_id=set_id, version=version, keys=self.data_keys
        )
        try:
            entries = json.loads(plain)
        except ValueError:
            raise DecryptionFailed() from None
        if not isinstance(entries, dict):
            raise DecryptionFailed()
        return entries

    async def record(
        self,
        tx: Tx,
        ctx: Context,
        action: str,
        target: str,
        *,
        details: dict[str, Any] | None = None,
        outcome: str = "ok",
    ) -> None:
        """Append one audit event for ``ctx`` to the open transaction, stamped now."""
        await tx.audit(
            ts=self.now(),
            actor=ctx.actor,
            action=action,
            target=target,
            outcome=outcome,
            request_id=ctx.request_id,
            details=details,
        )

    async def audit_auth_failure(
        self, ctx: Context, route: str, reason: str, token: str | None
    ) -> None:
        """Record a failed authentication: the token's kind, never the token."""
        kind = next((p for p in tokens.PREFIXES if token and token.startswith(p)), None)
        async with self.write() as tx:
            await self.record(
                tx,
                ctx,
                "auth.failed",
                f"route:{route}"[:300],
                details={"reason": reason, "token_kind": kind, "client": ctx.client},
                outcome="denied",
            )

    async def audit_access_denied(self, ctx: Context, route: str, needed: str) -> None:
        """Record a valid token used where it has no business (an agent on an operator route)."""
        async with self.write() as tx:
            await self.record(
                tx,
                ctx,
                "access.denied",
                f"route:{route}"[:300],
                details={"needs": needed, "client": ctx.client},
                outcome="denied",
            )
