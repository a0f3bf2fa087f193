"""Applying the decision: one place where a lease use is taken, counted and audited.

Every use of a lease (the proxy's, export's) is an ``Attempt`` handed to one grouped
commit. In the batch — one locked write transaction — it reads the lease, its grant,
its agent and its set as they are now, asks ``decision.decide``, and applies the answer:
an Allow moves the lease's and grant's counters (rate window included) and appends
``lease.use`` (or ``secret_set.export``); a Deny appends ``lease.deny``. Both commit
before the caller hears back, so what is refused leaves a record and what is allowed
is durable before any value leaves. Nothing is decrypted here.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from keyfob import tokens
from keyfob.errors import KeyfobError, Unauthorized
from keyfob.profiles import Profile, metering
from keyfob.profiles.prices import PriceTable
from keyfob.store.batch import Batch, BudgetKey, Draft, SetState
from keyfob.store.records import GrantRow, LeaseRow
from keyfob.vault import budgets
from keyfob.vault.core import UNAUTHORIZED, Core
from keyfob.vault.decision import (
    EXPORT,
    PROXY,
    Allow,
    Counts,
    Now,
    Spend,
    Target,
    Use,
    decide,
)
from keyfob.vault.group_commit import GroupCommit
from keyfob.vault.leases import Leases, Minted, MintOrder, denial

PROFILES_KEPT = 1024


@dataclass(frozen=True, slots=True)
class Attempt:
    """One use asked for: the lease's digest (None: refused without a look-up, for
    ``refusal``), what the use is, and who asks."""

    digest: str | None
    action: str
    set_path: str
    method: str | None
    path: str | None
    keys: tuple[str, ...] | None  # export: the keys asked for
    request_id: str
    route: str
    client: str | None
    query: tuple[str, ...] = ()
    refusal: str = "unknown"
    token_kind: str | None = field(default=None)
    client_cert: str | None = None
    # The request body when it came in one piece (None: it streams in), and its size:
    # read only when the lease's grant or the lease has budgets.
    body: bytes | None = field(default=None, repr=False)
    size: int = 0


@dataclass(frozen=True, slots=True)
class Settlement:
    """A budgeted use's settlement: each counter's correction and the outcome record,
    committed together."""

    corrections: list[tuple[BudgetKey, int]]
    record: Draft


@dataclass(frozen=True, slots=True)
class Consumed:
    """A use taken: the lease, the set's current sealed version, its profile (proxy), and
    the keys the use reads (proxy: the injected ones; export: the ones handed out)."""

    lease: LeaseRow
    state: SetState
    profile: Profile | None
    keys: tuple[str, ...]
    reserved: budgets.Reserved | None = None
    plan: metering.Plan | None = None


class Consumer:
    """The grouped commit every lease use goes through; mints share it."""

    def __init__(
        self, core: Core, leases: Leases | None = None, prices: PriceTable | None = None
    ) -> None:
        self._core = core
        self._leases = leases
        self._profiles: dict[str, Profile | None] = {}
        self.prices = prices or PriceTable()
        self.commit: GroupCommit[
            Attempt | MintOrder | Settlement, Consumed | Minted | KeyfobError | None
        ] = GroupCommit(core, self._process)
        if leases is not None:
            leases.grouped = self.commit

    async def take(self, attempt: Attempt) -> Consumed:
        """Take one use (audited and committed before this returns) or raise the denial."""
        outcome = await self.commit.submit(attempt)
        if isinstance(outcome, KeyfobError):
            raise outcome
        assert isinstance(outcome, Consumed)
        return outcome

    def profile(self, state: SetState | None) -> Profile | None:
        """The set's injection profile, parsed once per profile text; None if unusable."""
        if state is None or not state.profile:
            return None
        text = state.profile
        if text in self._profiles:
            return self._profiles[text]
        try:
            profile: Profile | None = Profile.model_validate(json.loads(text))
        except (ValueError, ValidationError):
            profile = None
        if len(self._profiles) > PROFILES_KEPT:
            self._profiles.clear()
        self._profiles[text] = profile
        return profile

    async def close(self) -> None:
        await self.commit.close()

    # -- in the batch: synchronous, inside the locked transaction (on SQLite on the event
    # -- loop, or in the writer thread while another process holds the lock) ----------

    def _process(
        self, batch: Batch, items: Sequence[Attempt | MintOrder | Settlement]
    ) -> list[Consumed | Minted | KeyfobError | None]:
        """Settlements first (they free what later uses may reserve), then uses, then
        mints; the answers in the order of ``items``."""
        now = Now(self._core.clock.now())
        settled = [i for i in items if isinstance(i, Settlement)]
        if settled:
            batch.budget_add([c for s in settled for c in s.corrections])
            batch.append([s.record for s in settled])
        attempts = [i for i in items if isinstance(i, Attempt)]
        orders = [i for i in items if isinstance(i, MintOrder)]
        used = iter(self._uses(batch, attempts, now))
        minted = iter(self._mints(batch, orders, now))
        return [
            None
            if isinstance(i, Settlement)
            else next(used)
            if isinstance(i, Attempt)
            else next(minted)
            for i in items
        ]

    def _mints(self, batch: Batch, orders: list[MintOrder], now: Now) -> list[Minted | KeyfobError]:
        if not orders:
            return []
        if self._leases is None:
            raise RuntimeError("a mint reached a grouped commit without leases")
        return self._leases.mint_in_batch(batch, orders, now)

    def _uses(
        self, batch: Batch, attempts: list[Attempt], now: Now
    ) -> list[Consumed | KeyfobError]:
        if not attempts:
            return []
        leases = batch.leases({a.digest for a in attempts if a.digest is not None})
        grants = batch.grants({lease.grant_id for lease in leases.values()})
        agents = batch.agents({lease.agent_id for lease in leases.values()})
        sets = batch.sets({lease.set_id for lease in leases.values()})
        # Counters after uses taken earlier in this batch count against the later ones.
        taken: dict[str, int] = {}  # lease id -> uses
        windows: dict[str, tuple[int, int, int]] = {}  # grant id -> uses, window, count
        exported: set[str] = set()
        # Budget counters read in this batch, with what its earlier uses reserved.
        budget_used: dict[BudgetKey, int] = {}
        reservations: list[tuple[BudgetKey, int]] = []
        drafts: list[Draft] = []
        results: list[Consumed | KeyfobError] = []
        for attempt in attempts:
            lease = leases.get(attempt.digest) if attempt.digest is not None else None
            if lease is None:
                drafts.append(self._auth_failed(now.iso, attempt))
                results.append(Unauthorized(UNAUTHORIZED))
                continue
            grant = grants.get(lease.grant_id)
            state = sets.get(lease.set_id)
            profile = self.profile(state) if attempt.action == PROXY else None
            keys = attempt.keys
            if profile is not None:
                keys = tuple(profile.referenced_keys())
            target = Target(state.deleted, profile is not None) if state is not None else None
            counts = None
            if grant is not None and (lease.id in taken or grant.id in windows):
                uses, window, count = windows.get(
                    grant.id, (grant.uses, grant.rate_window, grant.rate_count)
                )
                counts = Counts(taken.get(lease.id, lease.uses), uses, window, count)
            use = Use(
                attempt.action,
                attempt.set_path,
                attempt.method,
                attempt.path,
                keys,
                attempt.client,
                attempt.client_cert,
            )
            spend = plan = None
            if (
                attempt.action == PROXY
                and grant is not None
                and (grant.budgets or lease.budgets)
                and profile is not None
            ):
                plan, spend = self._spend(batch, attempt, grant, lease, profile, now, budget_used)
            verdict = decide(
                lease, grant, agents.get(lease.agent_id), target, use, now, counts, spend
            )
            details: dict[str, Any] = {
                "lease_id": lease.id,
                "agent_id": lease.agent_id,
                "action": attempt.action,
                "method": attempt.method,
                "path": attempt.path,
            }
            if attempt.action == PROXY:
                details["host"] = upstream_host(profile.base_url) if profile else None
                details["query"] = list(attempt.query)
            actor = f"agent:{lease.agent_id}"
            target_name = f"secret_set:{lease.set_path}"
            rid = attempt.request_id
            if not isinstance(verdict, Allow):
                body = {**details, "reason": verdict.reason, "stage": "use"}
                refused = verdict.budget.details() if verdict.budget is not None else None
                if refused is not None:
                    body.update(refused)
                drafts.append(Draft(now.iso, actor, "lease.deny", target_name, "denied", rid, body))
                results.append(denial(verdict.reason, verdict.retry_after, refused))
                continue
            assert grant is not None
            assert state is not None
            after = verdict.counts
            taken[lease.id] = after.lease_uses
            windows[grant.id] = (after.grant_uses, after.window, after.in_window)
            if attempt.action == EXPORT:
                keys = _handed_out(state, verdict.keys, attempt.keys)
                exported.add(state.id)
                body = {**details, "keys": list(keys)}
                drafts.append(
                    Draft(now.iso, actor, "secret_set.export", target_name, "ok", rid, body)
                )
            else:
                keys = keys or ()
                body = {**details, "keys": list(keys)}
                if verdict.reserved is not None:
                    # The reservation is taken in this transaction, with this record.
                    for key, take in verdict.reserved.takes:
                        budget_used[key] = budget_used.get(key, 0) + take
                        reservations.append((key, take))
                    body["reserved"] = {
                        u: budgets.shown(u, n) for u, n in verdict.reserved.per_unit.items()
                    }
                drafts.append(Draft(now.iso, actor, "lease.use", target_name, "ok", rid, body))
            results.append(Consumed(lease, state, profile, keys, verdict.reserved, plan))
        read = {lease.id: lease.uses for lease in leases.values()}
        batch.lease_uses([(i, read[i], n) for i, n in taken.items()])
        batch.grant_uses([(i, grants[i].uses, u, w, c) for i, (u, w, c) in windows.items()])
        batch.exported(exported, now.iso)
        if reservations:
            batch.budget_add(reservations)
        batch.append(drafts)
        return results

    def _spend(
        self,
        batch: Batch,
        attempt: Attempt,
        grant: GrantRow,
        lease: LeaseRow,
        profile: Profile,
        now: Now,
        budget_used: dict[BudgetKey, int],
    ) -> tuple[metering.Plan | None, Spend]:
        """The budget counters a use touches (as earlier uses in this batch left them) and
        the request's worst case."""
        lines = budgets.lines(grant, lease, now.iso)
        missing = [line.key for line in lines if line.key not in budget_used]
        if missing:
            budget_used.update(batch.budget_used(missing))
        plan = metering.plan(
            profile, attempt.method or "", attempt.path or "", attempt.body, attempt.size
        )
        need = budgets.need(plan, attempt.size, self.prices)
        return plan, Spend(lines, {line.key: budget_used[line.key] for line in lines}, need)

    def _auth_failed(self, ts: str, attempt: Attempt) -> Draft:
        return Draft(
            ts,
            "anonymous",
            "auth.failed",
            f"route:{attempt.route}"[:300],
            "denied",
            attempt.request_id,
            {"reason": attempt.refusal, "token_kind": attempt.token_kind, "client": attempt.client},
        )


def _handed_out(
    state: SetState, allowed: list[str] | None, asked: tuple[str, ...] | None
) -> tuple[str, ...]:
    """The keys an export hands out: the current version's, allowed, and asked for."""
    pool = {k["name"] for k in json.loads(state.keys_json)}
    if allowed is not None:
        pool &= set(allowed)
    if asked is not None:
        pool &= set(asked)
    return tuple(sorted(pool))


@functools.lru_cache(maxsize=1024)
def upstream_host(base_url: str) -> str:
    """The host (and port) of a profile's base URL as audit records name it, parsed once
    per URL rather than twice per proxied request."""
    return urlsplit(base_url).netloc


def token_kind(token: str | None) -> str | None:
    """The prefix of a token (for an ``auth.failed`` record), never the token."""
    return next((p for p in tokens.PREFIXES if token and token.startswith(p)), None)
