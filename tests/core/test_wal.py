"""The SQLite WAL under steady grouped commits: copied back and started over, not grown."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from keyfob.store import Database, engine
from keyfob.store.audit_writer import Draft


async def test_the_wal_starts_over_while_batches_keep_committing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Batches commit back to back (as under load: one always follows the checkpoint's
    copy), yet the WAL restarts after each checkpoint instead of growing by every commit.

    Each checkpoint reports how many frames the WAL holds since it last restarted: a WAL
    that restarts shows that count falling again and again; one that never restarts
    shows it only growing. (The file's size is no measure: it stays at the most the WAL
    ever held, so one stall of the checkpoint thread on a loaded machine set it.)"""
    monkeypatch.setattr(engine, "WAL_CHECKPOINT_INTERVAL", 0.02)
    path = tmp_path / "keyfob.db"
    db = Database(f"sqlite:///{path}")
    await db.migrate()
    draft = Draft("2026-12-05T00:00:00Z", "agent:a", "lease.use", "secret_set:x", "ok", "r", {})
    held: list[int] = []
    checkpoint = db._wal_checkpoint

    def counted() -> tuple[int, int]:
        frames, copied = checkpoint()
        held.append(frames)
        return frames, copied

    monkeypatch.setattr(db, "_wal_checkpoint", counted)

    async def commit() -> None:
        await db.batch(lambda batch: batch.append([draft]))

    try:
        batches = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            await commit()
            batches += 1
            await asyncio.sleep(0)
    finally:
        await db.close()
    restarts = sum(1 for before, after in itertools.pairwise(held) if after < before)
    assert batches > 200
    assert len(held) > 10
    assert restarts > len(held) / 4, held
