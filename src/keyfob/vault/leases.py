"""Leases: short-lived capability tokens an agent mints under a grant; listing, revoking.

Approval lives in ``approvals.py``, using a lease in ``lease_use.py``. A refusal is
audited in its own committed transaction and raised after, so every denial leaves a
record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
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
    ValidationFailed,
)
from keyfob.secret import Secret
from keyfob.store import Tx
from keyfob.store import access as sql
from keyfob.store import secrets as sets_sql
from keyfob.store.records import GrantRow, LeaseRequestRow, LeaseRow
from keyfob.vault import validation
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
    # Approval must be collected in time too: an approved request left lying expires.
    if status in ("pending", "approved") and row.expires_at <= now:
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
    "no_profile": "the secret set has no usable injection profile; an operator must set one",
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
            raise invalid("scope", "request or workflow")
        if ttl is not None and (not isinstance(ttl, int) or ttl < 1):
            raise invalid("ttl", "seconds, at least 1")
        if max_uses is not None and (not isinstance(max_uses, int) or max_uses < 1):
            raise invalid("max_uses", "at least 1")
        if scope == "request" and max_uses not in (None, 1):
            raise invalid("max_uses", "request-scoped leases are single use")
        refused: KeyfobError | None = None
        result: tuple[int, dict[str, Any]] = (0, {})
        async with self._core.write() as tx:
            grant = await self._grant_for(tx, agent, path)
            reason = self.mint_refusal(grant, scope)
            if reason is not None or grant is None:
                refused = denial(reason or "not_granted")
                await self.audit(
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
                    result = (201, await self.issue(tx, ctx, grant, scope, lease_ttl, uses, None))
        if refused is not None:
            raise refused
        return result

    async def _grant_for(self, tx: Tx, agent: Principal, path: str) -> GrantRow | None:
        row = await sets_sql.get_set(tx.conn, *path.split("/"))
        if row is None or row.deleted_at is not None:
            return None
        return await sql.active_grant(tx.conn, agent.id, row.id)

    async def live_grant(self, tx: Tx, grant_id: str) -> GrantRow | None:
        """The grant if it and its set still exist (for issuing an approved request)."""
        grant = await sql.grant_by_id(tx.conn, grant_id)
        if grant is None or grant.revoked_at is not None:
            return None
        found = await sets_sql.get_set_by_id(tx.conn, grant.set_id)
        return grant if found is not None and found.deleted_at is None else None

    def mint_refusal(self, grant: GrantRow | None, scope: str) -> str | None:
        """Why a lease cannot be minted under ``grant`` now, or None."""
        if grant is None or grant.revoked_at is not None:
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
            # Unbounded: older releases stored any year.
            expires = parse_iso(grant.expires_at, bounded=False)
            left = (expires - self._core.clock.now()).total_seconds()
            ttl = min(ttl, max(1, int(left)))
        return ttl

    async def issue(
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
            expires_at=_lease_expiry(now, ttl, grant.expires_at),
            revoked_at=None,
            revoke_reason=None,
        )
        await sql.insert_lease(tx.conn, row, self.digest(token))
        await self.audit(
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
                "request": request_id,
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
        await self.audit(
            tx,
            ctx,
            "lease.request",
            grant.set_path,
            "pending",
            {"request": row.id, "agent_id": agent.id, "grant_id": grant.id, "scope": scope},
        )
        return request_view(row, self._core.now())

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
            await self.audit(
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
            raise invalid("agent", "name an agent, a grant or a secret set")
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
            await self.audit(
                tx,
                ctx,
                "lease.revoke",
                set_path or "*",
                "ok",
                {"lease_ids": ids, "agent_id": agent_id, "grant_id": grant_id},
            )
        return {"revoked": len(ids), "lease_ids": ids}

    def digest(self, token: str) -> str:
        return tokens.digest(self._core.ring.system.token_key, token)

    async def audit(
        self,
        tx: Tx,
        ctx: Context,
        action: str,
        set_path: str,
        outcome: str,
        details: dict[str, Any],
    ) -> None:
        await self._core.record(
            tx, ctx, action, f"secret_set:{set_path}", details=details, outcome=outcome
        )


def invalid(field: str, msg: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {msg}", errors=[{"loc": [field], "msg": msg}])


def _lease_expiry(now: datetime, ttl: int, grant_expires: str | None) -> str:
    """``now + ttl``, but never past the grant, not even by a second of rounding."""
    expires = _iso(now + timedelta(seconds=ttl))
    return min(expires, grant_expires) if grant_expires else expires


def _cap(asked: int | None, ceiling: int | None) -> int | None:
    if ceiling is None:
        return asked
    return min(asked, ceiling) if asked is not None else ceiling
