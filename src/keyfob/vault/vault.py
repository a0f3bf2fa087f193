"""The vault: opens the store and keyring, and holds the services the edges use.

``Vault.open`` never creates anything; ``Vault.initialise`` creates the keyring and the
first operator token once, and refuses to touch a database that already has a keyring.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from keyfob.audit import CheckpointFile, Event
from keyfob.clock import Clock, SystemClock
from keyfob.crypto import Keyring, MasterKeyProvider, WrappedKek
from keyfob.errors import ConfigurationError, Conflict, Unavailable
from keyfob.metrics import Metrics
from keyfob.secret import Masked, Secret
from keyfob.settings import Settings
from keyfob.store import Database
from keyfob.store import keyring as keyring_sql
from keyfob.vault.agents import Agents
from keyfob.vault.approvals import Approvals
from keyfob.vault.auditing import Auditing
from keyfob.vault.authority import Authority
from keyfob.vault.caches import Caches
from keyfob.vault.connect_flows import ConnectFlows
from keyfob.vault.consume import Consumer
from keyfob.vault.context import SYSTEM, Context
from keyfob.vault.core import Core
from keyfob.vault.forwarding import Forwarding
from keyfob.vault.grants import Grants
from keyfob.vault.inventory import Inventory
from keyfob.vault.keys import Keys
from keyfob.vault.lease_use import LeaseUsage
from keyfob.vault.leases import Leases
from keyfob.vault.master_keys import missing_key_hint, open_master_key
from keyfob.vault.operators import Operators
from keyfob.vault.passwords import Passwords, password_hasher
from keyfob.vault.proxying import Proxying
from keyfob.vault.refresh import Refresher
from keyfob.vault.retention import Retention
from keyfob.vault.secret_sets import SecretSets
from keyfob.vault.shipping import Shipping
from keyfob.vault.usage import Pricing, Usage, fallback_price
from keyfob.vault.users import Users

log = logging.getLogger("keyfob.ready")

# ``ready`` asks the master key provider at most this often (seconds) and answers with
# the last result in between: load balancers probe every few seconds, and each check of
# an HSM is a round trip through the token. A failure (or a recovery) shows within this.
MASTER_CHECK_INTERVAL = 5.0


@dataclass(frozen=True)
class Initialised(Masked):
    operator_token: Secret[str]
    token_id: str


def _private_file(path: Path) -> None:
    """Create ``path`` 0600 (or tighten it) before SQLite opens it: SQLite gives its -wal
    and -shm files the database file's mode, so they stay private too."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Vault:
    def __init__(self, core: Core, settings: Settings) -> None:
        self.core = core
        self.settings = settings
        self.sets = SecretSets(core)
        self.keys = Keys(core)
        self.operators = Operators(core)
        self.audit = Auditing(core)
        self.inventory = Inventory(core)
        self.agents = Agents(core)
        self.grants = Grants(core, self.agents)
        self.leases = Leases(core, settings.max_pending_requests)
        self.approvals = Approvals(core, self.leases)
        # Every use of a lease (proxy, export) and every mint goes through this one
        # grouped commit.
        self.consumer = Consumer(core, self.leases)
        self.lease_use = LeaseUsage(core, self.leases, self.consumer)
        self.users = Users(
            core,
            Passwords(password_hasher(settings)),
        )
        self.proxy = Proxying(core, self.consumer)
        self.authority = Authority(core)
        self.forwarding = Forwarding(core, self.leases)
        self.pricing = Pricing(core, self.consumer, fallback_price(settings.unknown_model_price))
        self.usage = Usage(core)
        # Access tokens of OAuth and service-account sets (the proxy asks per request).
        self.refresh = Refresher(core, self.sets)
        # What this node keeps in memory that other nodes can change (see caches.py).
        self.caches = Caches(core, self.pricing, self.authority, self.refresh)
        # The dashboard's OAuth connect flows in progress (in the database: any node).
        self.connect_flows = ConnectFlows(core)
        self.metrics = Metrics()
        self.metrics.caches(lambda: self.caches.dropped, lambda: self.caches.listening)
        self.metrics.queue_depth(self.consumer.commit.depth)
        # Deletes leases long expired; started by the serving process, as shipping is.
        self.retention = Retention(self.leases, settings.lease_retention_days)
        # Audit shipping: its tasks are started by the serving process (``start``).
        self.shipping = Shipping(core, settings, self.metrics)
        core.db.on_commit = self._committed if self.shipping.configured else self.metrics.committed
        # When ``ready`` last asked the master key provider, and its failure if it failed.
        self._master_checked: tuple[datetime, str | None] | None = None
        # Why the last ``ready`` failed (None: it did not), so the log says it once.
        self._unready: str | None = None

    def _committed(self, records: Sequence[Event], seconds: float) -> None:
        self.metrics.committed(records, seconds)
        if records:
            self.shipping.wake()

    @property
    def db(self) -> Database:
        return self.core.db

    @staticmethod
    async def _load(
        settings: Settings, clock: Clock | None, migrate: bool = True
    ) -> tuple[Database, bytes | None]:
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            _private_file(settings.data_dir / "keyfob.db")
        db = Database(
            settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous
        )
        try:
            if migrate:
                await db.migrate()
            elif not await db.at_head() and await db.newer_schema() is None:
                raise ConfigurationError(
                    f"the database schema is at revision {await db.revision() or 'none'}, "
                    "older than this keyfob's: use the keyfob release that serves it, or "
                    "run `keyfob db upgrade` first"
                )
            async with db.read() as conn:
                system = await keyring_sql.get_system(conn)
        except BaseException:
            await db.close()
            raise
        return db, system

    @classmethod
    async def open(
        cls, settings: Settings, *, clock: Clock | None = None, migrate: bool = True
    ) -> Vault:
        """Open an initialised vault; a missing or wrong master key fails clearly.
        ``migrate=False``: leave the schema as it is (refuse one older than this code)."""
        db, system = await cls._load(settings, clock, migrate)
        try:
            if system is None:
                raise ConfigurationError(
                    f"the database {db.display_url} has no keyring yet: run `keyfob init`"
                )
            key = open_master_key(settings, create=False)
            if key is None:
                raise ConfigurationError(
                    "this database holds a keyring but no master key was found: "
                    + missing_key_hint(settings)
                )
            try:
                async with db.read() as conn:
                    terms = await keyring_sql.list_terms(conn)
                ring = Keyring.load(
                    key, [WrappedKek(t.term, t.wrapped) for t in terms if t.wrapped], system
                )
            except BaseException:
                key.close()
                raise
        except BaseException:
            await db.close()
            raise
        vault = cls._assemble(db, ring, settings, clock)
        await vault.pricing.load()
        return vault

    @classmethod
    def _assemble(
        cls, db: Database, ring: Keyring, settings: Settings, clock: Clock | None
    ) -> Vault:
        checkpoints = CheckpointFile(settings.resolved_checkpoint_file)
        return cls(Core(db, ring, clock or SystemClock(), checkpoints), settings)

    @classmethod
    async def initialise(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        token_name: str = "initial",  # noqa: S107
    ) -> tuple[Vault, Initialised]:
        """Create the keyring and first operator token; Conflict if already initialised."""
        db, system = await cls._load(settings, clock)
        key: MasterKeyProvider | None = None
        try:
            if system is not None:
                raise Conflict(f"the vault at {db.display_url} is already initialised")
            key = open_master_key(settings, create=True)
            assert key is not None
            ring, kek, wrapped_system = Keyring.create(key)
            vault = cls._assemble(db, ring, settings, clock)
            ctx = Context(actor=SYSTEM.actor)
            async with vault.core.write() as tx:
                if await keyring_sql.get_system(tx.conn) is not None:
                    raise Conflict(f"the vault at {db.display_url} is already initialised")
                await keyring_sql.put_system(tx.conn, wrapped_system)
                await keyring_sql.add_term(tx.conn, kek.term, kek.wrapped, vault.core.now())
                await vault.core.record(
                    tx,
                    ctx,
                    "vault.init",
                    "vault",
                    details={
                        "kek_term": kek.term,
                        "database": db.display_url.split("://")[0],
                        "master_key_provider": key.describe()["provider"],
                    },
                )
                row, token = await vault.operators.insert_token(tx, ctx, token_name)
            # keyfob's CA is made with the vault, so its certificate can be handed out
            # before the forward proxy first runs.
            await vault.authority.create(ctx)
        except BaseException:
            if key is not None:
                key.close()
            await db.close()
            raise
        return vault, Initialised(token, row.id)

    async def ready(self) -> None:
        """Raise ``Unavailable`` unless the database and the checkpoint dir take writes and
        the master key provider can wrap (an HSM that went away says so here).

        ``/readyz`` tells only an operator token why; the log says it to whoever runs
        keyfob, once per change (not once per load balancer probe), and says when it is
        ready again."""
        try:
            await self._ready()
        except Unavailable as exc:
            if exc.detail != self._unready:
                log.warning("not ready: %s", exc.detail)
            self._unready = exc.detail
            raise
        if self._unready is not None:
            log.warning("ready again")
            self._unready = None

    async def _ready(self) -> None:
        await self._check_master()
        async with self.db.write():
            pass
        directory: Path = self.core.checkpoints.path.parent
        probe = directory / f".ready-{id(self)}"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise Unavailable("the audit checkpoint directory is not writable") from exc

    async def _check_master(self) -> None:
        now = self.core.clock.now()
        last = self._master_checked
        # A clock set back counts as the interval being over.
        if last is None or not 0 <= (now - last[0]).total_seconds() < MASTER_CHECK_INTERVAL:
            failure = None
            try:
                await asyncio.to_thread(self.core.ring.master.check)
            except Unavailable as exc:
                failure = exc.detail
            last = self._master_checked = (now, failure)
        if last[1] is not None:
            raise Unavailable(last[1])

    async def close(self) -> None:
        try:
            await self.retention.close()
            await self.shipping.close()
            await self.caches.close()
            await self.proxy.settled()  # settlements in flight commit before the last batch
            await self.consumer.close()
        finally:
            self.users.passwords.close()
            self.core.ring.master.close()
            await self.db.close()
