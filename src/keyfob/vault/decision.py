"""The one lease-use decision: may this lease be used for this request, now?

``decide`` is pure: plain rows and values in, ``Allow`` or ``Deny`` out, no I/O. The
proxy, export and the dry run (``POST /v1/leases/check``) all call it, and so must every
future way of using a lease; ``vault/consume.py`` applies an ``Allow`` (the use, the
grant's counters, the audit record) in one grouped commit. Minting asks
``mint_refusal``, which shares the grant's rules; renewing a workflow lease asks
``renew_refusal``, which asks ``mint_refusal``.

The grant is read as it is *now*: narrowing it (fewer actions, keys, methods, paths or
scopes, a lower lease TTL, lease use cap or rate limit) applies to leases already
minted under it, at their next use. The agent is read now too: a disabled or deleted
agent's leases stop at once, and an agent bound to networks (``allowed_networks``) has
its leases refused from any other source address.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from keyfob.clock import isoformat
from keyfob.store.records import AgentRow, GrantRow, LeaseRow
from keyfob.vault import budgets, rules

PROXY = "proxy"
EXPORT = "export"


class Now:
    """One moment as the rules read it: RFC 3339 text, the epoch second, and "TTL ago"."""

    __slots__ = ("_ago", "_moment", "iso", "second")

    def __init__(self, moment: datetime) -> None:
        self._moment = moment
        self.iso = isoformat(moment)
        self.second = int(moment.timestamp())
        self._ago: dict[int, str] = {}

    @property
    def moment(self) -> datetime:
        return self._moment

    def ago(self, seconds: int) -> str:
        """The moment ``seconds`` before this one, as text (memoised: grants share TTLs)."""
        text = self._ago.get(seconds)
        if text is None:
            text = self._ago[seconds] = isoformat(self._moment - timedelta(seconds=seconds))
        return text


@dataclass(frozen=True, slots=True)
class Use:
    """What a request asks of a lease. ``path`` is normalised (``keyfob.paths``); ``keys``
    are the keys it reads (None: every key the lease allows)."""

    action: str
    set_path: str | None = None
    method: str | None = None
    path: str | None = None
    keys: tuple[str, ...] | None = None
    client: str | None = None  # the request's source address (after trusted proxies)
    client_cert: str | None = None  # SHA-256 of its TLS client certificate, if any


class Target(NamedTuple):
    """The secret set as a use sees it."""

    deleted: bool
    injectable: bool  # it has a usable injection profile (the proxy needs one)


class Spend(NamedTuple):
    """A budgeted use's counters as they are now, and what the request may spend."""

    lines: list[budgets.Line]
    used: dict[tuple[str, str, str], int]
    need: budgets.Need


class Counts(NamedTuple):
    """The counters a use moves: the lease's uses, the grant's uses and rate window."""

    lease_uses: int
    grant_uses: int
    window: int  # epoch minute
    in_window: int


@dataclass(frozen=True, slots=True)
class Allow:
    keys: list[str] | None  # the keys the use may touch (None: all of the set's)
    counts: Counts  # after this use
    reserved: budgets.Reserved | None = None  # what its budgets reserve for it


@dataclass(frozen=True, slots=True)
class Deny:
    reason: str  # one of ``leases.REASONS``
    retry_after: int | None = None
    budget: budgets.Refused | None = None  # the budget that refused it


def spent(uses: int, cap: int | None) -> bool:
    """The use-count rule: a cap of ``cap`` uses is spent after ``cap`` of them."""
    return cap is not None and uses >= cap


def counts_of(lease: LeaseRow, grant: GrantRow) -> Counts:
    """The counters as the rows hold them (no earlier use in the same commit)."""
    return Counts(lease.uses, grant.uses, grant.rate_window, grant.rate_count)


