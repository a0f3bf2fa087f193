"""Where each ``http_request`` gets its lease, and how ``request_access`` waits for a person.

A grant without approval gets a fresh single-use lease per call. A grant that needs
approval gets nothing until ``request_access`` files a request and an operator approves
it; the issued lease is then kept here (in memory, never shown to the model) for the
calls it covers. Pending requests are remembered per set, so asking again keeps waiting
on the same request instead of filing another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from keyfob.sdk import (
    ApprovalDenied,
    ApprovalRequired,
    ApprovalTimeout,
    AsyncAgentClient,
    Grant,
    Lease,
    UnknownSecretSet,
)

log = logging.getLogger("keyfob.mcp")
GRANTS_TTL = 5.0  # seconds a listing of the agent's grants is reused between calls
MARGIN = 2.0  # a held lease this close to expiry is not handed out


class NeedsApproval(Exception):
    """The set's grant needs a person's approval and no approved lease is held."""


@dataclass
class Held:
    """An approved lease and the uses this server has made of it."""

    lease: Lease
    used: int = 0

    def usable(self) -> bool:
        cap = self.lease.max_uses if self.lease.scope == "workflow" else 1
        left = cap is None or self.used < cap
        return left and self.lease.remaining() > MARGIN

    def uses_left(self) -> int | None:
        cap = self.lease.max_uses if self.lease.scope == "workflow" else 1
        return None if cap is None else max(cap - self.used, 0)


@dataclass
class Access:
    agent: AsyncAgentClient
    approval_timeout: float
    _grants: tuple[float, list[Grant]] | None = None
    _held: dict[str, Held] = field(default_factory=dict)
    _pending: dict[str, str] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def grants(self, fresh: bool = False) -> list[Grant]:
        now = time.monotonic()
        if fresh or self._grants is None or now - self._grants[0] > GRANTS_TTL:
            self._grants = (now, await self.agent.grants())
        return self._grants[1]

    async def grant(self, secret_set: str) -> Grant:
        for fresh in (False, True):
            for grant in await self.grants(fresh=fresh):
                if grant.secret_set == secret_set:
                    return grant
        raise UnknownSecretSet(
            f"secret set {secret_set} is not among this agent's grants "
            "(call list_secret_sets for the sets it may use)"
        )

    def held(self, secret_set: str) -> Held | None:
        held = self._held.get(secret_set)
        if held is not None and not held.usable():
            del self._held[secret_set]
            return None
        return held

    def drop(self, secret_set: str) -> None:
        self._held.pop(secret_set, None)

    async def lease_for(self, secret_set: str) -> Lease:
        """The lease for one call: a fresh single-use one, or a use of an approved one."""
        grant = await self.grant(secret_set)
        if grant.approval != "required":
            try:
                return await self.agent.mint_lease(secret_set, scope="request")
            except ApprovalRequired as exc:
                # The grant gained approval since the listing: keyfob filed a request, so
                # request_access waits on that one rather than filing another.
                self._grants = None
                self._pending.setdefault(secret_set, exc.request_id)
                raise NeedsApproval(_ask(secret_set)) from None
        held = self.held(secret_set)
        if held is None:
            raise NeedsApproval(_ask(secret_set))
        held.used += 1
        return held.lease

    async def request(self, secret_set: str, reason: str, uses: int) -> dict[str, Any]:
        """Ask an operator for access to ``secret_set`` and wait up to the timeout."""
        grant = await self.grant(secret_set)
        if grant.approval != "required":
            return {
                "secret_set": secret_set,
                "status": "not_needed",
                "message": "this grant needs no approval: http_request can use the set now",
            }
        held = self.held(secret_set)
        if held is not None:
            return _approved(secret_set, held, None)
        async with self._lock:
            request_id = self._pending.get(secret_set)
            if request_id is None:
                request_id = await self._file(grant, secret_set, reason, uses)
        if request_id is None:  # approval was lifted meanwhile: the lease came at once
            return _approved(secret_set, self._held[secret_set], None)
        try:
            lease = await self.agent.wait_for_approval(request_id, timeout=self.approval_timeout)
        except ApprovalTimeout:
            raise ApprovalTimeout(
                f"lease request {request_id} on {secret_set} is still waiting for a person "
                f"after {self.approval_timeout:g} s; call request_access again to keep waiting"
            ) from None
        except ApprovalDenied:
            self._pending.pop(secret_set, None)
            raise ApprovalDenied(
                f"lease request {request_id} on {secret_set} was denied by an operator "
                "(or expired undecided); do not retry without a new reason"
            ) from None
        self._pending.pop(secret_set, None)
        self._held[secret_set] = Held(lease)
        return _approved(secret_set, self._held[secret_set], request_id)

    async def _file(self, grant: Grant, secret_set: str, reason: str, uses: int) -> str | None:
        if uses > 1 and "workflow" not in grant.scopes:
            raise ValueError(
                f"the grant on {secret_set} allows only single-use leases: ask with uses=1"
            )
        scope: Literal["request", "workflow"] = "workflow" if uses > 1 else "request"
        filed = await self.agent.request_approval(
            secret_set, scope=scope, max_uses=uses if uses > 1 else None, reason=reason
        )
        if filed.lease is not None:
            self._held[secret_set] = Held(filed.lease)
            return None
        log.warning("lease request %s on %s is waiting for a person", filed.id, secret_set)
        self._pending[secret_set] = filed.id
        return filed.id


def _ask(secret_set: str) -> str:
    return (
        f"the grant on {secret_set} needs a person's approval for each lease: call "
        f"request_access with secret_set={secret_set!r} and a reason, then retry"
    )


def _approved(secret_set: str, held: Held, request_id: str | None) -> dict[str, Any]:
    return {
        "secret_set": secret_set,
        "status": "approved",
        "request_id": request_id,
        "uses_left": held.uses_left(),
        "expires_in_seconds": int(held.lease.remaining()),
        "message": "http_request can use this set now; the key stays inside keyfob",
    }
