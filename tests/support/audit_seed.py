"""Fill a SQLite vault's audit log with many records in seconds, for tests at scale.

One ``INSERT … SELECT`` over a recursive counter, run by SQLite itself: no Python per
row. The records are shaped like a busy vault's (``lease.use`` / ``proxy.request`` by
100 agents over 10,000 sets, one a millisecond) with a few rare ones mixed in to search
for. Their hashes are short placeholders, NOT a valid chain: tests that seed this way must not
verify the chain (``bench/seed.py`` writes a real chain, at ~10x the cost).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

AGENTS = 100
SETS = 10_000
RARE_EVERY = 10_000  # every RARE_EVERY-th record is a rare one, by RARE_ACTOR
RARE_ACTOR = "user:auditor"
RARE_ACTION = "secret_set.update"

# seq continues the existing log; ts is one record a millisecond before 2026-01-01.
_SEED = f"""
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO audit_events
  (seq, ts, actor, action, target, outcome, request_id, details, prev_hash, hash)
SELECT
  :base + i,
  strftime('%Y-%m-%dT%H:%M:%S', 1767225600 - :count / 1000 + i / 1000, 'unixepoch')
    || printf('.%03d000Z', i % 1000),
  CASE WHEN i % {RARE_EVERY} = 0 THEN '{RARE_ACTOR}'
       ELSE printf('agent:%016x', i % {AGENTS}) END,
  CASE WHEN i % {RARE_EVERY} = 0 THEN '{RARE_ACTION}'
       WHEN i % 2 = 0 THEN 'lease.use' ELSE 'proxy.request' END,
  printf('secret_set:generic/seed/s%d', i % {SETS}),
  CASE WHEN i % 97 = 0 THEN 'denied' ELSE 'ok' END,
  printf('%016x', i),
  '{{"method":"POST","path":"/v1/chat/completions","status":200}}',
  printf('%016x', i - 1),
  printf('%016x', i)
FROM n
"""


def seed_audit(db: Path, count: int) -> int:
    """Append ``count`` records after the log's last; returns the last seq."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        # A scratch vault: speed over durability; no WAL, so the rows are written once.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN IMMEDIATE")
        base = int(conn.execute("SELECT coalesce(max(seq), 0) FROM audit_events").fetchone()[0])
        # Build the indexes once after the rows (a sort each), not row by row.
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'audit_events' AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute(_SEED, {"count": count, "base": base})
        for _, sql in indexes:
            conn.execute(sql)
        last = base + count
        conn.execute(
            "UPDATE audit_head SET seq = ?, head = ? WHERE id = 1", (last, f"{count:016x}")
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    return last
