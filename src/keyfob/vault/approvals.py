"""Approval of lease requests: operators approve or deny, the agent collects the lease.

A request under a grant with ``approval: required`` waits as ``pending``; once
approved, the agent's next poll issues the lease (its token shown that once). Pending
and approved requests expire after ``APPROVAL_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from keyfob.clock import monotonic
from keyfob.errors import Conflict, KeyfobError, NotFound, Unauthorized
from keyfob.store import access as sql
from keyfob.vault.context import Context
from keyfob.vault.core import UNAUTHORIZED, Core
from keyfob.vault.leases import (
    MAX_WAIT,
    IssuedLease,
    LeaseRequestView,
    Leases,
    denial,
    request_view,
)
from keyfob.vault.operators import Principal
from keyfob.vault.paging import Page, clamp, decode, page_of


class Approvals:
    def __init__(self, core: Core, leases: Leases) -> None:
        self._core = core
        self._leases = leases

    async def requests(self, status: str | None = None) -> list[LeaseRequestView]:
        """Requests by their status as seen now (``expired`` is computed, not stored)."""
        async with self._core.db.read() as conn:
            rows = await sql.list_requests(conn)
        now = self._core.now()
        views = [request_view(r, now) for r in rows]
        return [v for v in views if status is None or v.status == status]

    async def waiting(
        self, *, cursor: str | None = None, limit: int = 50
    ) -> Page[LeaseRequestView]:
        """Requests still waiting for a decision, oldest first, a page at a time (keyset)."""
        limit = clamp(limit)
        now = self._core.now()
        async with self._core.db.read() as conn:
            rows = await sql.waiting_requests(conn, now, after=decode(cursor, 2), limit=limit + 1)
        shown, after = page_of(rows, limit, lambda r: (r.created_at, r.id))
        return Page([request_view(r, now) for r in shown], after)

    async def decide(self, ctx: Context, request_id: str, approve: bool) -> LeaseRequestView:
        async with self._core.write() as tx:
            row = await sql.request_by_id(tx.conn, request_id)
            if row is None:
                raise NotFound(f"lease request {request_id} does not exist")
            now = self._core.now()
            status = request_view(row, now).status
            if status != "pending":
                raise Conflict(f"lease request {request_id} is {status}")
            status = "approved" if approve else "denied"
            await sql.decide_request(
                tx.conn,
                request_id,
                from_status="pending",
                to_status=status,
                decided_at=now,
                decided_by=ctx.actor,
            )
            await self._leases.audit(
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
        self,
        agent: Principal,
        ctx: Context,
        request_id: str,
        wait: float = 0,
        route: str = "/v1/me/lease-requests",
    ) -> LeaseRequestView:
        """The agent's view of its request; once approved, issues the lease (token once)."""
        # The wait is real elapsed time, not vault time: an injected clock must not stretch it.
        deadline = monotonic() + min(max(wait, 0), MAX_WAIT)
        while True:
            async with self._core.db.read() as conn:
                row = await sql.request_by_id(conn, request_id)
            if row is None or row.agent_id != agent.id:
                raise NotFound(f"lease request {request_id} does not exist")
            view = request_view(row, self._core.now())
            if view.status != "pending" or monotonic() >= deadline:
                break
            await asyncio.sleep(0.25)
        if view.status != "approved":
            return view
        refused: KeyfobError | None = None
        lease: IssuedLease | None = None
        async with self._core.write() as tx:
            # The agent and its token are checked in the transaction that issues.
            if not await self._leases.still_valid(tx, agent, ctx, route):
                refused = Unauthorized(UNAUTHORIZED)
            else:
                grant = await self._leases.live_grant(tx, row.grant_id)
                reason = self._leases.mint_refusal(grant, row.scope)
                if grant is None or reason is not None:
                    refused = denial(reason or "not_granted")
                    await sql.decide_request(
                        tx.conn, row.id, from_status="approved", to_status="denied"
                    )
                    await self._leases.audit(
                        tx,
                        ctx,
                        "lease.deny",
                        row.set_path,
                        "denied",
                        {"reason": reason, "agent_id": agent.id, "stage": "issue"},
                    )
                else:
                    lease = await self._leases.issue(
                        tx, ctx, grant, row.scope, row.ttl, row.max_uses, row.id
                    )
                    if not await sql.decide_request(
                        tx.conn,
                        row.id,
                        from_status="approved",
                        to_status="issued",
                        lease_id=lease.lease.id,
                    ):
                        raise Conflict(f"lease request {request_id} was already issued")
        if refused is not None:
            raise refused
        assert lease is not None
        return replace(view, status="issued", lease_id=lease.lease.id, lease=lease)
