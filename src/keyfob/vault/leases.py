"""Leases: short-lived capability tokens an agent mints under a grant, and their use.

Every use is one write transaction: the lease's use counter and the grant's counters
move by single conditional UPDATEs (exactly one winner for a single-use lease, at most
N per rate window), and the use or the denial is audited in the same commit. A denial
is committed (audited) first and raised after.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from keyfob import tokens
from keyfob.clock import isoformat as _iso
from keyfob.clock import parse_iso
from keyfob.errors import (
    Conflict,
    Forbidden,
    KeyfobError,
    NotFound,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
)
from keyfob.secret import Secret
from keyfob.store import Tx
from keyfob.store import access as sql
from keyfob.store import secrets as sets_sql
from keyfob.store.records import GrantRow, LeaseRequestRow, LeaseRow
from keyfob.vault import rules, validation
from keyfob.vault.context import Context
from keyfob.vault.core import Core
from keyfob.vault.grants import SCOPES
from keyfob.vault.operators import Principal

REQUEST_TTL = 60
WORKFLOW_TTL = 900
APPROVAL_TIMEOUT = 600
MAX_WAIT = 30
NOT_GRANTED = "no usable grant for this agent and secret set"


@dataclass(frozen=True)
class LeaseUse:
    """What a consumed use allows: the set, its keys, the lease and agent ids."""

    lease_id: str
    agent_id: str
    grant_id: str
    set_path: str
    keys: list[str] | None


def lease_view(row: LeaseRow, now: str) -> dict[str, Any]:
    if row.revoked_at:
        status = "revoked"
    elif row.expires_at <= now:
        status = "expired"
    elif row.max_uses is not None and row.uses >= row.max_uses:
        status = "exhausted"
    else:
        status = "active"
    return {
        "id": row.id,
        "agent_id": row.agent_id,
        "grant_id": row.grant_id,
        "secret_set": row.set_path,
        "scope": row.scope,
        "actions": row.actions,
        "keys": row.keys,
        "max_uses": row.max_uses,
        "uses": row.uses,
        "status": status,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "revoke_reason": row.revoke_reason,
    }


def request_view(row: LeaseRequestRow, now: str) -> dict[str, Any]:
    status = row.status
    if status == "pending" and row.expires_at <= now:
        status = "expired"
    return {
        "id": row.id,
        "agent_id": row.agent_id,
        "grant_id": row.grant_id,
        "secret_set": row.set_path,
        "scope": row.scope,
        "ttl": row.ttl,
        "max_uses": row.max_uses,
        "status": status,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "decided_at": row.decided_at,
        "decided_by": row.decided_by,
        "lease_id": row.lease_id,
    }


REASONS = {
    "not_granted": NOT_GRANTED,
    "revoked": "the lease has been revoked",
    "expired": "the lease or its grant has expired",
    "not_yet_valid": "the grant is not valid yet",
    "exhausted": "the lease or its grant has no uses left",
    "scope_not_allowed": "the grant does not allow leases of this scope",
    "action_not_allowed": "the grant does not allow this action",
    "key_not_allowed": "the lease does not cover those keys",
    "method_not_allowed": "the grant does not allow this HTTP method",
    "path_not_allowed": "the grant does not allow this path",
    "rate_limited": "the grant's rate limit is reached; retry after Retry-After seconds",
}


def denial(reason: str, retry_after: int | None = None) -> KeyfobError:
    """The error an agent sees for a refusal; the same body for the same reason everywhere."""
    if reason == "rate_limited":
        return TooManyRequests(REASONS[reason], reason=reason, retry_after=retry_after)
    return Forbidden(REASONS.get(reason, "denied"), reason=reason)


class Leases:
    def __init__(self, core: Core) -> None:
        self._core = core

    # -- minting ----------------------------------------------------------------------

    async def mint(
        self,
        agent: Principal,
        ctx: Context,
        *,
        secret_set: str,
        scope: str = "request",
        ttl: int | None = None,
        max_uses: int | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """``(201, lease with token)``, or ``(202, pending request)`` under approval."""
        path = "/".join(validation.split_path(secret_set))
        if scope not in SCOPES:
            raise _invalid("scope", "request or workflow")
        if ttl is not None and (not isinstance(ttl, int) or ttl < 1):
            raise _invalid("ttl", "seconds, at least 1")
        if max_uses is not None and (not isinstance(max_uses, int) or max_uses < 1):
            raise _invalid("max_uses", "at least 1")
        if scope == "request" and max_uses not in (None, 1):
            raise _invalid("max_uses", "request-scoped leases are single use")
        refused: KeyfobError | None = None
        result: tuple[int, dict[str, Any]] = (0, {})
        async with self._core.write() as tx:
            grant = await self._grant_for(tx, agent, path)
            reason = self._mint_refusal(grant, scope)
            if reason is not None or grant is None:
                refused = denial(reason or "not_granted")
                await self._audit(
                    tx,
                    ctx,
                    "lease.deny",
                    path,
                    "denied",
                    {"reason": reason or "not_granted", "agent_id": agent.id, "stage": "mint"},
                )
            else:
                lease_ttl = self._ttl(grant, scope, ttl)
                uses = 1 if scope == "request" else _cap(max_uses, grant.max_lease_uses)
                if grant.approval == "required":
                    result = (
                        202,
                        await self._request(tx, ctx, agent, grant, scope, lease_ttl, uses),
                    )
                else:
                    result = (201, await self._issue(tx, ctx, grant, scope, lease_ttl, uses, None))
        if refused is not None:
            raise refused
        return result

    async def _grant_for(self, tx: Tx, agent: Principal, path: str) -> GrantRow | None:
        row = await sets_sql.get_set(tx.conn, *path.split("/"))
        if row is None or row.deleted_at is not None:
            return None
        return await sql.active_grant(tx.conn, agent.id, row.id)

    def _mint_refusal(self, grant: GrantRow | None, scope: str) -> str | None:
        if grant is None:
            return "not_granted"
        now = self._core.now()
        if grant.not_before and grant.not_before > now:
            return "not_yet_valid"
        if grant.expires_at and grant.expires_at <= now:
            return "expired"
        if scope not in grant.scopes:
            return "scope_not_allowed"
        if grant.max_uses is not None and grant.uses >= grant.max_uses:
            return "exhausted"
        return None

    def _ttl(self, grant: GrantRow, scope: str, asked: int | None) -> int:
        ttl = asked or (REQUEST_TTL if scope == "request" else WORKFLOW_TTL)
        ttl = min(ttl, grant.max_lease_ttl)
        if grant.expires_at:
            left = (parse_iso(grant.expires_at) - self._core.clock.now()).total_seconds()
            ttl = min(ttl, max(1, int(left)))
        return ttl

    async def _issue(
        self,
        tx: Tx,
        ctx: Context,
        grant: GrantRow,
        scope: str,
        ttl: int,
        max_uses: int | None,
        request_id: str | None,
    ) -> dict[str, Any]:
        token = tokens.new_token(tokens.LEASE)
        now = self._core.clock.now()
        row = LeaseRow(
            id=tokens.new_id(),
            agent_id=grant.agent_id,
            grant_id=grant.id,
            set_id=grant.set_id,
            set_path=grant.set_path,
            actions=grant.actions,
            keys=grant.keys,
            scope=scope,
            max_uses=max_uses,
            uses=0,
            created_at=self._core.now(),
            expires_at=_iso(now + timedelta(seconds=ttl)),
            revoked_at=None,
            revoke_reason=None,
        )
        await sql.insert_lease(tx.conn, row, self._digest(token))
        await self._audit(
            tx,
            ctx,
            "lease.mint",
            grant.set_path,
            "ok",
            {
                "lease_id": row.id,
                "agent_id": grant.agent_id,
                "grant_id": grant.id,
                "scope": scope,
                "ttl": ttl,
                "max_uses": max_uses,
                "approval_request": request_id,
            },
        )
        return {**lease_view(row, self._core.now()), "token": Secret(token), "ttl": ttl}

    async def _request(
        self,
        tx: Tx,
        ctx: Context,
        agent: Principal,
        grant: GrantRow,
        scope: str,
        ttl: int,
        max_uses: int | None,
    ) -> dict[str, Any]:
        now = self._core.clock.now()
        row = LeaseRequestRow(
            id=tokens.new_id(),
            agent_id=agent.id,
            grant_id=grant.id,
            set_path=grant.set_path,
            scope=scope,
            ttl=ttl,
            max_uses=max_uses,
            status="pending",
            created_at=self._core.now(),
            expires_at=_iso(now + timedelta(seconds=APPROVAL_TIMEOUT)),
            decided_at=None,
            decided_by=None,
            lease_id=None,
        )
        await sql.insert_request(tx.conn, row)
        await self._audit(
            tx,
            ctx,
            "lease.request",
            grant.set_path,
            "pending",
            {"request": row.id, "agent_id": agent.id, "grant_id": grant.id, "scope": scope},
        )
        return request_view(row, self._core.now())

    # -- approval ---------------------------------------------------------------------

    async def requests(self, status: str | None = None) -> list[dict[str, Any]]:
        async with self._core.db.read() as conn:
            rows = await sql.list_requests(conn, status=status)
        now = self._core.now()
        views = [request_view(r, now) for r in rows]
        return [v for v in views if status is None or v["status"] == status]

    async def decide(self, ctx: Context, request_id: str, approve: bool) -> dict[str, Any]:
        async with self._core.write() as tx:
            row = await sql.request_by_id(tx.conn, request_id)
            if row is None:
                raise NotFound(f"lease request {request_id} does not exist")
            now = self._core.now()
            if request_view(row, now)["status"] != "pending":
                raise Conflict(f"lease request {request_id} is {request_view(row, now)['status']}")
            status = "approved" if approve else "denied"
            await sql.decide_request(
                tx.conn,
                request_id,
                from_status="pending",
                to_status=status,
                decided_at=now,
                decided_by=ctx.actor,
            )
            await self._audit(
                tx,
                ctx,
                "lease.approve" if approve else "lease.reject",
                row.set_path,
                "ok",
                {"request": row.id, "agent_id": row.agent_id, "grant_id": row.grant_id},
            )
            row = await sql.request_by_id(tx.conn, request_id) or row
        return request_view(row, self._core.now())

    async def poll(
        self, agent: Principal, ctx: Context, request_id: str, wait: float = 0
    ) -> dict[str, Any]:
        """The agent's view of its request; once approved, issues the lease (token once)."""
        deadline = self._core.clock.now() + timedelta(seconds=min(max(wait, 0), MAX_WAIT))
        while True:
            async with self._core.db.read() as conn:
                row = await sql.request_by_id(conn, request_id)
            if row is None or row.agent_id != agent.id:
                raise NotFound(f"lease request {request_id} does not exist")
            view = request_view(row, self._core.now())
            if view["status"] != "pending" or self._core.clock.now() >= deadline:
                break
            await asyncio.sleep(0.25)
        if view["status"] != "approved":
            return view
        refused: KeyfobError | None = None
        async with self._core.write() as tx:
            grant = await sql.grant_by_id(tx.conn, row.grant_id)
            reason = self._mint_refusal(
                grant if grant and not grant.revoked_at else None, row.scope
            )
            if grant is None or reason is not None:
                refused = denial(reason or "not_granted")
                await sql.decide_request(
                    tx.conn, row.id, from_status="approved", to_status="denied"
                )
                await self._audit(
                    tx,
                    ctx,
                    "lease.deny",
                    row.set_path,
                    "denied",
                    {"reason": reason, "agent_id": agent.id, "stage": "issue"},
                )
            else:
                lease = await self._issue(tx, ctx, grant, row.scope, row.ttl, row.max_uses, row.id)
                if not await sql.decide_request(
                    tx.conn,
                    row.id,
                    from_status="approved",
                    to_status="issued",
                    lease_id=lease["id"],
                ):
                    raise Conflict(f"lease request {request_id} was already issued")
        if refused is not None:
            raise refused
        return {**view, "status": "issued", "lease_id": lease["id"], "lease": lease}

    # -- listing and revoking ---------------------------------------------------------

    async def search(
        self,
        *,
        agent_id: str | None = None,
        grant_id: str | None = None,
        set_path: str | None = None,
        active: bool = True,
    ) -> list[dict[str, Any]]:
        now = self._core.now()
        async with self._core.db.read() as conn:
            set_id = None
            if set_path:
                found = await sets_sql.get_set(conn, *validation.split_path(set_path))
                if found is None:
                    return []
                set_id = found.id
            rows = await sql.list_leases(
                conn,
                agent_id=agent_id,
                grant_id=grant_id,
                set_id=set_id,
                active_at=now if active else None,
            )
        return [lease_view(r, now) for r in rows]

    async def revoke(self, ctx: Context, lease_id: str) -> dict[str, Any]:
        async with self._core.write() as tx:
            row = await sql.lease_by(tx.conn, id=lease_id)
            if row is None:
                raise NotFound(f"lease {lease_id} does not exist")
            now = self._core.now()
            if not await sql.revoke_leases(tx.conn, now, "revoked", lease_id=lease_id):
                raise Conflict(f"lease {lease_id} is already {lease_view(row, now)['status']}")
            await self._audit(
                tx,
                ctx,
                "lease.revoke",
                row.set_path,
                "ok",
                {"lease_id": lease_id, "agent_id": row.agent_id},
            )
            row = await sql.lease_by(tx.conn, id=lease_id) or row
        return lease_view(row, self._core.now())

    async def revoke_all(
        self,
        ctx: Context,
        *,
        agent_id: str | None = None,
        grant_id: str | None = None,
        set_path: str | None = None,
    ) -> dict[str, Any]:
        if not (agent_id or grant_id or set_path):
            raise _invalid("agent", "name an agent, a grant or a secret set")
        async with self._core.write() as tx:
            set_id = None
            if set_path:
                found = await sets_sql.get_set(tx.conn, *validation.split_path(set_path))
                if found is None:
                    raise NotFound(f"secret set {set_path} does not exist")
                set_id = found.id
            ids = await sql.revoke_leases(
                tx.conn,
                self._core.now(),
                "revoked",
                agent_id=agent_id,
                grant_id=grant_id,
                set_id=set_id,
            )
            await self._audit(
                tx,
                ctx,
                "lease.revoke",
                set_path or "*",
                "ok",
                {"lease_ids": ids, "agent_id": agent_id, "grant_id": grant_id},
            )
        return {"revoked": len(ids), "lease_ids": ids}

    # -- using ------------------------------------------------------------------------

    async def use(
        self,
        token: str | None,
        ctx: Context,
        *,
        action: str = "proxy",
        secret_set: str | None = None,
        method: str | None = None,
        path: str | None = None,
        route: str = "",
    ) -> LeaseUse:
        """Consume one use (audited as ``lease.use``) or raise the audited denial."""
        return await self._consume(token, ctx, action, secret_set, method, path, route, None)

    async def _consume(
        self,
        token: str | None,
        ctx: Context,
        action: str,
        secret_set: str | None,
        method: str | None,
        path: str | None,
        route: str,
        keys: list[str] | None,
    ) -> LeaseUse:
        lease = await self._lookup(token, ctx, route)
        ctx = Context(f"agent:{lease.agent_id}", ctx.request_id, ctx.client)
        refused: KeyfobError | None = None
        async with self._core.write() as tx:
            lease = await sql.lease_by(tx.conn, id=lease.id) or lease
            grant = await sql.grant_by_id(tx.conn, lease.grant_id)
            reason = self._use_refusal(lease, grant, action, secret_set, method, path, keys)
            retry = None
            if reason is None and not await sql.take_lease_use(tx.conn, lease.id, self._core.now()):
                reason = "exhausted"
            if reason is None:
                assert grant is not None
                if not await sql.take_grant_use(tx.conn, grant.id, self._window()):
                    await sql.return_lease_use(tx.conn, lease.id)
                    exhausted = grant.max_uses is not None and grant.uses >= grant.max_uses
                    reason = "exhausted" if exhausted else "rate_limited"
                    retry = 60 - int(self._core.clock.now().timestamp()) % 60
            details: dict[str, Any] = {
                "lease_id": lease.id,
                "agent_id": lease.agent_id,
                "action": action,
                "method": method,
                "path": path,
            }
            if reason is not None:
                refused = denial(reason, retry_after=retry)
                await self._audit(
                    tx, ctx, "lease.deny", lease.set_path, "denied", {**details, "reason": reason}
                )
            elif action == "export":
                now = self._core.now()
                await sets_sql.update_set(tx.conn, lease.set_id, exported_at=now)
                await self._audit(
                    tx, ctx, "secret_set.export", lease.set_path, "ok", {**details, "keys": keys}
                )
            else:
                await self._audit(
                    tx, ctx, "lease.use", lease.set_path, "ok", {**details, "keys": lease.keys}
                )
        if refused is not None:
            raise refused
        return LeaseUse(lease.id, lease.agent_id, lease.grant_id, lease.set_path, lease.keys)

    async def check(
        self,
        token: str | None,
        ctx: Context,
        *,
        action: str = "proxy",
        secret_set: str | None = None,
        method: str | None = None,
        path: str | None = None,
        route: str = "",
    ) -> dict[str, Any]:
        """Would this use be allowed? Consumes nothing."""
        lease = await self._lookup(token, ctx, route)
        async with self._core.db.read() as conn:
            grant = await sql.grant_by_id(conn, lease.grant_id)
        reason = self._use_refusal(lease, grant, action, secret_set, method, path, None)
        if (
            reason is None
            and grant is not None
            and grant.rate_limit is not None
            and grant.rate_window == self._window()
            and grant.rate_count >= grant.rate_limit
        ):
            reason = "rate_limited"
        return {
            "allowed": reason is None,
            "reason": reason,
            "lease": lease_view(lease, self._core.now()),
        }

    async def export(
        self,
        token: str | None,
        ctx: Context,
        secret_set: str,
        keys: list[str] | None,
        route: str,
        reveal: Any,
    ) -> dict[str, Any]:
        """Plaintext of the allowed keys, for a lease whose grant allows ``export``."""
        use = await self._consume(token, ctx, "export", secret_set, None, None, route, keys)
        values: dict[str, Secret[str]] = await reveal(use.set_path)
        allowed = set(use.keys) if use.keys is not None else set(values)
        wanted = keys if keys is not None else sorted(allowed & set(values))
        return {
            "secret_set": use.set_path,
            "entries": {k: values[k] for k in wanted if k in values},
        }

    def _use_refusal(
        self,
        lease: LeaseRow,
        grant: GrantRow | None,
        action: str,
        secret_set: str | None,
        method: str | None,
        path: str | None,
        keys: list[str] | None,
    ) -> str | None:
        now = self._core.now()
        if secret_set is not None and secret_set != lease.set_path:
            return "not_granted"
        if lease.revoked_at is not None or grant is None or grant.revoked_at is not None:
            return "revoked"
        if lease.expires_at <= now or (grant.expires_at and grant.expires_at <= now):
            return "expired"
        if grant.not_before and grant.not_before > now:
            return "not_yet_valid"
        if lease.max_uses is not None and lease.uses >= lease.max_uses:
            return "exhausted"
        if action not in lease.actions:
            return "action_not_allowed"
        if keys is not None and lease.keys is not None and not set(keys) <= set(lease.keys):
            return "key_not_allowed"
        if method is not None and not rules.method_allowed(grant.methods, method):
            return "method_not_allowed"
        if path is not None and not rules.path_allowed(grant.paths, path):
            return "path_not_allowed"
        if grant.max_uses is not None and grant.uses >= grant.max_uses:
            return "exhausted"
        return None

    async def _lookup(self, token: str | None, ctx: Context, route: str) -> LeaseRow:
        reason = "missing" if not token else "malformed"
        if token and tokens.looks_like(token, tokens.LEASE):
            async with self._core.db.read() as conn:
                row = await sql.lease_by(conn, digest=self._digest(token))
            if row is not None:
                return row
            reason = "unknown"
        await self._core.audit_auth_failure(ctx, route, reason, token)
        raise Unauthorized("a valid lease is required (Authorization: Bearer kfl_…)")

    def _window(self) -> int:
        return int(self._core.clock.now().timestamp()) // 60

    def _digest(self, token: str) -> str:
        return tokens.digest(self._core.ring.system.token_key, token)

    async def _audit(
        self,
        tx: Tx,
        ctx: Context,
        action: str,
        set_path: str,
        outcome: str,
        details: dict[str, Any],
    ) -> None:
        await tx.audit(
            ts=self._core.now(),
            actor=ctx.actor,
            action=action,
            target=f"secret_set:{set_path}",
            outcome=outcome,
            request_id=ctx.request_id,
            details=details,
        )


def _invalid(field: str, msg: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {msg}", errors=[{"loc": [field], "msg": msg}])


def _cap(asked: int | None, ceiling: int | None) -> int | None:
    if ceiling is None:
        return asked
    return min(asked, ceiling) if asked is not None else ceiling
