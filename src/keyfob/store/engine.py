"""The database: engine, connection set-up, migrations and the two kinds of transaction.

``write()`` is the only way to change anything. It takes the write lock first
(``BEGIN IMMEDIATE`` on SQLite, ``SELECT … FOR UPDATE`` of the audit head on
PostgreSQL), so audited changes from every process append to one chain in order, and
it yields a ``Tx`` whose ``audit()`` appends to that chain in the same transaction.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import event, select, text, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from keyfob.audit import Event
from keyfob.errors import ConfigurationError, Unavailable
from keyfob.store import notify, tables
from keyfob.store._asyncio import AsyncConnection, AsyncEngine, create_async_engine
from keyfob.store.audit_writer import AuditChain, Draft, as_mappings
from keyfob.store.batch import SQL_LOCK_HEAD, Batch, CoreBatch, LostRace, RowCache, SqliteBatch

if TYPE_CHECKING:
    from alembic.config import Config

T = TypeVar("T")

log = logging.getLogger("keyfob.store")

# Committed WAL pages are copied into the database at most this often (seconds), by a
# connection of their own in a thread of their own: never inside a batch, and the bulk of
# the copy never under the write lock, so requests rarely wait for one.
WAL_CHECKPOINT_INTERVAL = 1.0
# How long a batch in the writer thread waits for another process's write lock (seconds).
LOCK_WAIT = 30.0


class _Busy(Exception):
    """The SQLite write lock is held elsewhere; the batch goes to the writer thread."""


_MIGRATIONS = Path(__file__).parent / "migrations"


def _alembic_config(extra_versions: Sequence[Path] = ()) -> Config:
    # Alembic is imported only to migrate: a serving process that is at head never loads
    # it (about 10 MB of its idle memory). ``extra_versions``: more script folders (tests
    # of rolling upgrades bring a migration this release does not have).
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    if extra_versions:
        folders = [_MIGRATIONS / "versions", *extra_versions]
        config.set_main_option("path_separator", "os")
        config.set_main_option("version_locations", os.pathsep.join(str(f) for f in folders))
    return config


def known_revisions(extra_versions: Sequence[Path] = ()) -> list[str]:
    """Every migration this code has, oldest first (loads Alembic)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_alembic_config(extra_versions))
    return [script.revision for script in scripts.walk_revisions()][::-1]


