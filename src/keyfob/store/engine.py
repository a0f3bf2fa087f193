"""The database: engine, connection set-up, migrations and the two kinds of transaction.

``write()`` is the only way to change anything. It takes the write lock first
(``BEGIN IMMEDIATE`` on SQLite, ``SELECT … FOR UPDATE`` of the audit head on
PostgreSQL), so audited changes from every process append to one chain in order, and
it yields a ``Tx`` whose ``audit()`` appends to that chain in the same transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, select, text, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from keyfob.audit import Event, canonical, compute_hash
from keyfob.errors import ConfigurationError, Unavailable
from keyfob.store import tables

_MIGRATIONS = Path(__file__).parent / "migrations"


def async_url(url: str) -> str:
    """Map the URLs people write to the async drivers keyfob uses."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    if url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        return url
    raise ConfigurationError("KEYFOB_DATABASE_URL must start with sqlite:/// or postgresql://")


def redact(url: str) -> str:
    """The URL with any password hidden, fit for printing."""
    return make_url(url).render_as_string(hide_password=True)


class Tx:
    """One write transaction: the connection plus the audit chain head it holds locked."""

    def __init__(self, conn: AsyncConnection, seq: int, head: str) -> None:
        self.conn = conn
        self.seq = seq
        self.head = head
        self.events: list[Event] = []

    async def audit(
        self,
        *,
        ts: str,
        actor: str,
        action: str,
        target: str,
        outcome: str,
        request_id: str,
        details: dict[str, Any] | None = None,
    ) -> Event:
        """Append one event to the chain; it commits with the change or not at all."""
        seq = self.seq + 1
        body = dict(details or {})
        digest = compute_hash(
            self.head,
            seq=seq,
            ts=ts,
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
            request_id=request_id,
            details=body,
        )
        record = Event(seq, ts, actor, action, target, outcome, request_id, body, self.head, digest)
        await self.conn.execute(
            tables.audit_events.insert().values(
                seq=seq,
                ts=ts,
                actor=actor,
                action=action,
                target=target,
                outcome=outcome,
                request_id=request_id,
                details=canonical(body),
                prev_hash=self.head,
                hash=digest,
            )
        )
        self.seq, self.head = seq, digest
        self.events.append(record)
        return record


class Database:
    """Owns the engine; hands out read connections and audited write transactions."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "NORMAL") -> None:
        self.url = async_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        kwargs: dict[str, Any] = {"hide_parameters": True}
        if self.is_sqlite:
            path = self.url.removeprefix("sqlite+aiosqlite:///")
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        if self.is_sqlite:
            self._sqlite_events(sqlite_synchronous)

    def _sqlite_events(self, synchronous: str) -> None:
        @event.listens_for(self.engine.sync_engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            # keyfob emits BEGIN itself (below); the driver's implicit BEGIN is turned off.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(self.engine.sync_engine, "begin")
        def _begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("keyfob_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    @property
    def display_url(self) -> str:
        return redact(self.url)

    async def migrate(self) -> None:
        """Apply every Alembic migration not yet applied (serialised across nodes on PG)."""

        def _upgrade(sync_conn: Connection) -> None:
            config = Config()
            config.set_main_option("script_location", str(_MIGRATIONS))
            config.attributes["connection"] = sync_conn
            command.upgrade(config, "head")

        async with self.engine.connect() as conn:
            if not self.is_sqlite:
                await conn.execute(text("SELECT pg_advisory_lock(7465021)"))
                await conn.commit()
            try:
                await conn.run_sync(_upgrade)
                await conn.commit()
            finally:
                if not self.is_sqlite:
                    await conn.execute(text("SELECT pg_advisory_unlock(7465021)"))
                    await conn.commit()

    @asynccontextmanager
    async def read(self, *, snapshot: bool = False) -> AsyncIterator[AsyncConnection]:
        """A read transaction; ``snapshot`` gives one consistent view on PostgreSQL too."""
        try:
            async with self.engine.connect() as raw:
                conn = raw
                if snapshot and not self.is_sqlite:
                    conn = await raw.execution_options(isolation_level="REPEATABLE READ")
                async with conn.begin():
                    yield conn
        except (OperationalError, DBAPIError, OSError) as exc:
            raise Unavailable("the database cannot be read") from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        """An audited write transaction; commits on clean exit, rolls back on error."""
        if self._write_lock is not None:
            await self._write_lock.acquire()
        try:
            try:
                async with self.engine.connect() as raw:
                    conn = await raw.execution_options(keyfob_write=True)
                    async with conn.begin():
                        row = (
                            await conn.execute(
                                select(tables.audit_head.c.seq, tables.audit_head.c.head)
                                .where(tables.audit_head.c.id == 1)
                                .with_for_update()
                            )
                        ).first()
                        if row is None:
                            # Fail closed: without the chain head no change can be audited.
                            raise Unavailable("the audit chain head is missing; nothing is written")
                        tx = Tx(conn, int(row.seq), str(row.head))
                        yield tx
                        if tx.events:
                            await conn.execute(
                                update(tables.audit_head)
                                .where(tables.audit_head.c.id == 1)
                                .values(seq=tx.seq, head=tx.head)
                            )
            except (OperationalError, OSError) as exc:
                raise Unavailable("the database or audit log cannot be written") from exc
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    raise Unavailable("the database connection was lost") from exc
                raise
        finally:
            if self._write_lock is not None:
                self._write_lock.release()

    async def close(self) -> None:
        await self.engine.dispose()
