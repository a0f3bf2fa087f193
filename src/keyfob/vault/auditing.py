"""Reading the audit log: query, export, and verify the chain against the checkpoint."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

from keyfob import crypto
from keyfob.audit import ChainVerifier, Event
from keyfob.store import audit_log
from keyfob.vault.core import Core


class Auditing:
    def __init__(self, core: Core) -> None:
        self._core = core

    async def query(self, **filters: Any) -> list[Event]:
        async with self._core.db.read() as conn:
            return await audit_log.query(conn, **filters)

    async def head(self) -> dict[str, Any]:
        """The chain's recorded length and head hash (one row; nothing is verified)."""
        async with self._core.db.read() as conn:
            recorded = await audit_log.head(conn)
        count, head = recorded if recorded else (0, "")
        return {"count": count, "head": head}

    async def export(self) -> AsyncIterator[Event]:
        async with self._core.db.read() as conn:
            async for event in audit_log.stream(conn):
                yield event

    async def verify(self) -> dict[str, Any]:
        """Walk the chain; then check it against the signed checkpoint outside the database."""
        checkpoint = self._core.checkpoints.read()
        verifier = ChainVerifier()
        if checkpoint is not None and checkpoint.count > 0:
            verifier.watch.add(checkpoint.count)
        recorded = await self._walk(verifier)
        first_bad = verifier.first_bad
        if first_bad is None and recorded is None:
            first_bad = {"seq": None, "reason": "the audit_head row is missing"}
        elif first_bad is None and recorded != (verifier.count, verifier.head):
            first_bad = {
                "seq": verifier.count + 1,
                "reason": f"the log ends at record {verifier.count} but its head says "
                f"{recorded[0] if recorded else '?'} (rows removed from the end)",
            }
        if first_bad is None and checkpoint is not None:
            first_bad = self._against_checkpoint(verifier, checkpoint)
        warnings = []
        if checkpoint is None and verifier.count:
            warnings.append(
                f"no checkpoint file at {self._core.checkpoints.path}: truncation of the log "
                "cannot be detected on this node"
            )
        return {
            "ok": first_bad is None,
            "warnings": warnings,
            "count": verifier.count,
            "head": verifier.head,
            "first_bad": first_bad,
            "checkpoint": checkpoint.as_dict() if checkpoint else None,
            "public_key": self._core.public_key,
        }

    async def _walk(self, verifier: ChainVerifier) -> tuple[int, str] | None:
        """Feed every record to ``verifier``; the recorded head, from the same snapshot."""

        def visit(rows: list[Any]) -> bool:
            verifier.feed_stored(rows)
            return verifier.first_bad is None

        path = audit_log.sqlite_file(self._core.db.url)
        if path is not None:
            # A plain connection in a worker thread: no driver hop per page, and a
            # million-record walk never holds the event loop.
            return await asyncio.to_thread(audit_log.walk_sqlite, path, visit)
        async with self._core.db.read(snapshot=True) as conn:
            async for rows in audit_log.stored_pages(conn):
                if not visit(list(rows)):
                    break
            return await audit_log.head(conn)

    def _against_checkpoint(
        self, verifier: ChainVerifier, checkpoint: Any
    ) -> dict[str, Any] | None:
        public = base64.b64decode(self._core.public_key)
        if not checkpoint.signature_ok(crypto.verify_signature, public):
            return {"seq": None, "reason": "the checkpoint file's signature is not valid"}
        if checkpoint.count > verifier.count:
            return {
                "seq": verifier.count + 1,
                "reason": f"the signed checkpoint vouches for {checkpoint.count} records but the "
                f"log has {verifier.count} (truncated)",
            }
        if checkpoint.count and verifier.hashes_at.get(checkpoint.count) != checkpoint.head:
            return {
                "seq": checkpoint.count,
                "reason": "record does not match the signed checkpoint (log rewritten)",
            }
        return None
