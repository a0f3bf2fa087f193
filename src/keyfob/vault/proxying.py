"""The proxy's use of a lease: decided, counted and audited in a grouped commit, then opened.

``begin`` takes one use of the lease for one upstream request through the one consumer
(``consume.py``, which asks ``decision.decide``; a budgeted use reserves its worst case
there); only after that commit does it decrypt the set's current version and hand the
values back, wrapped in ``Secret``. ``tap`` meters the answer (``profiles/taps.py``);
``finish`` queues the ``proxy.request`` outcome record with the metered usage, and for a
budgeted use settles its reservation in the same commit as that record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyfob import tokens
from keyfob.profiles import Profile, metering
from keyfob.profiles.prices import cost_nano, usd
from keyfob.profiles.taps import Tap, Usage
from keyfob.secret import SECRET, Masked, Secret
from keyfob.store.batch import Draft, SetState
from keyfob.vault import budgets
from keyfob.vault.consume import Attempt, Consumer, Settlement, token_kind, upstream_host
from keyfob.vault.core import Core
from keyfob.vault.decision import PROXY

log = logging.getLogger("keyfob.proxy")


@dataclass(frozen=True, slots=True)
class ProxyRequest(Masked):
    """What the proxy knows of a request before any lease is checked."""

    token: str | None = field(metadata=SECRET)
    set_path: str
    method: str
    path: str
    query_names: tuple[str, ...]
    request_id: str
    client: str | None
    route: str
    client_cert: str | None = None  # SHA-256 of the TLS client certificate, if any
    # The body when it came in one piece (for a budget's worst case), and its size.
    body: bytes | None = field(default=None, metadata=SECRET)
    size: int = 0


@dataclass(frozen=True, slots=True)
class ProxyUse(Masked):
    """A consumed use: where the request may go, how the keys go in, and the values."""

    lease_id: str
    agent_id: str
    set_id: str
    set_path: str
    version: int
    profile: Profile
    keys: tuple[str, ...]
    values: Mapping[str, Secret[str]]
    request: ProxyRequest
    started: float
    grant_id: str = ""
    reserved: budgets.Reserved | None = None
    plan: metering.Plan | None = None


class Proxying:
    def __init__(self, core: Core, consumer: Consumer) -> None:
        self._core = core
        self._consumer = consumer
        self._settling: set[asyncio.Task[None]] = set()

    async def begin(self, request: ProxyRequest) -> ProxyUse:
        """Take one use for ``request`` (audited before this returns) or raise the denial."""
        started = time.monotonic()
        token = request.token
        digest = None
        refusal = "unknown"
        if not token or not tokens.looks_like(token, tokens.LEASE):
            # Refused without a look-up, but still recorded before it is answered.
            refusal = "missing" if not token else "malformed"
        else:
            digest = tokens.digest(self._core.ring.system.token_key, token)
        consumed = await self._consumer.take(
            Attempt(
                digest,
                PROXY,
                request.set_path,
                request.method,
                request.path,
                None,
                request.request_id,
                request.route,
                request.client,
                request.query_names,
                refusal,
                token_kind(token) if digest is None else tokens.LEASE,
                request.client_cert,
                request.body,
                request.size,
            )
        )
        state = consumed.state
        values = await self._open(state)
        lease = consumed.lease
        assert consumed.profile is not None
        plan = consumed.plan
        if plan is None:
            plan = metering.plan(
                consumed.profile, request.method, request.path, request.body, request.size
            )
        return ProxyUse(
            lease.id,
            lease.agent_id,
            lease.set_id,
            lease.set_path,
            state.version,
            consumed.profile,
            consumed.keys,
            values,
            request,
            started,
            lease.grant_id,
            consumed.reserved,
            plan,
        )

    def tap(self, use: ProxyUse, content_type: str) -> Tap | None:
        """The meter of this answer (None: the API is metered by requests and bytes)."""
        if use.plan is None:
            return None
        allow = budgets.allowance(use.reserved) if use.reserved is not None else None
        return Tap(use.plan, content_type, allow)

    def finish(self, use: ProxyUse, outcome: str, tap: Tap | None = None, **details: Any) -> None:
        """Queue the ``proxy.request`` record of what happened upstream (nobody waits);
        a budgeted use's settlement commits with it."""
        request = use.request
        body = {
            "lease_id": use.lease_id,
            "grant_id": use.grant_id,
            "method": request.method,
            "host": upstream_host(use.profile.base_url),
            "path": request.path,
            "duration_ms": round((time.monotonic() - use.started) * 1000, 3),
            **details,
        }
        usage = None
        if tap is not None:
            usage = tap.usage()
            metered = usage
            if usage is None and tap.stream and (tap.cut or outcome != "ok"):
                # Cut off mid-stream: what was delivered is what the record can say.
                metered = tap.delivered()
            body["usage"] = self._usage(metered, tap, usage is None)
        draft = Draft(
            self._core.now(),
            f"agent:{use.agent_id}",
            "proxy.request",
            f"secret_set:{use.set_path}",
            outcome,
            request.request_id,
            body,
        )
        if use.reserved is None:
            self._consumer.commit.record(draft)
            return
        cut = tap is not None and tap.cut
        settle_on = usage
        if settle_on is None and tap is not None and tap.stream and not cut:
            settle_on = tap.delivered()  # broke off: settled on what was delivered
        size = int(details.get("bytes_up") or 0) + int(details.get("bytes_down") or 0)
        spend = budgets.spent(use.reserved, settle_on, requests=1, size=size, cut=cut)
        body["settled"] = {u: budgets.shown(u, n) for u, n in spend.items()}
        settlement = Settlement(budgets.corrections(use.reserved, spend), draft)
        task = asyncio.ensure_future(self._settle(settlement))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, settlement: Settlement) -> None:
        try:
            await self._consumer.commit.submit(settlement)
        except Exception as exc:  # the reservation stays taken: the budget errs safe
            log.error("budget settlement failed: %s", type(exc).__name__)

    async def settled(self) -> None:
        """Wait for the settlements under way (tests, shutdown)."""
        while self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)

    def _usage(self, usage: Usage | None, tap: Tap, missing: bool) -> dict[str, Any]:
        """The audit record's metering: counts, cost and price version, never content."""
        out: dict[str, Any] = {"meter": tap.plan.meter, "endpoint": tap.plan.endpoint}
        if usage is not None:
            out.update(usage.as_dict())
            price = self._consumer.prices.lookup(usage.model)
            if price is not None:
                nano = cost_nano(
                    price, usage.input_tokens, usage.output_tokens, usage.cached_tokens
                )
                out["cost_usd"] = usd(nano)
        out["price_version"] = self._consumer.prices.version
        if tap.plan.asked_output is not None and tap.plan.asked_output > tap.plan.max_output:
            out["max_tokens_capped"] = tap.plan.max_output
        if missing:
            out["flagged"] = "usage_missing"
        if tap.malformed:
            out["flagged"] = "usage_malformed"
        if tap.cut:
            out["cut"] = "budget"
        return out

    async def _open(self, state: SetState) -> dict[str, Secret[str]]:
        entries = await self._core.open_entries(
            state.id, state.version, state.kek_term, state.wrapped_dek, state.ciphertext
        )
        return {k: Secret(v) for k, v in entries.items()}
