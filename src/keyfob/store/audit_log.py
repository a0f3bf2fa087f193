"""SQL for reading the audit chain (``audit_writer`` appends to it)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, select

from keyfob.audit import STORED_COLUMNS, Event, stored_event
from keyfob.store._asyncio import AsyncConnection
from keyfob.store.tables import audit_events, audit_head

_STORED = select(*(audit_events.c[name] for name in STORED_COLUMNS))
_SQL_STORED = f"SELECT {', '.join(STORED_COLUMNS)} FROM audit_events ORDER BY seq"  # noqa: S608
_SQL_HEAD = "SELECT seq, head FROM audit_head WHERE id = 1"


def _event(row: Any) -> Event:
    return stored_event(tuple(row._mapping[name] for name in STORED_COLUMNS))


async def query(conn: AsyncConnection, **filters: Any) -> list[Event]:
    """Events matching ``filters`` (see ``select_events``), a page of them."""
    return [_event(r) for r in (await conn.execute(select_events(**filters))).all()]


def select_events(
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    outcome: str | None = None,
    since: str | None = None,
    until: str | None = None,
    after: int = 0,
    limit: int = 100,
    newest_first: bool = False,
) -> Select[Any]:
    """The query for a page of events: filters, a ``seq`` cursor, newest or oldest first."""
    c = audit_events.c
    exact_action = action if action and not action.endswith(".") else None
    # One (column, seq) index drives the query: the most selective filter given (a set's
    # events, then an actor's, then an action's). The other columns are compared as
    # ``col || ''``, which no index matches, so neither SQLite (no statistics) nor
    # PostgreSQL walks a huge ``lease.use`` range instead of one set's few rows.
    driver = next(
        (name for name, v in (("target", target), ("actor", actor), ("action", exact_action)) if v),
        None,
    )

    def col(name: str) -> Any:
        return c[name] if name == driver else c[name].concat("")

    q = select(audit_events)
    if actor:
        q = q.where(col("actor") == actor)
    if action:
        # "secret_set." matches every action of that family.
        if action.endswith("."):
            q = q.where(c.action.startswith(action, autoescape=True))
        else:
            q = q.where(col("action") == action)
    if target:
        q = q.where(col("target") == target)
    if outcome:
        q = q.where(c.outcome == outcome)
    ts = c.ts if driver is None else c.ts.concat("")
    if since:
        q = q.where(ts >= since)
    if until:
        q = q.where(ts < until)
    if newest_first:
        if after:
            q = q.where(c.seq < after)
        q = q.order_by(c.seq.desc())
    else:
        q = q.where(c.seq > after).order_by(c.seq)
    return q.limit(limit)


async def stream(conn: AsyncConnection, batch: int = 1000) -> AsyncIterator[Event]:
    """Every event in seq order, a batch at a time."""
    after = 0
    while True:
        rows = (
            await conn.execute(
                select(audit_events)
                .where(audit_events.c.seq > after)
                .order_by(audit_events.c.seq)
                .limit(batch)
            )
        ).all()
        if not rows:
            return
        for row in rows:
            yield _event(row)
        after = int(rows[-1].seq)


async def stored_pages(
    conn: AsyncConnection, page: int = 5000
) -> AsyncIterator[Sequence[Sequence[Any]]]:
    """Every record as stored (``STORED_COLUMNS``, details as text), a page at a time."""
    after = 0
    while True:
        query = _STORED.where(audit_events.c.seq > after).order_by(audit_events.c.seq)
        rows = (await conn.execute(query.limit(page))).all()
        if not rows:
            return
        yield rows
        after = int(rows[-1][0])


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite+aiosqlite:///`` URL; None for PostgreSQL or memory."""
    path = url.removeprefix("sqlite+aiosqlite:///")
    return None if path == url or path in ("", ":memory:") else Path(path)


def walk_sqlite(
    path: Path, visit: Callable[[list[Any]], bool], page: int = 5000
) -> tuple[int, str] | None:
    """Pages of stored records to ``visit`` until it says stop, then the recorded head."""
    # One read transaction on a plain sqlite3 connection (no driver hop per page), for
    # verify's walk in a worker thread.
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("BEGIN")  # one snapshot for the walk and the head
        cursor = conn.execute(_SQL_STORED)
        while rows := cursor.fetchmany(page):
            if not visit(rows):
                break
        cursor.close()
        row = conn.execute(_SQL_HEAD).fetchone()
        conn.execute("COMMIT")
        return (int(row[0]), str(row[1])) if row else None
    finally:
        conn.close()


async def head(conn: AsyncConnection) -> tuple[int, str] | None:
    """The chain head as recorded, or None if its row is gone (tampering)."""
    row = (await conn.execute(select(audit_head.c.seq, audit_head.c.head))).first()
    return (int(row.seq), str(row.head)) if row else None


async def count(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(audit_events))).scalar_one())
