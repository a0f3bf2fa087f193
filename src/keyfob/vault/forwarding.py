"""The forward proxy's credential: a multi-set lease, checked per CONNECT.

A multi-set lease is one ``kfl_`` credential over one workflow lease per set, minted
together in one transaction under each set's grant. Each set's lease is stored as an
ordinary lease whose token is derived from the credential and the set's path
(``tokens.derive``), so a request inside the tunnel is the reverse route's request with
that derived lease: decided in ``decision.py``, taken in ``consume.py``, nothing else.
The bundle row lets a CONNECT find the agent (its egress policy) and lets one revoke
end every set's lease.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from keyfob import tokens
from keyfob.errors import Conflict, KeyfobError, NotFound, Unauthorized
from keyfob.profiles import Profile
from keyfob.secret import SECRET, Masked, Secret
from keyfob.store import access as access_sql
from keyfob.store import authority as sql
from keyfob.store import secrets as sets_sql
from keyfob.vault import validation
from keyfob.vault.context import Context
from keyfob.vault.core import UNAUTHORIZED, Core
from keyfob.vault.decision import Now, mint_refusal
from keyfob.vault.leases import Leases, denial, invalid, lease_view
from keyfob.vault.operators import Principal

MAX_SETS = 16
EGRESS_POLICIES = ("tunnel", "deny")


@dataclass(frozen=True, slots=True)
class SetRoute:
    """Where one set of a bundle is intercepted: its base URL's host and port."""

    set_path: str
    host: str
    port: int
    base_path: str


@dataclass(frozen=True, slots=True)
class Bundle(Masked):
    """A checked forward-proxy credential: whose it is, and which hosts it covers."""

    id: str
    agent_id: str
    egress: str
    routes: tuple[SetRoute, ...]
    credential: str = field(metadata=SECRET)

    def route(self, host: str, port: int) -> SetRoute | None:
        return next((r for r in self.routes if r.host == host and r.port == port), None)

    def lease_for(self, route: SetRoute) -> str:
        """The set's own lease token, derived from the credential."""
        return tokens.derive(self.credential, route.set_path)


@dataclass(frozen=True, slots=True)
class IssuedBundle(Masked):
    """A multi-set lease just minted, with its credential: shown this once."""

    id: str
    agent_id: str
    secret_sets: list[str]
    expires_at: str
    ttl: int
    leases: list[dict[str, Any]]
    token: Secret[str] = field(metadata=SECRET)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "agent_id": self.agent_id,
            "scope": "workflow",
            "secret_sets": self.secret_sets,
            "expires_at": self.expires_at,
            "ttl": self.ttl,
            "leases": self.leases,
        }


def _profile(raw: dict[str, Any] | None) -> Profile | None:
    if not raw:
        return None
    try:
        return Profile.model_validate(raw)
    except (ValueError, ValidationError):
        return None


def _route(path: str, profile: Profile) -> SetRoute:
    base = urlsplit(profile.base_url)
    port = base.port or (443 if base.scheme == "https" else 80)
    return SetRoute(path, (base.hostname or "").lower(), port, base.path.rstrip("/"))


