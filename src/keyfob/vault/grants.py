"""Grants: which agent may use which secret set, and under what constraints.

Defaults are least privilege: ``proxy`` only, request-scoped leases, a 15-minute lease
ceiling. Revoking a grant revokes its outstanding leases and denies its pending lease
requests in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keyfob.constraints import BY_NAME, NAMES, defaults
from keyfob.errors import Conflict, NotFound
from keyfob.profiles.registry import env_of
from keyfob.store import Tx
from keyfob.store import access as sql
from keyfob.store import secrets as sets_sql
from keyfob.store.records import GrantRow
from keyfob.tokens import new_id
from keyfob.vault import validation
from keyfob.vault.agents import Agents
from keyfob.vault.context import Context
from keyfob.vault.core import Core
from keyfob.vault.grant_checks import clean_constraints
from keyfob.vault.paging import Page, clamp, decode, page_of
from keyfob.vault.views import GrantView, MyGrantView

SCOPES = BY_NAME["scopes"].choices


def grant_view(row: GrantRow, agent_name: str | None = None) -> GrantView:
    return GrantView(
        id=row.id,
        agent_id=row.agent_id,
        agent=agent_name,
        secret_set=row.set_path,
        **{name: getattr(row, name) for name in NAMES},
        uses=row.uses,
        created_at=row.created_at,
        created_by=row.created_by,
        updated_at=row.updated_at,
        revoked_at=row.revoked_at,
    )


def constraints_of(row: GrantRow) -> dict[str, Any]:
    """The grant's constraint values by spec name."""
    return {name: getattr(row, name) for name in NAMES}


class Grants:
    def __init__(self, core: Core, agents: Agents) -> None:
        self._core = core
        self._agents = agents

    async def create(self, ctx: Context, spec: Mapping[str, Any]) -> GrantView:
        agent_ref = spec.get("agent")
        set_path = spec.get("secret_set")
        if not isinstance(agent_ref, str) or not agent_ref:
            raise validation.field_error("agent", "an agent id or name")
        if not isinstance(set_path, str):
            raise validation.field_error("secret_set", "provider/environment/name")
        provider, environment, name = validation.split_path(set_path)
        unknown = set(spec) - {"agent", "secret_set", *NAMES}
        if unknown:
            raise validation.field_error(sorted(unknown)[0], "unknown field")
        async with self._core.write() as tx:
            agent = await self._agents.find(tx.conn, agent_ref)
            target = await sets_sql.get_set(tx.conn, provider, environment, name)
            if target is None or target.deleted_at is not None:
                raise NotFound(f"secret set {set_path} does not exist")
            keys = await sets_sql.current_key_names(tx.conn, target.id)
            clean = clean_constraints({**defaults(), **spec}, keys)
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
                **clean,
                uses=0,
                rate_window=0,
                rate_count=0,
                created_at=now,
                created_by=ctx.actor,
                updated_at=now,
                revoked_at=None,
            )
            await sql.insert_grant(tx.conn, row)
            await self._audit(tx, ctx, "create", row, constraints_of(row))
        return grant_view(row, agent.name)

    async def update(self, ctx: Context, grant_id: str, spec: Mapping[str, Any]) -> GrantView:
        unknown = set(spec) - set(NAMES)
        if unknown:
            raise validation.field_error(
                sorted(unknown)[0], "cannot be changed (revoke and grant anew)"
            )
        async with self._core.write() as tx:
            row = await self._live(tx, grant_id)
            clean = clean_constraints(spec, await sets_sql.current_key_names(tx.conn, row.set_id))
            merged = {**constraints_of(row), **clean}
            self._check_window(merged, new_end="expires_at" in clean)
            if clean:
                await sql.update_grant(tx.conn, row.id, updated_at=self._core.now(), **clean)
                await self._audit(tx, ctx, "update", row, {"changed": sorted(clean), **clean})
            row = await self._live(tx, grant_id)
            agent = await sql.agent_by(tx.conn, id=row.agent_id)
        return grant_view(row, agent.name if agent else None)

    async def revoke(self, ctx: Context, grant_id: str) -> GrantView:
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

    async def get(self, grant_id: str) -> GrantView:
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
    ) -> list[GrantView]:
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

    async def page(
        self,
        *,
        agent: str | None = None,
        secret_set: str | None = None,
        include_revoked: bool = False,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[GrantView]:
        """Grants oldest first, a page at a time (keyset on created_at, id)."""
        limit = clamp(limit)
        async with self._core.db.read() as conn:
            agent_id = (await self._agents.find(conn, agent)).id if agent else None
            set_id = None
            if secret_set:
                found = await sets_sql.get_set(conn, *validation.split_path(secret_set))
                if found is None:
                    return Page([], None)
                set_id = found.id
            rows = await sql.list_grants(
                conn,
                agent_id=agent_id,
                set_id=set_id,
                include_revoked=include_revoked,
                after=decode(cursor, 2),
                limit=limit + 1,
            )
            shown, after = page_of(rows, limit, lambda r: (r.created_at, r.id))
            agents = await sql.agents_by_ids(conn, {r.agent_id for r in shown})
        names = {k: a.name for k, a in agents.items()}
        return Page([grant_view(r, names.get(r.agent_id)) for r in shown], after)

    async def for_agent(self, agent_id: str) -> list[MyGrantView]:
        """An agent's own usable grants: names, key names, actions, limits; never values."""
        async with self._core.db.read() as conn:
            rows = await sql.list_grants(conn, agent_id=agent_id)
            out = []
            for row in rows:
                found = await sets_sql.get_set_by_id(conn, row.set_id)
                if found is None or found.deleted_at is not None:
                    continue
                keys = row.keys or sorted(await sets_sql.current_key_names(conn, row.set_id))
                profile = found.profile or {}
                remaining = None if row.max_uses is None else max(row.max_uses - row.uses, 0)
                out.append(
                    MyGrantView(
                        grant_id=row.id,
                        secret_set=row.set_path,
                        **{**constraints_of(row), "keys": keys},
                        uses=row.uses,
                        remaining_uses=remaining,
                        base_url=profile.get("base_url"),
                        hosts=list(profile.get("hosts") or []),
                        env=env_of(found.profile),
                    )
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
            raise validation.field_error("expires_at", "must be after not_before")
        if new_end and end and end <= self._core.now():
            raise validation.field_error("expires_at", "must be in the future")

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
