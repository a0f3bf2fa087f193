"""``LeaseAuth``: an ``httpx.Auth`` (sync and async) that sends each request with a lease.

Request mode (the default): every request gets a fresh single-use lease, taken from a
small pool that is minted in batches (``POST /v1/leases`` with ``count``) and refilled in
the background once it runs low. A lease whose remaining life is under its margin is
dropped unused, so no request leaves with a lease about to expire. Workflow mode: one
multi-use lease, replaced by a fresh one before it expires or runs out of uses.

The lease goes in ``X-Keyfob-Lease``, which the proxy reads first; whatever placeholder
key an official SDK sends in ``Authorization`` or ``x-api-key`` is dropped by the proxy.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator

import httpx

from keyfob.sdk.agent import AgentClient, AsyncAgentClient, Scope
from keyfob.sdk.errors import InvalidRequest
from keyfob.sdk.models import Lease
from keyfob.secret import Masked

LEASE_HEADER = "X-Keyfob-Lease"
BATCH = 20  # leases per mint call
LOW_WATER = 5  # refill in the background when this few are left
MARGIN = 5.0  # seconds: a lease with less life left is dropped (a quarter of its TTL at most)
MAX_BATCH = 100  # what keyfob mints in one call


Pooled = tuple[float, Lease]  # (deadline on the auth's clock, lease)


def fresh(pooled: Pooled, now: float, margin: float) -> bool:
    """Whether a pooled lease has more than its margin of life left at ``now``."""
    deadline, lease = pooled
    return deadline - now > min(margin, lease.ttl / 4)


class LeaseAuth(Masked, httpx.Auth):
    """Puts a lease for ``secret_set`` on every request (see the module docstring)."""

    shown = ("secret_set", "scope")

    def __init__(
        self,
        secret_set: str,
        *,
        agent: AgentClient | None = None,
        async_agent: AsyncAgentClient | None = None,
        scope: Scope = "request",
        batch: int = BATCH,
        low_water: int = LOW_WATER,
        ttl: int | None = None,
        max_uses: int | None = None,
        margin: float = MARGIN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if scope not in ("request", "workflow"):
            raise InvalidRequest("scope must be request or workflow")
        if not 1 <= batch <= MAX_BATCH:
            raise InvalidRequest(f"batch must be between 1 and {MAX_BATCH}")
        self.secret_set = secret_set
        self.scope = scope
        self.batch = batch
        self.low_water = min(low_water, batch - 1)
        self.ttl = ttl
        self.max_uses = max_uses
        self.margin = margin
        self._clock = clock  # monotonic seconds; injected by tests to age the pool
        self._agent = agent
        self._async_agent = async_agent
        self._pool: deque[Pooled] = deque()
        self._uses = 0  # of the current workflow lease
        self._lock = threading.Lock()
        self._refilling = False
        self._alock: asyncio.Lock | None = None
        self._task: asyncio.Task[None] | None = None

    # -- sync -------------------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        request.headers[LEASE_HEADER] = self.take().token.reveal()
        yield request

    def take(self) -> Lease:
        """The lease for the next request (minting if none is fresh)."""
        with self._lock:
            if self.scope == "workflow":
                return self._workflow_lease()
            lease = self._pop()
            if lease is None:
                self._pool.extend(self._mint())
                lease = self._pop()
            start = len(self._pool) <= self.low_water and not self._refilling
            self._refilling = self._refilling or start
        if start:
            threading.Thread(target=self._refill, name="keyfob-lease-pool", daemon=True).start()
        if lease is None:
            raise InvalidRequest(
                f"keyfob minted leases on {self.secret_set} too short-lived to use "
                "(check the grant's max_lease_ttl)"
            )
        return lease

    def _workflow_lease(self) -> Lease:
        if self._workflow_spent():
            self._pool.clear()
            start = self._clock()
            lease = self.agent.mint_lease(
                self.secret_set, scope="workflow", ttl=self.ttl, max_uses=self.max_uses
            )
            self._pool.append((start + lease.ttl, lease))
            self._uses = 0
        self._uses += 1
        return self._pool[0][1]

    def _workflow_spent(self) -> bool:
        """No workflow lease yet, or it is near expiry, or its uses are used up."""
        if not self._pool:
            return True
        current = self._pool[0]
        cap = current[1].max_uses
        return not fresh(current, self._clock(), self.margin) or (
            cap is not None and self._uses >= cap
        )

    def _pop(self) -> Lease | None:
        now = self._clock()
        while self._pool:
            pooled = self._pool.popleft()
            if fresh(pooled, now, self.margin):
                return pooled[1]
        return None

    def _mint(self) -> list[Pooled]:
        # The clock is read before the call: a deadline errs early, never late.
        start = self._clock()
        leases = self.agent.mint_lease(
            self.secret_set, scope="request", ttl=self.ttl, count=self.batch
        )
        return [(start + lease.ttl, lease) for lease in leases]

    def _refill(self) -> None:
        try:
            minted = self._mint()
        except Exception:  # the next request mints for itself, and raises there
            minted = []
        with self._lock:
            self._pool.extend(minted)
            self._refilling = False

    @property
    def agent(self) -> AgentClient:
        if self._agent is None:
            self._agent = AgentClient()
        return self._agent

    # -- async ------------------------------------------------------------------------

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        lease = await self.atake()
        request.headers[LEASE_HEADER] = lease.token.reveal()
        yield request

    async def atake(self) -> Lease:
        """``take`` for asyncio: the refill is a task on the running loop."""
        if self._alock is None:
            self._alock = asyncio.Lock()
        async with self._alock:
            if self.scope == "workflow":
                return await self._aworkflow_lease()
            lease = self._pop()
            if lease is None:
                self._pool.extend(await self._amint())
                lease = self._pop()
            if len(self._pool) <= self.low_water and (self._task is None or self._task.done()):
                self._task = asyncio.get_running_loop().create_task(self._arefill())
        if lease is None:
            raise InvalidRequest(
                f"keyfob minted leases on {self.secret_set} too short-lived to use "
                "(check the grant's max_lease_ttl)"
            )
        return lease

    async def _aworkflow_lease(self) -> Lease:
        if self._workflow_spent():
            self._pool.clear()
            start = self._clock()
            lease = await self.async_agent.mint_lease(
                self.secret_set, scope="workflow", ttl=self.ttl, max_uses=self.max_uses
            )
            self._pool.append((start + lease.ttl, lease))
            self._uses = 0
        self._uses += 1
        return self._pool[0][1]

    async def _amint(self) -> list[Pooled]:
        start = self._clock()
        leases = await self.async_agent.mint_many(
            self.secret_set, self.batch, scope="request", ttl=self.ttl
        )
        return [(start + lease.ttl, lease) for lease in leases]

    async def _arefill(self) -> None:
        try:
            minted = await self._amint()
        except Exception:  # the next request mints for itself, and raises there
            return
        self._pool.extend(minted)

    @property
    def async_agent(self) -> AsyncAgentClient:
        if self._async_agent is None:
            # The same server, token and TLS files as the sync client, when there is one.
            sync = self._agent
            if sync is None:
                self._async_agent = AsyncAgentClient()
            else:
                trust = sync._wire.trust
                self._async_agent = AsyncAgentClient(
                    sync.addr,
                    sync._wire.token,
                    ca_file=trust.ca_file,
                    client_cert=trust.client_cert,
                    client_key=trust.client_key,
                )
        return self._async_agent
