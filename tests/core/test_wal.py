"""The SQLite WAL under steady grouped commits: copied back and started over, not grown."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from keyfob.store import Database, engine
from keyfob.store.audit_writer import Draft

PAGE = 4096


async def test_the_wal_starts_over_while_batches_keep_committing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Batches commit back to back (as under load: one always follows the checkpoint's
    copy), yet the WAL restarts after each checkpoint instead of growing by every commit."""
    monkeypatch.setattr(engine, "WAL_CHECKPOINT_INTERVAL", 0.02)
    path = tmp_path / "keyfob.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()
    draft = Draft("2026-12-05T00:00:00Z", "agent:a", "lease.use", "secret_set:x", "ok", "r", {})
    batches = 0
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            await db.batch(lambda batch: batch.append([draft]))
            batches += 1
            await asyncio.sleep(0)
        wal = path.with_name(path.name + "-wal").stat().st_size
    finally:
        await db.close()
    # Each batch writes several pages (the record, its indexes, the chain head): a WAL
    # that never restarts holds all of them; one that restarts, a few checkpoints' worth.
    assert batches > 200
    assert wal < batches * PAGE