def decide(
    lease: LeaseRow,
    grant: GrantRow | None,
    agent: AgentRow | None,
    target: Target | None,
    use: Use,
    now: Now,
    counts: Counts | None = None,
    spend: Spend | None = None,
) -> Allow | Deny:
    """Allow ``use`` of ``lease`` (with the counters after it) or Deny it, and why.

    ``counts`` are the counters after uses taken earlier in the same grouped commit
    (default: as the rows hold them). A proxy use of a budgeted grant or lease needs
    ``spend``: without it, it is refused (a budget that cannot be checked holds)."""
    if use.set_path is not None and use.set_path != lease.set_path:
        return Deny("not_granted")
    if lease.revoked_at is not None or grant is None or grant.revoked_at is not None:
        return Deny("revoked")
    if target is None or target.deleted:
        return Deny("revoked")
    if agent is None or agent.disabled_at is not None:
        return Deny("agent_disabled")
    if not rules.network_allowed(agent.allowed_networks, use.client):
        return Deny("network_not_allowed")
    if not rules.certificate_matches(agent.client_cert_sha256, use.client_cert):
        return Deny("certificate_required")
    iso = now.iso
    if (
        lease.expires_at <= iso
        or (grant.expires_at is not None and grant.expires_at <= iso)
        # A lower max_lease_ttl shortens the leases already minted under the grant.
        or term_start(lease) <= now.ago(grant.max_lease_ttl)
    ):
        return Deny("expired")
    if grant.not_before is not None and grant.not_before > iso:
        return Deny("not_yet_valid")
    if counts is None:
        counts = counts_of(lease, grant)
    cap = lease.max_uses
    if grant.max_lease_uses is not None and (cap is None or grant.max_lease_uses < cap):
        cap = grant.max_lease_uses
    if spent(counts.lease_uses, cap):
        return Deny("exhausted")
    if lease.scope not in grant.scopes:
        return Deny("scope_not_allowed")
    action = use.action
    if action not in lease.actions or action not in grant.actions:
        return Deny("action_not_allowed")
    allowed = allowed_keys(lease, grant)
    if use.keys is not None and allowed is not None and not set(use.keys) <= set(allowed):
        return Deny("key_not_allowed")
    if use.method is not None and not rules.method_allowed(grant.methods, use.method):
        return Deny("method_not_allowed")
    if use.path is not None and not rules.path_allowed(grant.paths, use.path):
        return Deny("path_not_allowed")
    if spent(counts.grant_uses, grant.max_uses):
        return Deny("exhausted")
    if action == PROXY and not target.injectable:
        return Deny("no_profile")
    # The rate rule: at most rate_limit uses per epoch minute, across the grant's leases.
    # Windows only move forward: a node whose clock lags counts into the newer window.
    minute = now.second // 60
    window, in_window = counts.window, counts.in_window
    if window < minute:
        window, in_window = minute, 0
    if grant.rate_limit is not None and in_window >= grant.rate_limit:
        return Deny("rate_limited", 60 - now.second % 60)
    reserved = None
    if action == PROXY and (grant.budgets or lease.budgets):
        if spend is None:
            return Deny("budget_exceeded")
        judged = budgets.judge(spend.lines, spend.used, spend.need)
        if isinstance(judged, budgets.Refused):
            return Deny("budget_exceeded", _retry(judged.line, now), judged)
        reserved = judged
    return Allow(
        allowed,
        Counts(counts.lease_uses + 1, counts.grant_uses + 1, window, in_window + 1),
        reserved,
    )


def _retry(line: budgets.Line, now: Now) -> int | None:
    """Seconds until a day's budget starts afresh (a month's or total's: no hint)."""
    if line.window != "day":
        return None
    return 86_400 - now.second % 86_400


def mint_refusal(grant: GrantRow | None, scope: str, now: Now) -> str | None:
    """Why a lease of ``scope`` cannot be minted under ``grant`` now, or None."""
    if grant is None or grant.revoked_at is not None:
        return "not_granted"
    if grant.not_before is not None and grant.not_before > now.iso:
        return "not_yet_valid"
    if grant.expires_at is not None and grant.expires_at <= now.iso:
        return "expired"
    if scope not in grant.scopes:
        return "scope_not_allowed"
    if spent(grant.uses, grant.max_uses):
        return "exhausted"
    return None


def term_start(lease: LeaseRow) -> str:
    """When the lease's current term began: its mint, or its last renewal."""
    return lease.renewed_at or lease.created_at


def renew_refusal(lease: LeaseRow, grant: GrantRow | None, now: Now) -> str | None:
    """Why ``lease`` cannot be renewed under ``grant`` now, or None: it must still be
    live (a renewal never revives a lease), a workflow lease, and the grant must pass the
    mint rules without a human's approval (an approved lease is not stretched unseen)."""
    if lease.revoked_at is not None or (grant is not None and grant.revoked_at is not None):
        return "revoked"
    if lease.expires_at <= now.iso or (
        grant is not None and term_start(lease) <= now.ago(grant.max_lease_ttl)
    ):
        return "expired"
    cap = lease.max_uses
    if grant is not None and grant.max_lease_uses is not None:
        cap = grant.max_lease_uses if cap is None else min(cap, grant.max_lease_uses)
    if spent(lease.uses, cap):
        return "exhausted"
    refusal = mint_refusal(grant, lease.scope, now)
    if refusal is not None:
        return refusal
    if lease.scope != "workflow" or (grant is not None and grant.approval == "required"):
        return "not_renewable"
    return None


def allowed_keys(lease: LeaseRow, grant: GrantRow) -> list[str] | None:
    """The keys a use may touch: the lease's, narrowed by its grant's current allowlist."""
    if grant.keys is None:
        return lease.keys
    if lease.keys is None:
        return grant.keys
    return sorted(set(lease.keys) & set(grant.keys))
