"""The audit pages' queries read an index from its newest end, never sort, never scan.

SQLite has no statistics on a fresh vault, so its choice between two usable indexes is a
guess; ``select_events`` makes it for it. Checked with ``EXPLAIN QUERY PLAN`` against the
schema the migrations build (so a lost index or a query the index cannot serve fails).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.dialects import sqlite

from keyfob.app.bootstrap import init_vault
from keyfob.settings import Settings
from keyfob.store.audit_log import select_events
from tests.support.hashing import FAST_HASHING


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:

    data = tmp_path_factory.mktemp("plans")
    init_vault(Settings(data_dir=data, **FAST_HASHING))
    return data / "keyfob.db"


def plan(db: Path, **filters: Any) -> str:
    query = select_events(limit=26, newest_first=True, **filters)
    sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with sqlite3.connect(db) as conn:
        return " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        ({}, "SCAN audit_events"),
        ({"after": 500_000}, "USING INTEGER PRIMARY KEY (rowid<?)"),
        ({"actor": "user:x"}, "ix_audit_events_actor_seq (actor=?)"),
        ({"actor": "user:x", "after": 9}, "ix_audit_events_actor_seq (actor=? AND seq<?)"),
        ({"action": "lease.use"}, "ix_audit_events_action_seq (action=?)"),
        ({"target": "secret_set:a/b/c"}, "ix_audit_events_target_seq (target=?)"),
        # Two indexed filters: the set's (or the actor's) few rows, not lease.use's many.
        ({"target": "secret_set:a/b/c", "action": "lease.use"}, "ix_audit_events_target_seq"),
        ({"actor": "agent:x", "action": "lease.use"}, "ix_audit_events_actor_seq"),
        ({"actor": "agent:x", "since": "2026-01-01"}, "ix_audit_events_actor_seq"),
        ({"target": "secret_set:a/b/c", "actor": "agent:x"}, "ix_audit_events_target_seq"),
    ],
)
def test_each_page_reads_one_index_in_seq_order(
    db: Path, filters: dict[str, Any], index: str
) -> None:
    found = plan(db, **filters)
    assert index in found, found
    assert "TEMP B-TREE" not in found, found  # read in order: no sort of the matches
    assert found.count("USING") <= 1, found
