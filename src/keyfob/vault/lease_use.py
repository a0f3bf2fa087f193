"""Using a lease: consume one use (proxy, export), or check without consuming.

Every use is one write transaction: re-read the lease and its grant, check them, take
a use with a conditional UPDATE on the lease (exactly one winner for a single-use
lease) and on the grant's total and per-minute counters, and audit the use or the
denial in the same commit. A denial is committed first and raised after.
"""

from __future__ import annotations

from typing import Any

from keyfob import tokens
from keyfob.errors import KeyfobError, Unauthorized
from keyfob.secret import Secret
from keyfob.store import access as sql
from keyfob.store import secrets as sets_sql
from keyfob.store.records import GrantRow, LeaseRow
from keyfob.vault import rules
from keyfob.vault.context import Context
from keyfob.vault.core import UNAUTHORIZED, Core
from keyfob.vault.leases import Leases, LeaseUse, denial, lease_view
from keyfob.vault.operators import Principal
from keyfob.vault.secret_sets import SecretSets


class LeaseUsage:
    def __init__(self, core: Core, leases: Leases, sets: SecretSets) -> None:
        self._core = core
        self._leases = leases
        self._sets = sets

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
        use, _ = await self._consume(token, ctx, action, secret_set, method, path, route, None)
        return use

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
    ) -> tuple[LeaseUse, dict[str, Secret[str]]]:
        """Take one use, or audit and raise the refusal. Export also opens the values,
        in the same transaction, so what is audited is exactly what is handed out."""
        lease = await self._lookup(token, ctx, route)
        ctx = Context(f"agent:{lease.agent_id}", ctx.request_id, ctx.client)
        refused: KeyfobError | None = None
        entries: dict[str, Secret[str]] = {}
        async with self._core.write() as tx:
            lease = await sql.lease_by(tx.conn, id=lease.id) or lease
            grant = await sql.grant_by_id(tx.conn, lease.grant_id)
            target = await sets_sql.get_set_by_id(tx.conn, lease.set_id)
            reason = use_refusal(
                lease, grant, self._core.now(), action, secret_set, method, path, keys
            )
            if reason is None and (target is None or target.deleted_at is not None):
                reason = "revoked"
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
            allowed = allowed_keys(lease, grant) if grant is not None else []
            if reason is not None:
                refused = denial(reason, retry_after=retry)
                await self._leases.audit(
                    tx,
                    ctx,
                    "lease.deny",
                    lease.set_path,
                    "denied",
                    {**details, "reason": reason, "stage": "use"},
                )
            elif action == "export":
                values = await self._sets.open_current(tx.conn, lease.set_id)
                pool = set(values) if allowed is None else set(values) & set(allowed)
                wanted = pool if keys is None else pool & set(keys)
                entries = {k: Secret(values[k]) for k in sorted(wanted)}
                await sets_sql.update_set(tx.conn, lease.set_id, exported_at=self._core.now())
                await self._leases.audit(
                    tx,
                    ctx,
                    "secret_set.export",
                    lease.set_path,
                    "ok",
                    {**details, "keys": sorted(entries)},
                )
            else:
                await self._leases.audit(
                    tx, ctx, "lease.use", lease.set_path, "ok", {**details, "keys": allowed}
                )
        if refused is not None:
            raise refused
        use = LeaseUse(lease.id, lease.agent_id, lease.grant_id, lease.set_path, allowed)
        return use, entries

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
        reason = use_refusal(lease, grant, self._core.now(), action, secret_set, method, path, None)
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
    ) -> dict[str, Any]:
        """Plaintext of the allowed keys, for a lease whose grant allows ``export``."""
        use, entries = await self._consume(
            token, ctx, "export", secret_set, None, None, route, keys
        )
        return {"secret_set": use.set_path, "entries": entries}

    async def authenticate(self, token: str | None, ctx: Context, route: str) -> Principal:
        """The lease as a principal (``lease:<id>``), or an audited ``Unauthorized``."""
        lease = await self._lookup(token, ctx, route)
        return Principal("lease", lease.id, lease.agent_id)

    async def _lookup(self, token: str | None, ctx: Context, route: str) -> LeaseRow:
        reason = "missing" if not token else "malformed"
        if token and tokens.looks_like(token, tokens.LEASE):
            async with self._core.db.read() as conn:
                row = await sql.lease_by(conn, digest=self._leases.digest(token))
            if row is not None:
                return row
            reason = "unknown"
        await self._core.audit_auth_failure(ctx, route, reason, token)
        raise Unauthorized(UNAUTHORIZED)

    def _window(self) -> int:
        return int(self._core.clock.now().timestamp()) // 60


def use_refusal(
    lease: LeaseRow,
    grant: GrantRow | None,
    now: str,
    action: str,
    secret_set: str | None,
    method: str | None,
    path: str | None,
    keys: list[str] | None,
    *,
    lease_uses: int | None = None,
    grant_uses: int | None = None,
) -> str | None:
    """Why this use of ``lease`` is refused (a reason of ``leases.REASONS``), or None.

    ``lease_uses`` and ``grant_uses`` override the rows' counters (uses taken earlier in
    the same grouped commit)."""
    if secret_set is not None and secret_set != lease.set_path:
        return "not_granted"
    if lease.revoked_at is not None or grant is None or grant.revoked_at is not None:
        return "revoked"
    if lease.expires_at <= now or (grant.expires_at and grant.expires_at <= now):
        return "expired"
    if grant.not_before and grant.not_before > now:
        return "not_yet_valid"
    if lease_uses is None:
        lease_uses = lease.uses
    if lease.max_uses is not None and lease_uses >= lease.max_uses:
        return "exhausted"
    # The grant as it is now narrows the lease: taking away export or a key applies
    # to leases already handed out, on their next use.
    if action not in lease.actions or action not in grant.actions:
        return "action_not_allowed"
    allowed = allowed_keys(lease, grant)
    if keys is not None and allowed is not None and not set(keys) <= set(allowed):
        return "key_not_allowed"
    if method is not None and not rules.method_allowed(grant.methods, method):
        return "method_not_allowed"
    if path is not None and not rules.path_allowed(grant.paths, path):
        return "path_not_allowed"
    if grant_uses is None:
        grant_uses = grant.uses
    if grant.max_uses is not None and grant_uses >= grant.max_uses:
        return "exhausted"
    return None


def allowed_keys(lease: LeaseRow, grant: GrantRow) -> list[str] | None:
    """The keys a use may touch: the lease's, narrowed by its grant's current allowlist."""
    if grant.keys is None:
        return lease.keys
    if lease.keys is None:
        return grant.keys
    return sorted(set(lease.keys) & set(grant.keys))
