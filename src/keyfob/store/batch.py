"""SQL of a grouped commit: many lease uses and audit records in one locked transaction.

The proxy's hot path cannot afford one transaction per request, so the vault collects
what is waiting and hands it to ``Database.batch``, which runs a *synchronous* function
on one locked write transaction and commits. This module is that function's view of the
database: a constant number of statements per batch, however many requests it carries.

Two implementations of the same ``Batch``: ``SqliteBatch`` speaks to a plain ``sqlite3``
connection in the writer thread (SQLAlchemy's per-statement cost was most of a request's
budget), ``CoreBatch`` to a SQLAlchemy connection (PostgreSQL, through ``run_sync``).
The statements are the same; the SQLite ones are written out from the table definitions.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from keyfob.secret import SECRET, Masked
from keyfob.store.audit_writer import SQL_INSERT, AuditChain, Row, as_mappings
from keyfob.store.audit_writer import Draft as Draft  # where the vault has always found it
from keyfob.store.records import (
    AgentRow,
    GrantRow,
    LeaseRow,
    encode,
    from_mapping,
)
from keyfob.store.tables import (
    agents,
    audit_events,
    audit_head,
    budget_usage,
    grants,
    leases,
    secret_sets,
    secret_versions,
)


@dataclass(frozen=True, slots=True)
class SetState(Masked):
    """What a use needs of a set: its profile text and current version's ciphertext and
    key names (JSON text, parsed only by export)."""

    id: str
    profile: str | None
    deleted: bool
    version: int
    kek_term: int
    wrapped_dek: bytes = field(metadata=SECRET)
    ciphertext: bytes = field(metadata=SECRET)
    keys_json: str


R = TypeVar("R")


def _with(row: R, **changes: Any) -> R:
    """A copy of a frozen row with ``changes``: what ``dataclasses.replace`` makes, without
    re-running ``__init__`` field by field (the counters move on every proxied request)."""
    fields_now = row.__dict__
    assert changes.keys() <= fields_now.keys()
    copy = object.__new__(type(row))
    copy.__dict__.update(fields_now, **changes)
    return copy


# A lease row's columns but its id (``asdict``, which deep-copies, was slow per mint).
_LEASE_COLUMNS = tuple(f.name for f in fields(LeaseRow) if f.name != "id")


@dataclass(frozen=True, slots=True)
class NewLeases:
    """Leases minted together: ``row`` with each id in turn and that lease's token digest
    (a batch mint's leases differ in nothing else; a single mint is a batch of one)."""

    row: LeaseRow  # the first lease; its id is ``ids[0]``
    ids: Sequence[str]
    digests: Sequence[str]

    def rows(self) -> list[tuple[LeaseRow, str]]:
        """Each lease's row with its digest."""
        first = self.row
        return [
            (first if i == first.id else _with(first, id=i), d)
            for i, d in zip(self.ids, self.digests, strict=True)
        ]

    def columns(self) -> dict[str, Any]:
        """The column values the leases share, without ``id`` and the NULL ones (an
        insert of fewer columns is cheaper per row; each missing column is NULL)."""
        row = self.row
        values = encode({name: getattr(row, name) for name in _LEASE_COLUMNS})
        return {k: v for k, v in values.items() if v is not None}


class LostRace(RuntimeError):
    """A counter moved under the batch's lock; the whole batch rolls back."""


LeaseChange = tuple[str, int, int]  # lease id, uses read, uses now
BudgetKey = tuple[str, str, str]  # owner, unit, period
GrantChange = tuple[str, int, int, int, int]  # grant id, uses read, uses now, window, count


class Batch(AuditChain, ABC):
    """One locked write transaction: reads, counter updates and chained audit records
    (``append``, the one audit writer's, chains them; ``finish`` inserts them)."""

    @abstractmethod
    def leases(self, digests: Collection[str]) -> dict[str, LeaseRow]:
        """Leases by token digest."""

    @abstractmethod
    def grants(self, ids: Collection[str]) -> dict[str, GrantRow]: ...

    @abstractmethod
    def agents(self, ids: Collection[str]) -> dict[str, AgentRow]:
        """Agents by id (a deleted agent is missing)."""

    @abstractmethod
    def sets(self, ids: Collection[str]) -> dict[str, SetState]:
        """Sets by id with their current version's sealed entries (nothing is opened)."""

    @abstractmethod
    def lease_uses(self, changes: Sequence[LeaseChange]) -> None:
        """Move lease counters; any row that moved meanwhile aborts the batch."""

    @abstractmethod
    def grant_uses(self, changes: Sequence[GrantChange]) -> None: ...

    @abstractmethod
    def exported(self, set_ids: Collection[str], when: str) -> None:
        """Mark the sets as exported at ``when``."""

    @abstractmethod
    def budget_used(self, keys: Collection[BudgetKey]) -> dict[BudgetKey, int]:
        """What each budget counter holds (a counter never written holds 0)."""

    @abstractmethod
    def budget_add(self, changes: Sequence[tuple[BudgetKey, int]]) -> None:
        """Add to budget counters (reservations, settlements), creating them as needed."""

    @abstractmethod
    def agent_by_digest(self, digest: str) -> AgentRow | None:
        """The agent whose token has ``digest``, as it is now (a mint re-checks it)."""

    @abstractmethod
    def live_set(self, path: str) -> str | None:
        """The id of the set at ``provider/environment/name``, unless missing or deleted."""

    @abstractmethod
    def grant_for(self, agent_id: str, set_id: str) -> GrantRow | None:
        """The agent's unrevoked grant on the set (what a mint issues under)."""

    @abstractmethod
    def insert_leases(self, groups: Sequence[NewLeases]) -> None:
        """Insert new leases with their token digests (one statement per group)."""

    @abstractmethod
    def _insert(self, rows: list[Row]) -> None: ...

    @abstractmethod
    def _move_head(self) -> None: ...

    def finish(self) -> None:
        """Insert the chained records and move the head (once, just before commit)."""
        rows = self.take_rows()
        if rows:
            self._insert(rows)
        if self.events:
            self._move_head()


def _set_state(r: Any) -> SetState:
    return SetState(
        r["id"],
        r["profile"],
        r["deleted_at"] is not None,
        r["version"],
        r["kek_term"],
        bytes(r["wrapped_dek"]),
        bytes(r["ciphertext"]),
        r["keys"],
    )


# -- SQLAlchemy Core (PostgreSQL) -----------------------------------------------------

_LEASE_USES = (
    update(leases)
    .where(
        leases.c.id == bindparam("b_id"),
        leases.c.uses == bindparam("b_old"),
        leases.c.revoked_at.is_(None),
    )
    .values(uses=bindparam("b_new"))
)
_GRANT_USES = (
    update(grants)
    .where(
        grants.c.id == bindparam("b_id"),
        grants.c.uses == bindparam("b_old"),
        grants.c.revoked_at.is_(None),
    )
    .values(
        uses=bindparam("b_new"),
        rate_window=bindparam("b_window"),
        rate_count=bindparam("b_count"),
    )
)
_SETS = select(
    secret_sets.c.id,
    secret_sets.c.profile,
    secret_sets.c.deleted_at,
    secret_sets.c.version,
    secret_versions.c.kek_term,
    secret_versions.c.wrapped_dek,
    secret_versions.c.ciphertext,
    secret_versions.c["keys"],
).join(
    secret_versions,
    (secret_versions.c.set_id == secret_sets.c.id)
    & (secret_versions.c.version == secret_sets.c.version),
)


# Never the token digest: a batch has no use for it.
_AGENT_COLUMNS = (
    "id",
    "name",
    "disabled_at",
    "created_at",
    "created_by",
    "updated_at",
    "allowed_networks",
    "client_cert_sha256",
)
_AGENTS = select(*(agents.c[name] for name in _AGENT_COLUMNS))


class CoreBatch(Batch):
    def __init__(self, conn: Connection, seq: int, head: str) -> None:
        super().__init__(seq, head)
        self.conn = conn

    def leases(self, digests: Collection[str]) -> dict[str, LeaseRow]:
        if not digests:
            return {}
        rows = self.conn.execute(select(leases).where(leases.c.digest.in_(list(digests))))
        return {r.digest: from_mapping(LeaseRow, r._mapping) for r in rows}

    def grants(self, ids: Collection[str]) -> dict[str, GrantRow]:
        if not ids:
            return {}
        rows = self.conn.execute(select(grants).where(grants.c.id.in_(list(ids))))
        return {r.id: from_mapping(GrantRow, r._mapping) for r in rows}

    def sets(self, ids: Collection[str]) -> dict[str, SetState]:
        if not ids:
            return {}
        rows = self.conn.execute(_SETS.where(secret_sets.c.id.in_(list(ids))))
        return {r.id: _set_state(r._mapping) for r in rows}

    def agents(self, ids: Collection[str]) -> dict[str, AgentRow]:
        if not ids:
            return {}
        rows = self.conn.execute(_AGENTS.where(agents.c.id.in_(list(ids))))
        return {r.id: from_mapping(AgentRow, r._mapping) for r in rows}

    def exported(self, set_ids: Collection[str], when: str) -> None:
        if set_ids:
            self.conn.execute(
                update(secret_sets)
                .where(secret_sets.c.id.in_(list(set_ids)))
                .values(exported_at=when)
            )

    def budget_used(self, keys: Collection[BudgetKey]) -> dict[BudgetKey, int]:
        out: dict[BudgetKey, int] = {}
        for owner, unit, period in keys:
            row = self.conn.execute(
                select(budget_usage.c.used).where(
                    budget_usage.c.owner == owner,
                    budget_usage.c.unit == unit,
                    budget_usage.c.period == period,
                )
            ).first()
            out[(owner, unit, period)] = int(row.used) if row is not None else 0
        return out

    def budget_add(self, changes: Sequence[tuple[BudgetKey, int]]) -> None:
        for (owner, unit, period), delta in changes:
            done = self.conn.execute(
                update(budget_usage)
                .where(
                    budget_usage.c.owner == owner,
                    budget_usage.c.unit == unit,
                    budget_usage.c.period == period,
                )
                .values(used=budget_usage.c.used + delta)
            )
            if done.rowcount == 0:
                self.conn.execute(
                    budget_usage.insert().values(owner=owner, unit=unit, period=period, used=delta)
                )

    def agent_by_digest(self, digest: str) -> AgentRow | None:
        row = self.conn.execute(_AGENTS.where(agents.c.digest == digest)).first()
        return from_mapping(AgentRow, row._mapping) if row is not None else None

    def live_set(self, path: str) -> str | None:
        provider, environment, name = path.split("/")
        found = self.conn.execute(
            select(secret_sets.c.id).where(
                secret_sets.c.provider == provider,
                secret_sets.c.environment == environment,
                secret_sets.c.name == name,
                secret_sets.c.deleted_at.is_(None),
            )
        ).first()
        return str(found.id) if found is not None else None

    def grant_for(self, agent_id: str, set_id: str) -> GrantRow | None:
        row = self.conn.execute(
            select(grants).where(
                grants.c.agent_id == agent_id,
                grants.c.set_id == set_id,
                grants.c.revoked_at.is_(None),
            )
        ).first()
        return from_mapping(GrantRow, row._mapping) if row is not None else None

    def insert_leases(self, groups: Sequence[NewLeases]) -> None:
        for group in groups:
            shared = group.columns()
            self.conn.execute(
                leases.insert(),
                [
                    {**shared, "id": i, "digest": d}
                    for i, d in zip(group.ids, group.digests, strict=True)
                ],
            )

    def lease_uses(self, changes: Sequence[LeaseChange]) -> None:
        self._each(_LEASE_USES, [{"b_id": i, "b_old": o, "b_new": n} for i, o, n in changes])

    def grant_uses(self, changes: Sequence[GrantChange]) -> None:
        params = [
            {"b_id": i, "b_old": o, "b_new": n, "b_window": w, "b_count": c}
            for i, o, n, w, c in changes
        ]
        self._each(_GRANT_USES, params)

    def _each(self, statement: Any, params: list[dict[str, Any]]) -> None:
        for one in params:
            if self.conn.execute(statement, one).rowcount != 1:
                raise LostRace()

    def _insert(self, rows: list[Row]) -> None:
        self.conn.execute(audit_events.insert(), as_mappings(rows))

    def _move_head(self) -> None:
        self.conn.execute(
            update(audit_head).where(audit_head.c.id == 1).values(seq=self.seq, head=self.head)
        )


# -- sqlite3 (the default store) ------------------------------------------------------


def _columns(table: Any) -> str:
    return ", ".join(c.name for c in table.c)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


_SQL_LEASES = f"SELECT {_columns(leases)} FROM leases WHERE digest IN "  # noqa: S608
_SQL_GRANTS = f"SELECT {_columns(grants)} FROM grants WHERE id IN "  # noqa: S608
_SQL_AGENTS = f"SELECT {', '.join(_AGENT_COLUMNS)} FROM agents WHERE id IN "  # noqa: S608
_SQL_EXPORTED = "UPDATE secret_sets SET exported_at = ? WHERE id = ?"
_SQL_SETS = (
    "SELECT s.id, s.profile, s.deleted_at, s.version, v.kek_term, v.wrapped_dek, v.ciphertext, "
    "v.keys "
    "FROM secret_sets s JOIN secret_versions v ON v.set_id = s.id AND v.version = s.version "
    "WHERE s.id IN "
)
_SQL_LEASE_USES = "UPDATE leases SET uses = ? WHERE id = ? AND uses = ? AND revoked_at IS NULL"
_SQL_GRANT_USES = (
    "UPDATE grants SET uses = ?, rate_window = ?, rate_count = ? "
    "WHERE id = ? AND uses = ? AND revoked_at IS NULL"
)
_SQL_AGENT_BY_DIGEST = f"SELECT {', '.join(_AGENT_COLUMNS)} FROM agents WHERE digest = ?"  # noqa: S608
_SQL_LIVE_SET = (
    "SELECT id FROM secret_sets "
    "WHERE provider = ? AND environment = ? AND name = ? AND deleted_at IS NULL"
)
_SQL_GRANT_FOR = (
    f"SELECT {_columns(grants)} FROM grants "  # noqa: S608
    "WHERE agent_id = ? AND set_id = ? AND revoked_at IS NULL"
)


@lru_cache(maxsize=64)
def _insert_leases_sql(names: tuple[str, ...]) -> str:
    """INSERT of a lease's id, digest and ``names`` (the non-NULL columns its batch shares)."""
    return (
        f"INSERT INTO leases (id, digest, {', '.join(names)}) "  # noqa: S608 - column names
        f"VALUES ({_marks(len(names) + 2)})"
    )


_SQL_BUDGET_USED = "SELECT used FROM budget_usage WHERE owner = ? AND unit = ? AND period = ?"
_SQL_BUDGET_ADD = (
    "UPDATE budget_usage SET used = used + ? WHERE owner = ? AND unit = ? AND period = ?"
)
_SQL_BUDGET_NEW = "INSERT INTO budget_usage (owner, unit, period, used) VALUES (?, ?, ?, ?)"
_SQL_HEAD = "UPDATE audit_head SET seq = ?, head = ? WHERE id = 1"
SQL_LOCK_HEAD = "SELECT seq, head FROM audit_head WHERE id = 1"


class RowCache:
    """Rows the SQLite writer connection read or wrote, valid while no other connection
    has committed: ``PRAGMA data_version``, read under the write lock, tells. Saves the
    reads of a batch, which are most of its statements, when one agent keeps calling."""

    LIMIT = 4096

    def __init__(self) -> None:
        self.version: int | None = None
        self.head: tuple[int, str] | None = None
        self.leases: dict[str, LeaseRow] = {}
        self.digests: dict[str, str] = {}  # lease id -> digest
        self.grants: dict[str, GrantRow] = {}
        self.agents: dict[str, AgentRow] = {}
        self.sets: dict[str, SetState] = {}
        # What a mint looks up: agent by token digest, set id by path, grant id by
        # (agent, set). Dropped with the rest when another connection commits.
        self.agent_digests: dict[str, AgentRow | None] = {}
        self.set_paths: dict[str, str | None] = {}
        self.grant_ids: dict[tuple[str, str], str | None] = {}

    def check(self, version: int) -> None:
        """Forget everything if another connection committed since the last batch."""
        # Unknown agent tokens are remembered too (as None): bounded like the rest.
        if (
            version != self.version
            or len(self.leases) > self.LIMIT
            or len(self.agent_digests) > self.LIMIT
            or len(self.grant_ids) > self.LIMIT
        ):
            self.clear()
            self.version = version

    def clear(self) -> None:
        self.version = None
        self.head = None
        self.leases.clear()
        self.digests.clear()
        self.grants.clear()
        self.agents.clear()
        self.sets.clear()
        self.agent_digests.clear()
        self.set_paths.clear()
        self.grant_ids.clear()


class SqliteBatch(Batch):
    def __init__(self, conn: sqlite3.Connection, seq: int, head: str, cache: RowCache) -> None:
        super().__init__(seq, head)
        self.conn = conn
        self.cache = cache
        self._lease_changes: list[LeaseChange] = []
        self._grant_changes: list[GrantChange] = []
        self._new_leases: list[NewLeases] = []

    def _select(self, sql: str, keys: Collection[str]) -> list[sqlite3.Row]:
        keys = list(keys)
        return self.conn.execute(f"{sql}({_marks(len(keys))})", keys).fetchall()

    def leases(self, digests: Collection[str]) -> dict[str, LeaseRow]:
        known = self.cache.leases
        missing = [d for d in digests if d not in known]
        if missing:
            for r in self._select(_SQL_LEASES, missing):
                known[r["digest"]] = from_mapping(LeaseRow, r)
                self.cache.digests[r["id"]] = r["digest"]
        return {d: known[d] for d in digests if d in known}

    def grants(self, ids: Collection[str]) -> dict[str, GrantRow]:
        known = self.cache.grants
        missing = [i for i in ids if i not in known]
        if missing:
            for r in self._select(_SQL_GRANTS, missing):
                known[r["id"]] = from_mapping(GrantRow, r)
        return {i: known[i] for i in ids if i in known}

    def sets(self, ids: Collection[str]) -> dict[str, SetState]:
        known = self.cache.sets
        missing = [i for i in ids if i not in known]
        if missing:
            for r in self._select(_SQL_SETS, missing):
                known[r["id"]] = _set_state(r)
        return {i: known[i] for i in ids if i in known}

    def agents(self, ids: Collection[str]) -> dict[str, AgentRow]:
        known = self.cache.agents
        missing = [i for i in ids if i not in known]
        if missing:
            for r in self._select(_SQL_AGENTS, missing):
                known[r["id"]] = from_mapping(AgentRow, r)
        return {i: known[i] for i in ids if i in known}

    def agent_by_digest(self, digest: str) -> AgentRow | None:
        known = self.cache.agent_digests
        if digest not in known:
            r = self.conn.execute(_SQL_AGENT_BY_DIGEST, (digest,)).fetchone()
            known[digest] = from_mapping(AgentRow, r) if r is not None else None
        return known[digest]

    def live_set(self, path: str) -> str | None:
        known = self.cache.set_paths
        if path not in known:
            r = self.conn.execute(_SQL_LIVE_SET, tuple(path.split("/"))).fetchone()
            known[path] = str(r["id"]) if r is not None else None
        return known[path]

    def grant_for(self, agent_id: str, set_id: str) -> GrantRow | None:
        key = (agent_id, set_id)
        known = self.cache.grant_ids
        if key in known:
            grant_id = known[key]
            if grant_id is None:
                return None
            if grant_id in self.cache.grants:
                return self.cache.grants[grant_id]
        r = self.conn.execute(_SQL_GRANT_FOR, key).fetchone()
        if r is None:
            known[key] = None
            return None
        grant = self.cache.grants[r["id"]] = from_mapping(GrantRow, r)
        known[key] = grant.id
        return grant

    def insert_leases(self, groups: Sequence[NewLeases]) -> None:
        for group in groups:
            shared = group.columns()
            values = tuple(shared.values())
            sql = _insert_leases_sql(tuple(shared))
            self.conn.executemany(
                sql, [(i, d, *values) for i, d in zip(group.ids, group.digests, strict=True)]
            )
        self._new_leases.extend(groups)

    def exported(self, set_ids: Collection[str], when: str) -> None:
        if set_ids:  # an export is rare; a proxied batch has none
            self.conn.executemany(_SQL_EXPORTED, [(when, i) for i in set_ids])

    def budget_used(self, keys: Collection[BudgetKey]) -> dict[BudgetKey, int]:
        out: dict[BudgetKey, int] = {}
        for key in keys:
            row = self.conn.execute(_SQL_BUDGET_USED, key).fetchone()
            out[key] = int(row[0]) if row is not None else 0
        return out

    def budget_add(self, changes: Sequence[tuple[BudgetKey, int]]) -> None:
        for (owner, unit, period), delta in changes:
            if self.conn.execute(_SQL_BUDGET_ADD, (delta, owner, unit, period)).rowcount == 0:
                self.conn.execute(_SQL_BUDGET_NEW, (owner, unit, period, delta))

    def lease_uses(self, changes: Sequence[LeaseChange]) -> None:
        self._each(_SQL_LEASE_USES, [(n, i, o) for i, o, n in changes])
        self._lease_changes.extend(changes)

    def grant_uses(self, changes: Sequence[GrantChange]) -> None:
        self._each(_SQL_GRANT_USES, [(n, w, c, i, o) for i, o, n, w, c in changes])
        self._grant_changes.extend(changes)

    def committed(self) -> None:
        """After COMMIT: the cache holds what the database now holds."""
        cache = self.cache
        cache.head = (self.seq, self.head)
        # A lease just minted is the row its first use reads (a fresh single-use lease
        # per call): kept, so that use does not read it back.
        for group in self._new_leases:
            for row, digest in group.rows():
                cache.leases[digest] = row
                cache.digests[row.id] = digest
        for lease_id, _, uses in self._lease_changes:
            digest = cache.digests[lease_id]
            cache.leases[digest] = _with(cache.leases[digest], uses=uses)
        for grant_id, _, uses, window, count in self._grant_changes:
            cache.grants[grant_id] = _with(
                cache.grants[grant_id], uses=uses, rate_window=window, rate_count=count
            )

    def _each(self, sql: str, params: list[tuple[Any, ...]]) -> None:
        if params and self.conn.executemany(sql, params).rowcount != len(params):
            raise LostRace()

    def _insert(self, rows: list[Row]) -> None:
        self.conn.executemany(SQL_INSERT, rows)

    def _move_head(self) -> None:
        self.conn.execute(_SQL_HEAD, (self.seq, self.head))
