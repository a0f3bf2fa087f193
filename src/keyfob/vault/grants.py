"""Grants: which agent may use which secret set, and under what constraints.

Defaults are least privilege: ``proxy`` only, request-scoped leases, a 15-minute lease
ceiling. Revoking a grant revokes its outstanding leases and denies its pending lease
requests in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from keyfob.clock import FORMAT_HINT, BadTime, in_range, isoformat, parse_iso
from keyfob.errors import Conflict, NotFound, ValidationFailed
from keyfob.store import Tx
from keyfob.store import access as sql
from keyfob.store import secrets as sets_sql
from keyfob.store.records import GrantRow
from keyfob.tokens import new_id
from keyfob.vault import rules, validation
from keyfob.vault.agents import Agents
from keyfob.vault.context import Context
from keyfob.vault.core import Core

ACTIONS = ("proxy", "export")
SCOPES = ("request", "workflow")
APPROVALS = ("none", "required")
DEFAULT_MAX_LEASE_TTL = 900
MAX_LEASE_TTL = 86_400
EDITABLE = (
    "keys",
    "actions",
    "not_before",
    "expires_at",
    "scopes",
    "max_lease_ttl",
    "max_lease_uses",
    "rate_limit",
    "max_uses",
    "methods",
    "paths",
    "approval",
)


def _fail(field: str, msg: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {msg}", errors=[{"loc": [field], "msg": msg}])


def grant_view(row: GrantRow, agent_name: str | None = None) -> dict[str, Any]:
    return {
        "id": row.id,
        "agent_id": row.agent_id,
        "agent": agent_name,
        "secret_set": row.set_path,
        "keys": row.keys,
        "actions": row.actions,
        "not_before": row.not_before,
        "expires_at": row.expires_at,
        "scopes": row.scopes,
        "max_lease_ttl": row.max_lease_ttl,
        "max_lease_uses": row.max_lease_uses,
        "rate_limit": row.rate_limit,
        "max_uses": row.max_uses,
        "uses": row.uses,
        "methods": row.methods,
        "paths": row.paths,
        "approval": row.approval,
        "created_at": row.created_at,
        "created_by": row.created_by,
        "updated_at": row.updated_at,
        "revoked_at": row.revoked_at,
    }


def _subset(field: str, values: Any, allowed: tuple[str, ...]) -> list[str]:
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise _fail(field, f"a non-empty list drawn from {', '.join(allowed)}")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise _fail(field, f"unknown: {', '.join(bad)}; allowed: {', '.join(allowed)}")
    return sorted(set(values), key=allowed.index)


def _positive(field: str, value: Any, ceiling: int | None = None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _fail(field, "a whole number of at least 1")
    if ceiling is not None and value > ceiling:
        raise _fail(field, f"at most {ceiling}")
    return value


def _moment(field: str, value: Any) -> str | None:
    if value is None:
        return None
    try:
        if isinstance(value, datetime):
            return isoformat(in_range(value))
        if isinstance(value, str):
            return isoformat(parse_iso(value))
    except BadTime as exc:
        raise _fail(field, str(exc)) from None
    raise _fail(field, f"must be {FORMAT_HINT}")


def clean_constraints(spec: Mapping[str, Any], set_keys: set[str]) -> dict[str, Any]:
    """Validate grant constraints; fields missing from ``spec`` are not returned."""
    out: dict[str, Any] = {}
    if "keys" in spec:
        keys = spec["keys"]
        if keys is not None:
            if not isinstance(keys, list) or not keys:
                raise _fail("keys", "a non-empty list of key names, or null for all keys")
            missing = [k for k in keys if k not in set_keys]
            if missing:
                raise _fail("keys", f"the set has no key {', '.join(map(str, missing))}")
            keys = sorted(set(keys))
        out["keys"] = keys
    if "actions" in spec:
        out["actions"] = _subset("actions", spec["actions"], ACTIONS)
    if "scopes" in spec:
        out["scopes"] = _subset("scopes", spec["scopes"], SCOPES)
    if "approval" in spec:
        if spec["approval"] not in APPROVALS:
            raise _fail("approval", "none or required")
        out["approval"] = spec["approval"]
    for field in ("not_before", "expires_at"):
        if field in spec:
            out[field] = _moment(field, spec[field])
    if "max_lease_ttl" in spec:
        out["max_lease_ttl"] = (
            _positive("max_lease_ttl", spec["max_lease_ttl"], MAX_LEASE_TTL)
            or DEFAULT_MAX_LEASE_TTL
        )
    for field in ("max_lease_uses", "rate_limit", "max_uses"):
        if field in spec:
            out[field] = _positive(field, spec[field], 10_000_000)
    if "methods" in spec and spec["methods"] is not None:
        methods = spec["methods"]
        if not isinstance(methods, list) or not methods:
            raise _fail("methods", "a non-empty list of HTTP methods, or null for any")
        upper = sorted({str(m).upper() for m in methods})
        bad = [m for m in upper if m not in rules.METHODS]
        if bad:
            raise _fail("methods", f"unknown method {', '.join(bad)}")
        out["methods"] = upper
    elif "methods" in spec:
        out["methods"] = None
    if "paths" in spec and spec["paths"] is not None:
        paths = spec["paths"]
        if not isinstance(paths, list) or not paths or len(paths) > 64:
            raise _fail("paths", "a list of 1-64 path patterns, or null for any path")
        try:
            out["paths"] = [rules.check_pattern(str(p)) for p in paths]
        except ValueError as exc:
            raise _fail("paths", str(exc)) from None
    elif "paths" in spec:
        out["paths"] = None
    return out


class Grants:
    def __init__(self, core: Core, agents: Agents) -> None:
        self._core = core
        self._agents = agents

    async def create(self, ctx: Context, spec: Mapping[str, Any]) -> dict[str, Any]:
        agent_ref = spec.get("agent")
        set_path = spec.get("secret_set")
        if not isinstance(agent_ref, str) or not agent_ref:
            raise _fail("agent", "an agent id or name")
        if not isinstance(set_path, str):
            raise _fail("secret_set", "provider/environment/name")
        provider, environment, name = validation.split_path(set_path)
        unknown = set(spec) - {"agent", "secret_set", *EDITABLE}
        if unknown:
            raise _fail(sorted(unknown)[0], "unknown field")
        async with self._core.write() as tx:
            agent = await self._agents.find(tx.conn, agent_ref)
            target = await sets_sql.get_set(tx.conn, provider, environment, name)
            if target is None or target.deleted_at is not None:
                raise NotFound(f"secret set {set_path} does not exist")
            keys = await sets_sql.current_key_names(tx.conn, target.id)
            clean = clean_constraints(
                {
                    "actions": ["proxy"],
                    "scopes": ["request"],
                    "approval": "none",
                    "max_lease_ttl": DEFAULT_MAX_LEASE_TTL,
                    **spec,
                },
                keys,
            )
            self._check_window(clean)
            if await sql.active_grant(tx.conn, agent.id, target.id) is not None:
                raise Conflict(
                    f"agent {agent.name} already has a grant on {set_path}; update or revoke it"
                )
            now = self._core.now()
            row = GrantRow(
                id=new_id(),
                agent_id=agent.id,
                set_id=target.id,
                set_path=target.path,
                keys=clean.get("keys"),
                actions=clean["actions"],
                not_before=clean.get("not_before"),
                expires_at=clean.get("expires_at"),
                scopes=clean["scopes"],
                max_lease_ttl=clean["max_lease_ttl"],
                max_lease_uses=clean.get("max_lease_uses"),
                rate_limit=clean.get("rate_limit"),
                max_uses=clean.get("max_uses"),
                uses=0,
                rate_window=0,
                rate_count=0,
                methods=clean.get("methods"),
                paths=clean.get("paths"),
                approval=clean["approval"],
                created_at=now,
                created_by=ctx.actor,
                updated_at=now,
                revoked_at=None,
            )
            await sql.insert_grant(tx.conn, row)
            view = grant_view(row, agent.name)
            await self._audit(tx, ctx, "create", row, _constraints(view))
        return view

    async def update(self, ctx: Context, grant_id: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(spec) - set(EDITABLE)
        if unknown:
            raise _fail(sorted(unknown)[0], "cannot be changed (revoke and grant anew)")
        async with self._core.write() as tx:
            row = await self._live(tx, grant_id)
            clean = clean_constraints(spec, await sets_sql.current_key_names(tx.conn, row.set_id))
            merged = {**grant_view(row), **clean}
            self._check_window(merged, new_end="expires_at" in clean)
            if clean:
                await sql.update_grant(tx.conn, row.id, updated_at=self._core.now(), **clean)
                await self._audit(tx, ctx, "update", row, {"changed": sorted(clean), **clean})
            row = await self._live(tx, grant_id)
            agent = await sql.agent_by(tx.conn, id=row.agent_id)
        return grant_view(row, agent.name if agent else None)

    async def revoke(self, ctx: Context, grant_id: str) -> dict[str, Any]:
        async with self._core.write() as tx:
            row = await self._live(tx, grant_id)
            now = self._core.now()
            await sql.update_grant(tx.conn, row.id, revoked_at=now, updated_at=now)
            leases = await sql.revoke_leases(tx.conn, now, "grant_revoked", grant_id=row.id)
            denied = await sql.deny_pending(tx.conn, now, ctx.actor, grant_id=row.id)
            await self._audit(
                tx, ctx, "revoke", row, {"leases_revoked": len(leases), "requests_denied": denied}
            )
            row = await sql.grant_by_id(tx.conn, grant_id) or row
            agent = await sql.agent_by(tx.conn, id=row.agent_id)
        return grant_view(row, agent.name if agent else None)

    async def get(self, grant_id: str) -> dict[str, Any]:
        async with self._core.db.read() as conn:
            row = await sql.grant_by_id(conn, grant_id)
            if row is None:
                raise NotFound(f"grant {grant_id} does not exist")
            agent = await sql.agent_by(conn, id=row.agent_id)
        return grant_view(row, agent.name if agent else None)

    async def search(
        self,
        *,
        agent: str | None = None,
        secret_set: str | None = None,
        include_revoked: bool = False,
    ) -> list[dict[str, Any]]:
        async with self._core.db.read() as conn:
            agent_id = (await self._agents.find(conn, agent)).id if agent else None
            set_id = None
            if secret_set:
                found = await sets_sql.get_set(conn, *validation.split_path(secret_set))
                if found is None:
                    return []
                set_id = found.id
            rows = await sql.list_grants(
                conn, agent_id=agent_id, set_id=set_id, include_revoked=include_revoked
            )
            names = {a.id: a.name for a in await sql.list_agents(conn)}
        return [grant_view(r, names.get(r.agent_id)) for r in rows]

    async def for_agent(self, agent_id: str) -> list[dict[str, Any]]:
        """An agent's own usable grants: names, key names, actions, limits; never values."""
        async with self._core.db.read() as conn:
            rows = await sql.list_grants(conn, agent_id=agent_id)
            out = []
            for row in rows:
                found = await sets_sql.get_set_by_id(conn, row.set_id)
                if found is None or found.deleted_at is not None:
                    continue
                keys = row.keys or sorted(await sets_sql.current_key_names(conn, row.set_id))
                view = grant_view(row)
                out.append(
                    {
                        "grant_id": row.id,
                        "secret_set": row.set_path,
                        **{k: view[k] for k in EDITABLE},
                        "keys": keys,
                        "uses": row.uses,
                    }
                )
        return out

    async def _live(self, tx: Tx, grant_id: str) -> GrantRow:
        row = await sql.grant_by_id(tx.conn, grant_id)
        if row is None:
            raise NotFound(f"grant {grant_id} does not exist")
        if row.revoked_at is not None:
            raise Conflict(f"grant {grant_id} is revoked")
        return row

    def _check_window(self, clean: Mapping[str, Any], *, new_end: bool = True) -> None:
        """The window must be ordered; a newly set end must be in the future."""
        start, end = clean.get("not_before"), clean.get("expires_at")
        if start and end and start >= end:
            raise _fail("expires_at", "must be after not_before")
        if new_end and end and end <= self._core.now():
            raise _fail("expires_at", "must be in the future")

    async def _audit(
        self, tx: Tx, ctx: Context, verb: str, row: GrantRow, details: dict[str, Any]
    ) -> None:
        await self._core.record(
            tx,
            ctx,
            f"grant.{verb}",
            f"grant:{row.id}",
            details={"agent_id": row.agent_id, "secret_set": row.set_path, **details},
        )


def _constraints(view: Mapping[str, Any]) -> dict[str, Any]:
    return {k: view[k] for k in EDITABLE}