@functools.cache
def _head_revision() -> str | None:
    """The newest migration's revision id, read from the scripts' ``revision`` and
    ``down_revision`` assignments (the one revision no other script builds on)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (_MIGRATIONS / "versions").glob("*.py"):
        for node in ast.parse(script.read_text()).body:
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.expr):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = {t.id for t in targets if isinstance(t, ast.Name)}
                if not names & {"revision", "down_revision"}:
                    continue
                value = ast.literal_eval(node.value)
                if "revision" in names and isinstance(value, str):
                    revisions.add(value)
                elif "down_revision" in names and value is not None:
                    parents.update([value] if isinstance(value, str) else value)
    heads = revisions - parents
    if len(heads) != 1:
        raise ConfigurationError(f"the migrations have {len(heads)} heads, not one")
    return heads.pop()


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


# Every audited write starts here: the chain head, locked (FOR UPDATE on PostgreSQL).
_LOCK_HEAD = (
    select(tables.audit_head.c.seq, tables.audit_head.c.head)
    .where(tables.audit_head.c.id == 1)
    .with_for_update()
)


def _locked_batch(conn: Connection, work: Callable[[Batch], T]) -> tuple[T, Batch]:
    """Inside an open write transaction: lock the chain head, run ``work``, move the head."""
    row = conn.execute(_LOCK_HEAD).first()
    if row is None:
        raise Unavailable("the audit chain head is missing; nothing is written")
    batch = CoreBatch(conn, int(row.seq), str(row.head))
    result = work(batch)
    batch.finish()
    return result, batch


class Tx(AuditChain):
    """One write transaction: the connection plus the audit chain head it holds locked."""

    def __init__(self, conn: AsyncConnection, seq: int, head: str) -> None:
        super().__init__(seq, head)
        self.conn = conn
        self.notices: list[str] = []

    def announce(self, notice: str) -> None:
        """Tell other nodes, when this commits, that their cache of ``notice`` is stale
        (``topic`` or ``topic:id``; PostgreSQL only, see ``store.notify``)."""
        self.notices.append(notice)

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
        draft = Draft(ts, actor, action, target, outcome, request_id, dict(details or {}))
        (record,) = self.append([draft])
        await self.conn.execute(tables.audit_events.insert(), as_mappings(self.take_rows()))
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
        # SQLite batches run on a plain sqlite3 connection (see ``batch``); its thread is
        # only for waiting on another process's lock and for WAL checkpoints.
        self._writer: ThreadPoolExecutor | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._checkpointer: ThreadPoolExecutor | None = None
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._checkpoint_timer: asyncio.TimerHandle | None = None
        self._checkpointing: asyncio.Task[None] | None = None
        self._batches = 0  # SQLite batches committed (a checkpoint asks if any came since)
        self._rows = RowCache()
        self._synchronous = sqlite_synchronous
        # Told of every committed transaction's audit records and how long the commit
        # took (metrics); never of a transaction that rolled back.
        self.on_commit: Callable[[Sequence[Event], float], None] | None = None
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

    def listener(
        self,
        on_notice: Callable[[str], None],
        on_reset: Callable[[], None],
        ttl: float,
        on_state: Callable[[bool], None] | None = None,
    ) -> notify.Listener | None:
        """A ``LISTEN`` connection for other nodes' cache notices; None on SQLite."""
        if self.is_sqlite:
            return None
        return notify.Listener(self.url, on_notice, on_reset, ttl, on_state)

    @property
    def display_url(self) -> str:
        return redact(self.url)

    async def revision(self) -> str | None:
        """The schema's Alembic revision; None when there is no schema yet."""
        try:
            async with self.engine.connect() as conn:
                rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        except DBAPIError:
            return None  # no schema yet (or no database: ``migrate`` reports that)
        return str(rows[0][0]) if len(rows) == 1 else None

    async def at_head(self) -> bool:
        """True when the schema already carries the newest migration."""
        return await self.revision() == _head_revision()

    async def oldest_code(self) -> str | None:
        """``schema_compat.oldest_code``: the oldest revision whose code may run here."""
        try:
            async with self.engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(tables.schema_compat.c.oldest_code).where(
                            tables.schema_compat.c.id == 1
                        )
                    )
                ).first()
        except DBAPIError:
            return None
        return str(row[0]) if row is not None else None

    async def newer_schema(self) -> str | None:
        """The schema's revision when this code does not know it (another node upgraded
        the database); None otherwise. Refuses a schema this code may not run on."""
        current = await self.revision()
        if current is None or current == _head_revision():
            return None
        known = known_revisions()
        if current in known:
            return None
        floor = await self.oldest_code()
        if floor is None or floor not in known:
            raise ConfigurationError(
                f"the database schema is at revision {current}, newer than this keyfob "
                f"(which knows up to {_head_revision()}) and not compatible with it "
                f"(it needs code at revision {floor or '?'} or later): upgrade keyfob"
            )
        return current

    async def migrate(self, extra_versions: Sequence[Path] = ()) -> None:
        """Apply every Alembic migration not yet applied (serialised across nodes on PG).

        A schema newer than this code (rolling upgrade: another node is ahead) is left
        as it is when its ``schema_compat`` row says this code may still run on it.
        """
        # Start-up (and every test's fresh vault) skips loading Alembic's scripts when
        # there is nothing to apply.
        if not extra_versions and await self.at_head():
            return
        if not extra_versions and (ahead := await self.newer_schema()) is not None:
            log.warning(
                "database schema %s is newer than this keyfob (%s); serving on it "
                "(expand-only since this release)",
                ahead,
                _head_revision(),
            )
            return

        def _upgrade(sync_conn: Connection) -> None:
            from alembic import command

            config = _alembic_config(extra_versions)
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
                        row = (await conn.execute(_LOCK_HEAD)).first()
                        if row is None:
                            # Fail closed: without the chain head no change can be audited.
                            raise Unavailable("the audit chain head is missing; nothing is written")
                        tx = Tx(conn, int(row.seq), str(row.head))
                        yield tx
                        if tx.notices and not self.is_sqlite:
                            await notify.send(conn, tx.notices)
                        if tx.events:
                            await conn.execute(
                                update(tables.audit_head)
                                .where(tables.audit_head.c.id == 1)
                                .values(seq=tx.seq, head=tx.head)
                            )
                        committing = time.perf_counter()
                    if self.on_commit is not None:
                        self.on_commit(tx.events, time.perf_counter() - committing)
            except (OperationalError, OSError) as exc:
                raise Unavailable("the database or audit log cannot be written") from exc
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    raise Unavailable("the database connection was lost") from exc
                raise
        finally:
            if self._write_lock is not None:
                self._write_lock.release()

    async def batch(self, work: Callable[[Batch], T]) -> tuple[T, Batch]:
        """Run the synchronous ``work`` on one locked write transaction and commit it.

        On SQLite the batch runs on the event loop itself when the file lock is free at
        once: a thread hop, and the writer thread contending for the GIL, cost more than
        the transaction. When another process holds the lock it runs in the writer
        thread, which may wait for it. ``work`` must not touch the loop. Any database
        failure, whatever its kind, is ``Unavailable`` and nothing is kept.
        """
        started = time.perf_counter()
        try:
            if self._write_lock is not None:
                async with self._write_lock:
                    loop = asyncio.get_running_loop()
                    try:
                        done = self._sqlite_batch(work, wait=False)
                    except _Busy:
                        done = await loop.run_in_executor(
                            self._writer_pool(), self._sqlite_batch, work, True
                        )
                    self._batches += 1
                    if self._checkpoint_timer is None:
                        self._checkpoint_timer = loop.call_later(
                            WAL_CHECKPOINT_INTERVAL, self._start_wal_checkpoint, loop
                        )
            else:
                async with self.engine.connect() as raw:
                    conn = await raw.execution_options(keyfob_write=True)
                    async with conn.begin():
                        done = await conn.run_sync(_locked_batch, work)
        except (DBAPIError, sqlite3.Error, OSError, LostRace) as exc:
            raise Unavailable("the database or audit log cannot be written") from exc
        if self.on_commit is not None:
            self.on_commit(done[1].events, time.perf_counter() - started)
        return done

    def _writer_pool(self) -> ThreadPoolExecutor:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="keyfob-writer")
        return self._writer

    def _writer_connection(self) -> sqlite3.Connection:
        if self._writer_conn is None:
            path = self.url.removeprefix("sqlite+aiosqlite:///")
            conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            # busy_timeout 0: a batch on the event loop must never wait for the file lock.
            # No automatic WAL checkpoints: one would run inside a COMMIT on the loop.
            for pragma in (
                "journal_mode=WAL",
                f"synchronous={self._synchronous}",
                "busy_timeout=0",
                "wal_autocheckpoint=0",
                "foreign_keys=ON",
            ):
                conn.execute(f"PRAGMA {pragma}")
            self._writer_conn = conn
        return self._writer_conn

    def _sqlite_batch(self, work: Callable[[Batch], T], wait: bool) -> tuple[T, Batch]:
        """One ``BEGIN IMMEDIATE`` … ``COMMIT`` on the plain writer connection; without
        ``wait`` it raises ``_Busy`` at once if another connection holds the lock."""
        conn = self._writer_connection()
        try:
            if wait:
                conn.execute(f"PRAGMA busy_timeout={int(LOCK_WAIT * 1000)}")
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if busy and not wait:
                    raise _Busy() from None
                raise
            finally:
                if wait:
                    conn.execute("PRAGMA busy_timeout=0")
            try:
                cache = self._rows
                cache.check(conn.execute("PRAGMA data_version").fetchone()[0])
                if cache.head is None:
                    row = conn.execute(SQL_LOCK_HEAD).fetchone()
                    if row is None:
                        raise Unavailable("the audit chain head is missing; nothing is written")
                    cache.head = (int(row["seq"]), str(row["head"]))
                batch = SqliteBatch(conn, *cache.head, cache)
                result = work(batch)
                batch.finish()
                conn.execute("COMMIT")
                batch.committed()
            except BaseException:
                self._rows.clear()
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the connection is dropped below either way
                raise
        except _Busy:
            raise
        except BaseException:
            # Start the next batch on a fresh connection, whatever state this one is in.
            self._close_writer()
            raise
        return result, batch

    def _start_wal_checkpoint(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer fired: checkpoint in the background (one at a time)."""
        self._checkpoint_timer = None
        if self._checkpointing is not None and not self._checkpointing.done():
            return
        if self._checkpointer is None:
            self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="keyfob-checkpoint")
        self._checkpointing = loop.create_task(self._checkpoint_wal(self._checkpointer))
        self._checkpointing.add_done_callback(_checkpoint_done)

    async def _checkpoint_wal(self, pool: ThreadPoolExecutor) -> None:
        """Copy the WAL into the database, then let the next batch start the WAL over.

        SQLite restarts the WAL from its beginning only when a write transaction starts
        with every frame already copied. Under steady load batches keep committing while
        the copy runs, so that never happened: the WAL grew by every commit (tens of MB a
        second at one client) and each commit extended the file, which costs more than
        overwriting it. So the frames committed during the copy are copied once more with
        the write lock held (a short copy: a fraction of a second's commits), and the next
        batch finds the WAL done and writes from its start again.
        """
        loop = asyncio.get_running_loop()
        batches = self._batches
        frames, copied = await loop.run_in_executor(pool, self._wal_checkpoint)
        if self._write_lock is None or (self._batches == batches and copied >= frames):
            return
        async with self._write_lock:
            await loop.run_in_executor(pool, self._wal_checkpoint)

    def _wal_checkpoint(self) -> tuple[int, int]:
        """Move committed WAL pages into the database without blocking readers or writers
        (PASSIVE: it copies what it can and never waits for a lock): (frames, copied)."""
        if self._checkpoint_conn is None:
            path = self.url.removeprefix("sqlite+aiosqlite:///")
            self._checkpoint_conn = sqlite3.connect(
                path, timeout=0, isolation_level=None, check_same_thread=False
            )
        row = self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return (int(row[1]), int(row[2])) if row is not None else (0, 0)

    def _close_checkpointer(self) -> None:
        if self._checkpoint_conn is not None:
            try:
                self._checkpoint_conn.close()
            finally:
                self._checkpoint_conn = None

    def _close_writer(self) -> None:
        self._rows.clear()
        if self._writer_conn is not None:
            try:
                self._writer_conn.close()
            finally:
                self._writer_conn = None

    async def close(self) -> None:
        if self._checkpoint_timer is not None:
            self._checkpoint_timer.cancel()
            self._checkpoint_timer = None
        if self._checkpointer is not None:
            if self._checkpointing is not None:
                await asyncio.wait([self._checkpointing])
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._checkpointer, self._close_checkpointer)
            self._checkpointer.shutdown(wait=True)
            self._checkpointer = None
        if self._writer is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._close_writer)
            self._writer.shutdown(wait=True)
            self._writer = None
        await self.engine.dispose()


def _checkpoint_done(done: asyncio.Future[None]) -> None:
    # Commits are durable in the WAL already; a failed copy is retried by the next timer.
    if not done.cancelled() and done.exception() is not None:
        log.warning("WAL checkpoint failed: %s", type(done.exception()).__name__)
