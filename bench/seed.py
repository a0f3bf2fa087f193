"""Fill a keyfob SQLite vault with a lived-in amount of data, fast, for the benchmarks.

``python bench/seed.py DATA_DIR [--leases N] [--sets N] [--audit N]`` adds, to a vault
that keyfob is NOT running on: ``sets`` secret sets (each with a version and a grant),
100 agents, ``leases`` live leases spread over those grants, and ``audit`` audit
records appended to the existing hash chain (``audit_head`` moved with it, so
``keyfob audit verify`` still passes). Rows go in through keyfob's own table
definitions (``keyfob.store.tables``) and chain hash (``keyfob.audit.record_hash``)
with plain ``sqlite3`` ``executemany`` in one transaction: about a minute for the
defaults. The copied set versions reuse one real version's wrapped key and ciphertext;
they are never decrypted (their AAD names another set), only stored and indexed.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from keyfob.audit import record_hash
from keyfob.store import tables

AGENTS = 100
_ACTIONS = ("lease.use", "proxy.request")  # what a busy vault's log is mostly made of


def _hex(n: int) -> str:
    return os.urandom(n).hex()


def _moment(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _insert(conn: sqlite3.Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    names = [c.name for c in table.columns]
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    conn.executemany(sql, ([row[n] for n in names] for row in rows))


def seed_rows(conn: sqlite3.Connection, sets: int, leases: int) -> None:
    """``sets`` sets with a version and a grant each, 100 agents, ``leases`` live leases."""
    model = conn.execute(
        "SELECT s.profile, v.keys, v.kek_term, v.wrapped_dek, v.ciphertext "
        "FROM secret_sets s JOIN secret_versions v ON v.set_id = s.id LIMIT 1"
    ).fetchone()
    if model is None:
        raise SystemExit("seed: the vault has no secret set to copy; set one up first")
    profile, keys, kek_term, wrapped, ciphertext = model
    now = datetime.now(UTC)
    stamp, later = _moment(now), _moment(now + timedelta(days=7))
    agent_ids = [_hex(8) for _ in range(AGENTS)]
    _insert(
        conn,
        tables.agents,
        [
            {
                "id": a,
                "name": f"seed-{i}",
                "digest": _hex(32),
                "disabled_at": None,
                "created_at": stamp,
                "created_by": "operator:seed",
                "updated_at": stamp,
            }
            for i, a in enumerate(agent_ids)
        ],
    )
    set_rows, version_rows, grant_rows = [], [], []
    for i in range(sets):
        set_id = _hex(8)
        path = f"generic/seed/s{i}"
        set_rows.append(
            {
                "id": set_id,
                "provider": "generic",
                "environment": "seed",
                "name": f"s{i}",
                "labels": "{}",
                "profile": profile,
                "version": 1,
                "created_at": stamp,
                "updated_at": stamp,
                "deleted_at": None,
                "exported_at": None,
            }
        )
        version_rows.append(
            {
                "set_id": set_id,
                "version": 1,
                "created_at": stamp,
                "actor": "operator:seed",
                "reason": "create",
                "rollback_of": None,
                "keys": keys,
                "kek_term": kek_term,
                "wrapped_dek": wrapped,
                "ciphertext": ciphertext,
            }
        )
        grant_rows.append(
            {
                "id": _hex(8),
                "agent_id": agent_ids[i % AGENTS],
                "set_id": set_id,
                "set_path": path,
                "keys": None,
                "actions": '["proxy"]',
                "not_before": None,
                "expires_at": None,
                "scopes": '["request", "workflow"]',
                "max_lease_ttl": 86_400 * 7,
                "max_lease_uses": None,
                "rate_limit": None,
                "max_uses": None,
                "uses": 0,
                "rate_window": 0,
                "rate_count": 0,
                "methods": None,
                "paths": None,
                "approval": "none",
                "created_at": stamp,
                "created_by": "operator:seed",
                "updated_at": stamp,
                "revoked_at": None,
            }
        )
    _insert(conn, tables.secret_sets, set_rows)
    _insert(conn, tables.secret_versions, version_rows)
    _insert(conn, tables.grants, grant_rows)
    lease_rows = []
    for i in range(leases):
        grant = grant_rows[i % len(grant_rows)]
        single = i % 2 == 0
        lease_rows.append(
            {
                "id": _hex(8),
                "digest": _hex(32),
                "agent_id": grant["agent_id"],
                "grant_id": grant["id"],
                "set_id": grant["set_id"],
                "set_path": grant["set_path"],
                "actions": '["proxy"]',
                "keys": None,
                "scope": "request" if single else "workflow",
                "max_uses": 1 if single else None,
                "uses": 0,
                "created_at": stamp,
                "expires_at": later,
                "revoked_at": None,
                "revoke_reason": None,
            }
        )
    _insert(conn, tables.leases, lease_rows)


def _audit_rows(seq: int, head: str, count: int) -> Iterator[tuple[Any, ...]]:
    """``count`` chained records after (``seq``, ``head``), shaped like a proxy's records."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=count // 1000 + 1)
    # Canonical JSON (keys sorted, no spaces) written out: canonical() per record is slow.
    use = '{"lease_id":"%016x","method":"POST","path":"/v1/chat/completions"}'
    outcome = '{"bytes_down":205,"bytes_up":76,"path":"/v1/chat/completions","status":200}'
    second = ""
    for n in range(count):
        seq += 1
        if n % 1000 == 0:  # one record a millisecond
            second = (start + timedelta(seconds=n // 1000)).strftime("%Y-%m-%dT%H:%M:%S")
        ts = f"{second}.{n % 1000:03d}000Z"
        action = _ACTIONS[n % 2]
        actor = f"agent:{n % AGENTS:016x}"
        target = f"secret_set:generic/seed/s{n % 10_000}"
        request_id = f"{n // 2:016x}"
        details = use % (n % 100_000) if n % 2 == 0 else outcome
        digest = record_hash(
            head,
            seq=seq,
            ts=ts,
            actor=actor,
            action=action,
            target=target,
            outcome="ok",
            request_id=request_id,
            details_json=details,
        )
        yield (seq, ts, actor, action, target, "ok", request_id, details, head, digest)
        head = digest


def seed_audit(conn: sqlite3.Connection, count: int) -> None:
    """Append ``count`` records to the chain and move its head."""
    seq, head = conn.execute("SELECT seq, head FROM audit_head WHERE id = 1").fetchone()
    rows = list(_audit_rows(int(seq), str(head), count))
    names = [c.name for c in tables.audit_events.columns]
    assert names == [
        "seq", "ts", "actor", "action", "target", "outcome", "request_id", "details",
        "prev_hash", "hash",
    ], names  # fmt: skip
    conn.executemany(f"INSERT INTO audit_events VALUES ({', '.join('?' * 10)})", rows)
    last = rows[-1] if rows else (seq, None, None, None, None, None, None, None, None, head)
    conn.execute("UPDATE audit_head SET seq = ?, head = ? WHERE id = 1", (last[0], last[9]))


def seed(data_dir: Path, *, sets: int, leases: int, audit: int) -> float:
    """Seed the vault in ``data_dir``; returns the seconds it took."""
    started = time.monotonic()
    conn = sqlite3.connect(data_dir / "keyfob.db", isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")  # a scratch vault: speed over durability
        conn.execute("BEGIN IMMEDIATE")
        if sets or leases:
            seed_rows(conn, max(1, sets), leases)
        if audit:
            seed_audit(conn, audit)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # keyfob starts on a small WAL
    finally:
        conn.close()
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--sets", type=int, default=10_000)
    parser.add_argument("--leases", type=int, default=100_000)
    parser.add_argument("--audit", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    took = seed(args.data_dir, sets=args.sets, leases=args.leases, audit=args.audit)
    print(
        json.dumps(
            {
                "seconds": round(took, 1),
                **{k: getattr(args, k) for k in ("sets", "leases", "audit")},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
