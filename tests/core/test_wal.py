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
    wal_file = path.with_name(path.name + "-wal")

    async def commit() -> None:
        await db.batch(lambda batch: batch.append([draft]))

    try:
        # What one batch adds to a WAL that does not restart (no checkpoint is due yet).
        await commit()
        before = wal_file.stat().st_size
        for _ in range(20):
            await commit()
        per_batch = (wal_file.stat().st_size - before) / 20
        batches = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            await commit()
            batches += 1
            await asyncio.sleep(0)
        wal = wal_file.stat().st_size
    finally:
        await db.close()
    # A WAL that never restarts holds every batch's pages; one that restarts holds a few
    # checkpoints' worth (even when a loaded machine makes each checkpoint slow).
    assert per_batch >= PAGE
    assert batches > 200
    assert wal < batches * per_batch / 2
