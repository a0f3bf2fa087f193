"""Agents: identities that may only mint leases. Create, list, disable/enable, rotate, delete.

Disabling or deleting an agent revokes its outstanding leases (and, on delete, its
grants) in the same transaction as the change and its audit record.
"""

from __future__ import annotations

from typing import Any

from keyfob import tokens
from keyfob.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from keyfob.profiles import SLUG_RE
from keyfob.secret import Secret
from keyfob.store import Tx
from keyfob.store import access as sql
from keyfob.store.records import AgentRow
from keyfob.vault.context import Context
from keyfob.vault.core import UNAUTHORIZED, Core
from keyfob.vault.operators import Principal
from keyfob.vault.paging import Page, clamp, decode, page_of
from keyfob.vault.rules import agent_refusal, check_fingerprint, check_networks
from keyfob.vault.views import AgentDeleted, AgentView


def _fingerprint(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_fingerprint(value)
    except ValueError as exc:
        raise ValidationFailed(
            f"client_cert_sha256: {exc}", errors=[{"loc": ["client_cert_sha256"], "msg": str(exc)}]
        ) from None


def _networks(items: list[str] | None) -> str | None:
    if items is None:
        return None
    try:
        return check_networks(items)
    except ValueError as exc:
        raise ValidationFailed(
            f"allowed_networks: {exc}", errors=[{"loc": ["allowed_networks"], "msg": str(exc)}]
        ) from None


def agent_view(row: AgentRow) -> AgentView:
    return AgentView(
        id=row.id,
        name=row.name,
        status="disabled" if row.disabled_at else "active",
        disabled_at=row.disabled_at,
        allowed_networks=row.allowed_networks.split(",") if row.allowed_networks else None,
        client_cert_sha256=row.client_cert_sha256,
        created_at=row.created_at,
        created_by=row.created_by,
        updated_at=row.updated_at,
    )


class Agents:
    def __init__(self, core: Core) -> None:
        self._core = core

    async def create(
        self,
        ctx: Context,
        name: str,
        allowed_networks: list[str] | None = None,
        client_cert_sha256: str | None = None,
    ) -> tuple[AgentView, Secret[str]]:
        if not SLUG_RE.match(name):
            msg = "agent names are 1-64 characters of a-z, 0-9, '-' or '_'"
            raise ValidationFailed(f"name: {msg}", errors=[{"loc": ["name"], "msg": msg}])
        networks = _networks(allowed_networks)
        pinned = _fingerprint(client_cert_sha256)
        token = tokens.new_token(tokens.AGENT)
        async with self._core.write() as tx:
            if await sql.agent_by(tx.conn, name=name) is not None:
                raise Conflict(f"agent {name} already exists")
            now = self._core.now()
            row = AgentRow(tokens.new_id(), name, None, now, ctx.actor, now, networks, pinned)
            await sql.insert_agent(tx.conn, row, self._digest(token))
            details: dict[str, Any] = {"name": name}
            if networks is not None:
                details["allowed_networks"] = networks.split(",")
            if pinned is not None:
                details["client_cert_sha256"] = pinned
            await self._audit(tx, ctx, "create", row, details)
        return agent_view(row), Secret(token)

    async def set_binding(self, ctx: Context, ref: str, changes: dict[str, Any]) -> AgentView:
        """Bind the agent to ``allowed_networks`` and/or ``client_cert_sha256`` (None
        lifts a binding); from its next request."""
        values: dict[str, Any] = {}
        if "allowed_networks" in changes:
            values["allowed_networks"] = _networks(changes["allowed_networks"])
        if "client_cert_sha256" in changes:
            values["client_cert_sha256"] = _fingerprint(changes["client_cert_sha256"])
        async with self._core.write() as tx:
            row = await self.find(tx.conn, ref)
            values = {k: v for k, v in values.items() if getattr(row, k) != v}
            if not values:
                return agent_view(row)
            await sql.update_agent(tx.conn, row.id, **values, updated_at=self._core.now())
            details: dict[str, Any] = {"name": row.name}
            for name, value in values.items():
                before = getattr(row, name)
                if name == "allowed_networks":
                    value = value.split(",") if value else None
                    before = before.split(",") if before else None
                details[name] = value
                details[f"previous_{name}"] = before
            await self._audit(tx, ctx, "update", row, details)
            row = await self.find(tx.conn, row.id)
        return agent_view(row)

    async def find(self, conn: Any, ref: str) -> AgentRow:
        """An agent by id or by name."""
        row = await sql.agent_by(conn, id=ref) or await sql.agent_by(conn, name=ref)
        if row is None:
            raise NotFound(f"agent {ref} does not exist")
        return row

    async def get(self, ref: str) -> AgentView:
        async with self._core.db.read() as conn:
            return agent_view(await self.find(conn, ref))

    async def list_all(self) -> list[AgentView]:
        async with self._core.db.read() as conn:
            return [agent_view(r) for r in await sql.list_agents(conn)]

    async def page(
        self, *, prefix: str | None = None, cursor: str | None = None, limit: int = 50
    ) -> Page[AgentView]:
        """Agents by name, a page at a time (keyset); ``prefix`` narrows by name."""
        limit = clamp(limit)
        async with self._core.db.read() as conn:
            rows = await sql.list_agents(
                conn, prefix=prefix, after=decode(cursor, 1), limit=limit + 1
            )
        shown, after = page_of(rows, limit, lambda r: (r.name,))
        return Page([agent_view(r) for r in shown], after)

    async def names(self, ids: set[str]) -> dict[str, str]:
        """The names of the agents with these ids (a deleted agent's id is left out)."""
        async with self._core.db.read() as conn:
            return {k: r.name for k, r in (await sql.agents_by_ids(conn, ids)).items()}

    async def set_disabled(self, ctx: Context, ref: str, disabled: bool) -> AgentView:
        async with self._core.write() as tx:
            row = await self.find(tx.conn, ref)
            now = self._core.now()
            if bool(row.disabled_at) == disabled:
                return agent_view(row)
            await sql.update_agent(
                tx.conn, row.id, disabled_at=now if disabled else None, updated_at=now
            )
            details: dict[str, Any] = {"name": row.name}
            if disabled:
                details["leases_revoked"] = len(
                    await sql.revoke_leases(tx.conn, now, "agent_disabled", agent_id=row.id)
                )
                details["requests_denied"] = await sql.deny_pending(
                    tx.conn, now, ctx.actor, agent_id=row.id
                )
            await self._audit(tx, ctx, "disable" if disabled else "enable", row, details)
            row = await self.find(tx.conn, row.id)
        return agent_view(row)

    async def rotate_token(self, ctx: Context, ref: str) -> tuple[AgentView, Secret[str]]:
        token = tokens.new_token(tokens.AGENT)
        async with self._core.write() as tx:
            row = await self.find(tx.conn, ref)
            now = self._core.now()
            await sql.update_agent(tx.conn, row.id, digest=self._digest(token), updated_at=now)
            # Leases minted with the old token go with it: rotation is how a leak is closed.
            revoked = await sql.revoke_leases(tx.conn, now, "token_rotated", agent_id=row.id)
            details = {"name": row.name, "leases_revoked": len(revoked)}
            await self._audit(tx, ctx, "rotate_token", row, details)
            row = await self.find(tx.conn, row.id)
        return agent_view(row), Secret(token)

    async def delete(self, ctx: Context, ref: str) -> AgentDeleted:
        async with self._core.write() as tx:
            row = await self.find(tx.conn, ref)
            now = self._core.now()
            leases = await sql.revoke_leases(tx.conn, now, "agent_deleted", agent_id=row.id)
            grants = await sql.revoke_grants(tx.conn, now, agent_id=row.id)
            denied = await sql.deny_pending(tx.conn, now, ctx.actor, agent_id=row.id)
            await sql.delete_agent(tx.conn, row.id)
            await self._audit(
                tx,
                ctx,
                "delete",
                row,
                {
                    "name": row.name,
                    "leases_revoked": len(leases),
                    "grants_revoked": len(grants),
                    "requests_denied": denied,
                },
            )
        return AgentDeleted(**vars(agent_view(row)))

    async def authenticate(self, token: str | None, ctx: Context, route: str) -> Principal:
        """The agent behind a ``kfa_`` token, or an audited ``Unauthorized``."""
        reason = "missing" if not token else "malformed"
        if token and tokens.looks_like(token, tokens.AGENT):
            digest = self._digest(token)
            async with self._core.db.read() as conn:
                row = await sql.agent_by(conn, digest=digest)
            refusal = agent_refusal(row, ctx.client, ctx.client_cert)
            if row is not None and refusal is None:
                return Principal("agent", row.id, row.name, digest)
            reason = refusal or "unknown"
        await self._core.audit_auth_failure(ctx, route, reason, token)
        raise Unauthorized(UNAUTHORIZED)

    def _digest(self, token: str) -> str:
        return tokens.digest(self._core.ring.system.token_key, token)

    async def _audit(
        self, tx: Tx, ctx: Context, verb: str, row: AgentRow, details: dict[str, Any]
    ) -> None:
        await self._core.record(tx, ctx, f"agent.{verb}", f"agent:{row.id}", details=details)