class Forwarding:
    def __init__(self, core: Core, leases: Leases) -> None:
        self._core = core
        self._leases = leases
        self._routes: dict[str, tuple[SetRoute, ...]] = {}

    async def mint(
        self,
        agent: Principal,
        ctx: Context,
        *,
        secret_sets: list[str],
        ttl: int | None,
        max_uses: int | None,
        route: str = "/v1/leases",
    ) -> IssuedBundle:
        """One credential over a workflow lease per set, all or none; sets whose profiles
        share a host are refused (a request to that host could not say which set)."""
        if not isinstance(secret_sets, list) or not 1 <= len(secret_sets) <= MAX_SETS:
            raise invalid("secret_sets", f"between 1 and {MAX_SETS} secret sets")
        paths = ["/".join(validation.split_path(p)) for p in secret_sets]
        if len(set(paths)) != len(paths):
            raise invalid("secret_sets", "a secret set is named twice")
        self._leases._checked(paths[0], "workflow", ttl, max_uses, 1)
        token = tokens.new_token(tokens.LEASE)
        refused: KeyfobError | None = None
        issued: IssuedBundle | None = None
        async with self._core.write() as tx:
            if not await self._leases.still_valid(tx, agent, ctx, route):
                refused = Unauthorized(UNAUTHORIZED)
            else:
                now = Now(self._core.clock.now())
                chosen = []
                owner: dict[str, str] = {}
                for path in paths:
                    row = await sets_sql.get_set(tx.conn, *path.split("/"))
                    grant = None
                    if row is not None and row.deleted_at is None:
                        grant = await access_sql.active_grant(tx.conn, agent.id, row.id)
                    reason = mint_refusal(grant, "workflow", now)
                    if reason is None and grant is not None and grant.approval == "required":
                        reason = "approval_required"
                    profile = _profile(row.profile) if row is not None else None
                    if reason is None and profile is None:
                        reason = "no_profile"
                    if reason is not None or grant is None or profile is None:
                        reason = reason or "not_granted"
                        details = {"reason": reason, "agent_id": agent.id, "stage": "mint"}
                        await self._leases.audit(tx, ctx, "lease.deny", path, "denied", details)
                        refused = denial(reason)
                        break
                    clash = next((owner[h] for h in profile.hosts if h in owner), None)
                    if clash is not None:
                        refused = Conflict(
                            f"the secret sets {clash} and {path} share an upstream host; "
                            "a multi-set lease needs sets on distinct hosts",
                            reason="hosts_overlap",
                        )
                        break
                    owner.update((h, path) for h in profile.hosts)
                    chosen.append((path, grant))
                if refused is None:
                    issued = await self._issue(tx, ctx, agent, token, chosen, ttl, max_uses, now)
        if refused is not None:
            raise refused
        assert issued is not None
        return issued

    async def _issue(
        self,
        tx: Any,
        ctx: Context,
        agent: Principal,
        token: str,
        chosen: list[tuple[str, Any]],
        ttl: int | None,
        max_uses: int | None,
        now: Now,
    ) -> IssuedBundle:
        # One expiry for the whole credential: the shortest any of its grants allows.
        lease_ttl = min(self._leases._ttl(g, "workflow", ttl, now.moment) for _, g in chosen)
        views = []
        ids = []
        bundle_id = tokens.new_id()
        for path, grant in chosen:
            uses = (
                max_uses
                if grant.max_lease_uses is None
                else min(max_uses or grant.max_lease_uses, grant.max_lease_uses)
            )
            row = self._leases._lease_row(grant, "workflow", lease_ttl, uses, now, tokens.new_id())
            await access_sql.insert_lease(
                tx.conn, row, self._leases.digest(tokens.derive(token, path))
            )
            details = {
                "lease_id": row.id,
                "agent_id": row.agent_id,
                "grant_id": row.grant_id,
                "scope": "workflow",
                "ttl": lease_ttl,
                "max_uses": uses,
                "bundle_id": bundle_id,
            }
            await self._leases.audit(tx, ctx, "lease.mint", path, "ok", details)
            views.append(lease_view(row, now.iso).as_dict())
            ids.append(row.id)
        expires = min(v["expires_at"] for v in views)
        await sql.insert_bundle(
            tx.conn,
            bundle_id=bundle_id,
            digest=self._leases.digest(token),
            agent_id=agent.id,
            lease_ids=ids,
            set_paths=[p for p, _ in chosen],
            created_at=now.iso,
            expires_at=expires,
        )
        return IssuedBundle(
            bundle_id, agent.id, [p for p, _ in chosen], expires, lease_ttl, views, Secret(token)
        )

    async def revoke(
        self, ctx: Context, bundle_id: str, agent_id: str | None = None
    ) -> dict[str, Any] | None:
        """Revoke a multi-set lease and each set's lease; None if no such bundle (of
        ``agent_id``, when given: an agent revokes only its own)."""
        async with self._core.write() as tx:
            row = await sql.bundle_by(tx.conn, bundle_id=bundle_id)
            if row is None or (agent_id is not None and row.agent_id != agent_id):
                return None
            now = self._core.now()
            if not await sql.revoke_bundle(tx.conn, bundle_id, now):
                raise Conflict(f"lease {bundle_id} is already revoked")
            revoked = []
            for lease_id in row.lease_ids:
                revoked += await access_sql.revoke_leases(
                    tx.conn, now, "revoked", lease_id=lease_id
                )
            await self._core.record(
                tx,
                ctx,
                "lease.revoke",
                f"lease_bundle:{bundle_id}",
                details={"bundle_id": bundle_id, "lease_ids": revoked, "agent_id": row.agent_id},
            )
        return {"id": bundle_id, "status": "revoked", "lease_ids": row.lease_ids}

    async def authenticate(self, credential: str | None, ctx: Context) -> Bundle:
        """The bundle a ``Proxy-Authorization`` credential names, live; else 401
        (audited as ``auth.failed``; the proxy answers 407)."""
        row = None
        reason = "missing" if not credential else "malformed"
        if credential and tokens.looks_like(credential, tokens.LEASE):
            async with self._core.db.read() as conn:
                row = await sql.bundle_by(conn, digest=self._leases.digest(credential))
            reason = "unknown"
            if row is not None:
                now = self._core.now()
                if row.revoked_at is not None:
                    reason = "revoked"
                elif row.expires_at <= now:
                    reason = "expired"
                elif row.egress is None or row.agent_disabled:
                    reason = "agent_disabled"
                else:
                    reason = ""
        if row is None or reason:
            await self._core.audit_auth_failure(ctx, "forward-proxy", reason, credential)
            raise Unauthorized(UNAUTHORIZED)
        assert credential is not None
        routes = await self._routes_of(row.set_paths)
        return Bundle(row.id, row.agent_id, row.egress or "tunnel", routes, credential)

    async def _routes_of(self, set_paths: list[str]) -> tuple[SetRoute, ...]:
        routes = []
        async with self._core.db.read() as conn:
            for path in set_paths:
                row = await sets_sql.get_set(conn, *path.split("/"))
                profile = _profile(row.profile) if row is not None else None
                if profile is not None and row is not None and row.deleted_at is None:
                    routes.append(_route(path, profile))
        return tuple(routes)

    async def set_egress(self, ctx: Context, agent_id: str, policy: str) -> None:
        """Set an agent's policy for hosts outside its sets (``tunnel`` or ``deny``)."""
        if policy not in EGRESS_POLICIES:
            raise invalid("egress", "tunnel or deny")
        async with self._core.write() as tx:
            if not await sql.set_agent_egress(tx.conn, agent_id, policy):
                raise NotFound(f"agent {agent_id} does not exist")
            await self._core.record(
                tx, ctx, "agent.update", f"agent:{agent_id}", details={"egress": policy}
            )

    async def record(
        self,
        bundle: Bundle | None,
        ctx: Context,
        action: str,
        target: str,
        outcome: str,
        details: dict[str, Any],
    ) -> None:
        """An audited forward-proxy event (committed before the caller goes on)."""
        actor = Context(
            f"agent:{bundle.agent_id}" if bundle else "anonymous", ctx.request_id, ctx.client
        )
        body = {**details, "bundle_id": bundle.id if bundle else None}
        async with self._core.write() as tx:
            await self._core.record(tx, actor, action, target[:300], details=body, outcome=outcome)
