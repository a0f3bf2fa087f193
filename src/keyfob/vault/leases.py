"""Leases: short-lived capability tokens an agent mints under a grant; listing, revoking.

Approval lives in ``approvals.py``; using a lease is decided in ``decision.py`` and
applied in ``consume.py``. The agent, its token and the grant are checked inside the
transaction that mints. A refusal is
audited in its own committed transaction and raised after, so every denial leaves a
record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from keyfob import tokens
from keyfob.clock import isoformat as _iso
from keyfob.clock import parse_iso
from keyfob.errors import (
    BudgetExceeded,
    Conflict,
    Forbidden,
    KeyfobError,
    NotFound,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
)
from keyfob.secret import SECRET, Masked, Secret
from keyfob.store import Tx
from keyfob.store import access as sql
from keyfob.store import secrets as sets_sql
from keyfob.store.batch import Batch, Draft, NewLeases
from keyfob.store.records import GrantRow, LeaseRequestRow, LeaseRow
from keyfob.vault import validation
from keyfob.vault.context import SYSTEM, Context
from keyfob.vault.core import UNAUTHORIZED, Core
from keyfob.vault.decision import Now, mint_refusal, renew_refusal, spent
from keyfob.vault.grant_checks import clean_budgets
from keyfob.vault.grants import SCOPES
from keyfob.vault.operators import Principal
from keyfob.vault.paging import Page, clamp, decode, page_of
from keyfob.vault.rules import agent_refusal

if TYPE_CHECKING:
    from keyfob.vault.group_commit import GroupCommit

REQUEST_TTL = 60
WORKFLOW_TTL = 900
APPROVAL_TIMEOUT = 600
MAX_WAIT = 30
MAX_PENDING = 20  # lease requests waiting for approval, per agent and per grant
MAX_COUNT = 100  # leases one batch mint may ask for
PRUNE_BATCH = 500  # leases deleted per transaction once past their retention
NOT_GRANTED = "no usable grant for this agent and secret set"


class _View:
    """A frozen view that becomes JSON as it is: its fields, in order."""

    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        names = _NAMES.get(type(self))
        if names is None:
            names = _NAMES[type(self)] = tuple(f.name for f in fields(self))  # type: ignore[arg-type]
        return {name: getattr(self, name) for name in names}


_NAMES: dict[type, tuple[str, ...]] = {}  # a view's field names (``fields`` is slow)


@dataclass(frozen=True, slots=True)
class LeaseView(_View):
    """A lease as operators and its agent see it (never its token)."""

    id: str
    agent_id: str
    grant_id: str
    secret_set: str
    scope: str
    actions: list[str]
    keys: list[str] | None
    max_uses: int | None
    uses: int
    status: str  # active, expired, revoked or exhausted
    created_at: str
    expires_at: str
    revoked_at: str | None
    revoke_reason: str | None
    budgets: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class IssuedLease(Masked):
    """A lease just minted, with its token: shown this once, never stored."""

    lease: LeaseView
    token: Secret[str] = field(metadata=SECRET)
    ttl: int


@dataclass(frozen=True, slots=True)
class IssuedBatch(Masked):
    """The leases of one batch mint, with their tokens: shown this once, never stored.

    They differ only in id and token, so the batch holds one view (its first lease's)
    and the ids and tokens in order, not ``count`` objects (``leases`` builds those)."""

    lease: LeaseView  # the first lease; each other one is this with its own id
    ids: tuple[str, ...]
    tokens: Secret[tuple[str, ...]] = field(metadata=SECRET)
    ttl: int

    def __len__(self) -> int:
        return len(self.ids)

    def leases(self) -> list[IssuedLease]:
        """Each lease of the batch, as a single mint issues it."""
        first = self.lease
        return [
            IssuedLease(replace(first, id=i), Secret(token), self.ttl)
            for i, token in zip(self.ids, self.tokens.reveal(), strict=True)
        ]


@dataclass(frozen=True, slots=True)
class LeaseRequestView(_View):
    """A lease request waiting for approval (or decided); ``lease`` once it is issued."""

    id: str
    agent_id: str
    grant_id: str
    secret_set: str
    scope: str
    ttl: int
    max_uses: int | None
    status: str  # pending, approved, denied, issued or expired
    created_at: str
    expires_at: str
    decided_at: str | None
    decided_by: str | None
    lease_id: str | None
    lease: IssuedLease | None = None
    reason: str | None = None  # why the agent asks, shown to the approver


@dataclass(frozen=True, slots=True)
class RevokedLeases:
    revoked: int
    lease_ids: list[str]


def lease_view(row: LeaseRow, now: str) -> LeaseView:
    if row.revoked_at:
        status = "revoked"
    elif row.expires_at <= now:
        status = "expired"
    elif spent(row.uses, row.max_uses):
        status = "exhausted"
    else:
        status = "active"
    return LeaseView(
        row.id,
        row.agent_id,
        row.grant_id,
        row.set_path,
        row.scope,
        row.actions,
        row.keys,
        row.max_uses,
        row.uses,
        status,
        row.created_at,
        row.expires_at,
        row.revoked_at,
        row.revoke_reason,
        row.budgets,
    )


def request_view(row: LeaseRequestRow, now: str) -> LeaseRequestView:
    status = row.status
    # Approval must be collected in time too: an approved request left lying expires.
    if status in ("pending", "approved") and row.expires_at <= now:
        status = "expired"
    return LeaseRequestView(
        row.id,
        row.agent_id,
        row.grant_id,
        row.set_path,
        row.scope,
        row.ttl,
        row.max_uses,
        status,
        row.created_at,
        row.expires_at,
        row.decided_at,
        row.decided_by,
        row.lease_id,
        reason=row.reason,
    )


REASONS = {
    "not_granted": NOT_GRANTED,
    "revoked": "the lease has been revoked",
    "expired": "the lease or its grant has expired",
    "not_yet_valid": "the grant is not valid yet",
    "exhausted": "the lease or its grant has no uses left",
    "scope_not_allowed": "the grant does not allow leases of this scope",
    "action_not_allowed": "the grant does not allow this action",
    "key_not_allowed": "the lease does not cover those keys",
    "method_not_allowed": "the grant does not allow this HTTP method",
    "path_not_allowed": "the grant does not allow this path",
    "rate_limited": "the grant's rate limit is reached; retry after Retry-After seconds",
    "no_profile": "the secret set has no usable injection profile; an operator must set one",
    "network_not_allowed": "the agent may not use its leases from this network",
    "certificate_required": "the agent must use its leases over TLS with its client certificate",
    "agent_disabled": "the agent is disabled or deleted",
    "too_many_pending": "too many lease requests are waiting for approval; retry later",
    "approval_required": "the grant needs approval for each lease: mint them one at a time",
    "not_renewable": "only workflow leases under a grant without approval are renewed",
    "budget_exceeded": "a budget of the grant or lease has no room for this request",
}


def _looser(lease: list[dict[str, Any]] | None, grant: list[dict[str, Any]] | None) -> str | None:
    """Why a lease's budgets are looser than its grant's (same unit and window), or None."""
    held = {(b["unit"], b["window"]): b["limit"] for b in grant or ()}
    for b in lease or ():
        cap = held.get((b["unit"], b["window"]))
        if cap is not None and b["limit"] > cap:
            return f"the {b['unit']} {b['window']} budget may not exceed the grant's ({cap})"
    return None


def denial(
    reason: str, retry_after: int | None = None, budget: dict[str, Any] | None = None
) -> KeyfobError:
    """The error an agent sees for a refusal; the same body for the same reason everywhere."""
    if reason == "budget_exceeded":
        return BudgetExceeded(
            REASONS[reason], reason=reason, retry_after=retry_after, **(budget or {})
        )
    if reason in ("rate_limited", "too_many_pending"):
        return TooManyRequests(REASONS[reason], reason=reason, retry_after=retry_after)
    return Forbidden(REASONS.get(reason, "denied"), reason=reason)


@dataclass(frozen=True, slots=True)
class AgentClaim(Masked):
    """An agent token's digest, not looked up yet: the mint's grouped commit finds its
    agent and checks it (unknown or disabled: 401, audited as ``auth.failed``), which
    spares a mint the separate read an authenticated ``Principal`` costs."""

    digest: str = field(metadata=SECRET)


@dataclass(frozen=True, slots=True)
class MintOrder(Masked):
    """A mint asked for, decided inside a grouped commit (``Leases.mint_in_batch``)."""

    agent_id: str | None  # None: whichever agent holds the token (an ``AgentClaim``)
    # The digest of the agent's token (None: look up by id).
    credential: str | None = field(metadata=SECRET)
    set_path: str
    scope: str
    ttl: int | None
    max_uses: int | None
    count: int
    single: bool  # a plain mint, which may file a lease request; a batch mint may not
    request_id: str
    client: str | None
    route: str
    budgets: list[dict[str, Any]] | None = None
    client_cert: str | None = None


@dataclass(frozen=True, slots=True)
class Minted:
    """The leases a grouped mint issued; empty when the grant needs approval (the mint
    then goes the transactional way, which files a lease request)."""

    leases: list[IssuedLease]
    agent: Principal | None = None  # who minted (for the transactional path)
    batch: IssuedBatch | None = None  # a batch mint's leases (``leases`` is then empty)


class Leases:
    def __init__(self, core: Core, max_pending: int = MAX_PENDING) -> None:
        self._core = core
        self._max_pending = max_pending
        # The grouped commit lease uses go through (``Consumer.commit``); mints share it.
        self.grouped: GroupCommit[Any, Any] | None = None

    # -- minting ----------------------------------------------------------------------

    async def mint(
        self,
        agent: Principal | AgentClaim,
        ctx: Context,
        *,
        secret_set: str,
        scope: str = "request",
        ttl: int | None = None,
        max_uses: int | None = None,
        route: str = "/v1/leases",
        request_reason: str | None = None,
        budgets: list[dict[str, Any]] | None = None,
    ) -> IssuedLease | LeaseRequestView:
        """A lease with its token, or a pending request when the grant needs approval
        (``request_reason``, the agent's words to the approver, is kept with it)."""
        path = self._checked(secret_set, scope, ttl, max_uses, 1)
        budgets = clean_budgets(budgets) if budgets is not None else None
        if self.grouped is not None:
            minted = await self._grouped(
                agent, ctx, path, scope, ttl, max_uses, None, route, budgets
            )
            if minted.leases:
                return minted.leases[0]
            assert minted.agent is not None
            agent = minted.agent
            ctx = Context(agent.actor, ctx.request_id, ctx.client)
        if not isinstance(agent, Principal):
            raise RuntimeError("an unchecked agent token needs the grouped commit")
        if budgets is not None:
            # A lease request does not carry budgets: approved leases take the grant's.
            raise invalid("budgets", "a grant that needs approval takes no lease budgets")
        # The grant needs approval (or no grouped commit runs): one transaction that files
        # the request, checking every rule again.
        refused: KeyfobError | None = None
        result: IssuedLease | LeaseRequestView | None = None
        async with self._core.write() as tx:
            # The agent, its token and the grant are read inside the transaction that
            # mints: once a disable, rotation or revocation has committed, no mint passes.
            if not await self.still_valid(tx, agent, ctx, route):
                refused = Unauthorized(UNAUTHORIZED)
            else:
                grant = await self._grant_for(tx, agent, path)
                reason = mint_refusal(grant, scope, Now(self._core.clock.now()))
                if grant is not None and reason is None and grant.approval == "required":
                    reason = await self._pending_refusal(tx, agent, grant)
                if reason is not None or grant is None:
                    refused = denial(reason or "not_granted")
                    await self.audit(
                        tx,
                        ctx,
                        "lease.deny",
                        path,
                        "denied",
                        {"reason": reason or "not_granted", "agent_id": agent.id, "stage": "mint"},
                    )
                else:
                    lease_ttl = self._ttl(grant, scope, ttl, self._core.clock.now())
                    uses = 1 if scope == "request" else _cap(max_uses, grant.max_lease_uses)
                    if grant.approval == "required":
                        result = await self._request(
                            tx, ctx, agent, grant, scope, lease_ttl, uses, request_reason
                        )
                    else:
                        result = await self.issue(tx, ctx, grant, scope, lease_ttl, uses, None)
        if refused is not None:
            raise refused
        assert result is not None
        return result

    async def mint_many(
        self,
        agent: Principal | AgentClaim,
        ctx: Context,
        *,
        secret_set: str,
        count: int,
        scope: str = "request",
        ttl: int | None = None,
        max_uses: int | None = None,
        route: str = "/v1/leases",
        budgets: list[dict[str, Any]] | None = None,
    ) -> IssuedBatch:
        """``count`` leases, each with its own token, in one grouped commit and under one
        ``lease.mint`` record. A grant that needs approval refuses (403
        ``approval_required``): approval is per lease."""
        path = self._checked(secret_set, scope, ttl, max_uses, count)
        if self.grouped is None:
            raise RuntimeError("batch mint needs the grouped commit")
        budgets = clean_budgets(budgets) if budgets is not None else None
        minted = await self._grouped(agent, ctx, path, scope, ttl, max_uses, count, route, budgets)
        assert minted.batch is not None
        return minted.batch

    def _checked(
        self, secret_set: str, scope: str, ttl: int | None, max_uses: int | None, count: int
    ) -> str:
        """The set's path; refuses a malformed mint before anything is looked up."""
        path = "/".join(validation.split_path(secret_set))
        if scope not in SCOPES:
            raise invalid("scope", "request or workflow")
        if ttl is not None and (not isinstance(ttl, int) or ttl < 1):
            raise invalid("ttl", "seconds, at least 1")
        if max_uses is not None and (not isinstance(max_uses, int) or max_uses < 1):
            raise invalid("max_uses", "at least 1")
        if scope == "request" and max_uses not in (None, 1):
            raise invalid("max_uses", "request-scoped leases are single use")
        if not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
            raise invalid("count", f"between 1 and {MAX_COUNT}")
        return path

    async def _grouped(
        self,
        agent: Principal | AgentClaim,
        ctx: Context,
        path: str,
        scope: str,
        ttl: int | None,
        max_uses: int | None,
        count: int | None,
        route: str,
        budgets: list[dict[str, Any]] | None = None,
    ) -> Minted:
        """``count`` leases (None: one, or a lease request) decided in the grouped commit."""
        assert self.grouped is not None
        order = MintOrder(
            agent.id if isinstance(agent, Principal) else None,
            agent.credential if isinstance(agent, Principal) else agent.digest,
            path,
            scope,
            ttl,
            max_uses,
            count or 1,
            count is None,
            ctx.request_id,
            ctx.client,
            route,
            budgets,
            ctx.client_cert,
        )
        outcome = await self.grouped.submit(order)
        if isinstance(outcome, KeyfobError):
            raise outcome
        assert isinstance(outcome, Minted)
        return outcome

    def mint_in_batch(
        self, batch: Batch, orders: Sequence[MintOrder], now: Now
    ) -> list[Minted | KeyfobError]:
        """Decide and issue ``orders`` inside the grouped commit: the same checks as the
        transactional mint (agent by its token now, the live set, ``mint_refusal``), the
        lease rows and one ``lease.mint`` record per order (a batch mint's names all its
        leases) in the batch's transaction."""
        drafts: list[Draft] = []
        new: list[NewLeases] = []
        results: list[Minted | KeyfobError] = []
        for o in orders:
            found = None
            if o.credential is not None:
                found = batch.agent_by_digest(o.credential)
            elif o.agent_id is not None:
                found = batch.agents([o.agent_id]).get(o.agent_id)
            claimed = o.agent_id is not None and found is not None and found.id != o.agent_id
            reason = agent_refusal(found, o.client, o.client_cert)
            if reason is not None or claimed:
                reason = reason or "agent_disabled"
                details = {"reason": reason, "token_kind": tokens.AGENT, "client": o.client}
                route = f"route:{o.route}"[:300]
                rid = o.request_id
                failed = Draft(now.iso, "anonymous", "auth.failed", route, "denied", rid, details)
                drafts.append(failed)
                results.append(Unauthorized(UNAUTHORIZED))
                continue
            assert found is not None
            actor = f"agent:{found.id}"
            set_id = batch.live_set(o.set_path)
            grant = batch.grant_for(found.id, set_id) if set_id is not None else None
            refusal = mint_refusal(grant, o.scope, now)
            if grant is not None and refusal is None and grant.approval == "required":
                if o.single:
                    # The transactional path files the request.
                    principal = Principal("agent", found.id, found.name, o.credential)
                    results.append(Minted([], principal))
                    continue
                refusal = "approval_required"
            target = f"secret_set:{o.set_path}"
            if refusal is not None or grant is None:
                refusal = refusal or "not_granted"
                details = {"reason": refusal, "agent_id": found.id, "stage": "mint"}
                drafts.append(
                    Draft(now.iso, actor, "lease.deny", target, "denied", o.request_id, details)
                )
                results.append(denial(refusal))
                continue
            looser = _looser(o.budgets, grant.budgets)
            if looser is not None:
                results.append(invalid("budgets", looser))
                continue
            ttl = self._ttl(grant, o.scope, o.ttl, now.moment)
            uses = 1 if o.scope == "request" else _cap(o.max_uses, grant.max_lease_uses)
            ids = tokens.new_ids(o.count)
            minted = tokens.new_tokens(tokens.LEASE, o.count)
            key = self._core.ring.system.token_key
            row = self._lease_row(grant, o.scope, ttl, uses, now, ids[0], o.budgets)
            new.append(NewLeases(row, ids, [tokens.digest(key, t) for t in minted]))
            view = lease_view(row, now.iso)
            if o.single:
                details = _mint_details(row, ttl, None)
                results.append(Minted([IssuedLease(view, Secret(minted[0]), ttl)]))
            else:
                details = _batch_details(row, ttl, ids)
                issued = IssuedBatch(view, tuple(ids), Secret(tuple(minted)), ttl)
                results.append(Minted([], batch=issued))
            drafts.append(Draft(now.iso, actor, "lease.mint", target, "ok", o.request_id, details))
        batch.insert_leases(new)
        batch.append(drafts)
        return results

    async def still_valid(self, tx: Tx, agent: Principal, ctx: Context, route: str) -> bool:
        """Is the agent still enabled and its token still current, inside ``tx``? If not,
        records the failed authentication in ``tx`` (the caller raises after commit)."""
        if agent.credential is not None:
            row = await sql.agent_by(tx.conn, digest=agent.credential)
        else:
            row = await sql.agent_by(tx.conn, id=agent.id)
        reason = agent_refusal(row, ctx.client, ctx.client_cert)
        if row is not None and row.id == agent.id and reason is None:
            return True
        anonymous = Context("anonymous", ctx.request_id, ctx.client)
        reason = reason or "agent_disabled"
        details = {"reason": reason, "token_kind": tokens.AGENT, "client": ctx.client}
        await self._core.record(
            tx, anonymous, "auth.failed", f"route:{route}"[:300], details=details, outcome="denied"
        )
        return False

    async def _pending_refusal(self, tx: Tx, agent: Principal, grant: GrantRow) -> str | None:
        """``too_many_pending`` if the agent or the grant has the most requests waiting."""
        now = self._core.now()
        by_agent, by_grant = await sql.count_pending(tx.conn, now, agent.id, grant.id)
        if by_agent >= self._max_pending or by_grant >= self._max_pending:
            return "too_many_pending"
        return None

    async def _grant_for(self, tx: Tx, agent: Principal, path: str) -> GrantRow | None:
        row = await sets_sql.get_set(tx.conn, *path.split("/"))
        if row is None or row.deleted_at is not None:
            return None
        return await sql.active_grant(tx.conn, agent.id, row.id)

    async def live_grant(self, tx: Tx, grant_id: str) -> GrantRow | None:
        """The grant if it and its set still exist (for issuing an approved request)."""
        grant = await sql.grant_by_id(tx.conn, grant_id)
        if grant is None or grant.revoked_at is not None:
            return None
        found = await sets_sql.get_set_by_id(tx.conn, grant.set_id)
        return grant if found is not None and found.deleted_at is None else None

    def mint_refusal(self, grant: GrantRow | None, scope: str) -> str | None:
        """Why a lease cannot be minted under ``grant`` now, or None."""
        return mint_refusal(grant, scope, Now(self._core.clock.now()))

    def _ttl(self, grant: GrantRow, scope: str, asked: int | None, now: datetime) -> int:
        ttl = asked or (REQUEST_TTL if scope == "request" else WORKFLOW_TTL)
        ttl = min(ttl, grant.max_lease_ttl)
        if grant.expires_at:
            # Unbounded: older releases stored any year.
            expires = parse_iso(grant.expires_at, bounded=False)
            left = (expires - now).total_seconds()
            ttl = min(ttl, max(1, int(left)))
        return ttl

    async def issue(
        self,
        tx: Tx,
        ctx: Context,
        grant: GrantRow,
        scope: str,
        ttl: int,
        max_uses: int | None,
        request_id: str | None,
    ) -> IssuedLease:
        token = tokens.new_token(tokens.LEASE)
        now = Now(self._core.clock.now())
        row = self._lease_row(grant, scope, ttl, max_uses, now, tokens.new_id())
        await sql.insert_lease(tx.conn, row, self.digest(token))
        await self.audit(
            tx, ctx, "lease.mint", grant.set_path, "ok", _mint_details(row, ttl, request_id)
        )
        return IssuedLease(lease_view(row, now.iso), Secret(token), ttl)

    def _lease_row(
        self,
        grant: GrantRow,
        scope: str,
        ttl: int,
        max_uses: int | None,
        now: Now,
        lease_id: str,
        budgets: list[dict[str, Any]] | None = None,
    ) -> LeaseRow:
        return LeaseRow(
            id=lease_id,
            agent_id=grant.agent_id,
            grant_id=grant.id,
            set_id=grant.set_id,
            set_path=grant.set_path,
            actions=grant.actions,
            keys=grant.keys,
            scope=scope,
            max_uses=max_uses,
            uses=0,
            created_at=now.iso,
            expires_at=_lease_expiry(now.moment, ttl, grant.expires_at),
            revoked_at=None,
            revoke_reason=None,
            budgets=budgets,
        )

    async def _request(
        self,
        tx: Tx,
        ctx: Context,
        agent: Principal,
        grant: GrantRow,
        scope: str,
        ttl: int,
        max_uses: int | None,
        reason: str | None,
    ) -> LeaseRequestView:
        now = self._core.clock.now()
        row = LeaseRequestRow(
            id=tokens.new_id(),
            agent_id=agent.id,
            grant_id=grant.id,
            set_path=grant.set_path,
            scope=scope,
            ttl=ttl,
            max_uses=max_uses,
            status="pending",
            created_at=self._core.now(),
            expires_at=_iso(now + timedelta(seconds=APPROVAL_TIMEOUT)),
            decided_at=None,
            decided_by=None,
            lease_id=None,
            reason=reason,
        )
        await sql.insert_request(tx.conn, row)
        await self.audit(
            tx,
            ctx,
            "lease.request",
            grant.set_path,
            "pending",
            {
                "request": row.id,
                "agent_id": agent.id,
                "grant_id": grant.id,
                "scope": scope,
                **({"reason": reason} if reason else {}),
            },
        )
        return request_view(row, self._core.now())

    # -- listing and revoking ---------------------------------------------------------

    async def search(
        self,
        *,
        agent_id: str | None = None,
        grant_id: str | None = None,
        set_path: str | None = None,
        active: bool = True,
    ) -> list[LeaseView]:
        now = self._core.now()
        async with self._core.db.read() as conn:
            set_id = None
            if set_path:
                found = await sets_sql.get_set(conn, *validation.split_path(set_path))
                if found is None:
                    return []
                set_id = found.id
            rows = await sql.list_leases(
                conn,
                agent_id=agent_id,
                grant_id=grant_id,
                set_id=set_id,
                active_at=now if active else None,
            )
        return [lease_view(r, now) for r in rows]

    async def page(
        self, *, agent_id: str | None = None, cursor: str | None = None, limit: int = 50
    ) -> Page[LeaseView]:
        """Active leases newest first, a page at a time (keyset on created_at, id)."""
        limit = clamp(limit)
        now = self._core.now()
        async with self._core.db.read() as conn:
            rows = await sql.list_leases(
                conn, agent_id=agent_id, active_at=now, after=decode(cursor, 2), limit=limit + 1
            )
        shown, after = page_of(rows, limit, lambda r: (r.created_at, r.id))
        return Page([lease_view(r, now) for r in shown], after)

    async def renew(
        self,
        agent: Principal,
        ctx: Context,
        lease_id: str,
        ttl: int | None = None,
        route: str = "/v1/me/leases",
    ) -> tuple[LeaseView, int]:
        """A new term for one of ``agent``'s workflow leases (same token): ``ttl`` capped
        by the grant as a mint's is; refused (audited) as a mint would be. Returns the
        lease and its new TTL."""
        if ttl is not None and (not isinstance(ttl, int) or ttl < 1):
            raise invalid("ttl", "seconds, at least 1")
        refused: KeyfobError | None = None
        new_ttl = 0
        async with self._core.write() as tx:
            row = await sql.lease_by(tx.conn, id=lease_id)
            if row is None or row.agent_id != agent.id:
                raise NotFound(f"lease {lease_id} does not exist")
            if not await self.still_valid(tx, agent, ctx, route):
                refused = Unauthorized(UNAUTHORIZED)
            else:
                grant = await self.live_grant(tx, row.grant_id)
                moment = self._core.clock.now()
                now = Now(moment)
                reason = renew_refusal(row, grant, now) if grant is not None else "revoked"
                if reason is not None or grant is None:
                    refused = denial(reason or "revoked")
                    details = {
                        "reason": reason,
                        "agent_id": agent.id,
                        "stage": "renew",
                        "lease_id": lease_id,
                    }
                    await self.audit(tx, ctx, "lease.deny", row.set_path, "denied", details)
                else:
                    new_ttl = self._ttl(grant, row.scope, ttl, moment)
                    expires = _lease_expiry(moment, new_ttl, grant.expires_at)
                    if not await sql.renew_lease(tx.conn, lease_id, now.iso, expires):
                        raise Conflict(f"lease {lease_id} changed while it was renewed")
                    renewed = {
                        "lease_id": lease_id,
                        "agent_id": agent.id,
                        "ttl": new_ttl,
                        "expires_at": expires,
                    }
                    await self.audit(tx, ctx, "lease.renew", row.set_path, "ok", renewed)
                    row = await sql.lease_by(tx.conn, id=lease_id) or row
        if refused is not None:
            raise refused
        return lease_view(row, self._core.now()), new_ttl

    async def revoke(self, ctx: Context, lease_id: str, agent_id: str | None = None) -> LeaseView:
        """Revoke a live lease (``agent_id``: only if it is that agent's own)."""
        async with self._core.write() as tx:
            row = await sql.lease_by(tx.conn, id=lease_id)
            if row is None or (agent_id is not None and row.agent_id != agent_id):
                raise NotFound(f"lease {lease_id} does not exist")
            now = self._core.now()
            if not await sql.revoke_leases(tx.conn, now, "revoked", lease_id=lease_id):
                raise Conflict(f"lease {lease_id} is already {lease_view(row, now).status}")
            await self.audit(
                tx,
                ctx,
                "lease.revoke",
                row.set_path,
                "ok",
                {"lease_id": lease_id, "agent_id": row.agent_id},
            )
            row = await sql.lease_by(tx.conn, id=lease_id) or row
        return lease_view(row, self._core.now())

    async def revoke_all(
        self,
        ctx: Context,
        *,
        agent_id: str | None = None,
        grant_id: str | None = None,
        set_path: str | None = None,
    ) -> RevokedLeases:
        if not (agent_id or grant_id or set_path):
            raise invalid("agent", "name an agent, a grant or a secret set")
        async with self._core.write() as tx:
            set_id = None
            if set_path:
                found = await sets_sql.get_set(tx.conn, *validation.split_path(set_path))
                if found is None:
                    raise NotFound(f"secret set {set_path} does not exist")
                set_id = found.id
            ids = await sql.revoke_leases(
                tx.conn,
                self._core.now(),
                "revoked",
                agent_id=agent_id,
                grant_id=grant_id,
                set_id=set_id,
            )
            await self.audit(
                tx,
                ctx,
                "lease.revoke",
                set_path or "*",
                "ok",
                {"lease_ids": ids, "agent_id": agent_id, "grant_id": grant_id},
            )
        return RevokedLeases(len(ids), ids)

    async def prune(self, retention: timedelta, batch: int = PRUNE_BATCH) -> int:
        """Delete the leases, multi-set leases and lease requests that expired more than
        ``retention`` ago, ``batch`` leases per transaction, each with its ``lease.prune``
        record (fail closed: no record, nothing deleted); returns how many leases went."""
        expired_before = _iso(self._core.clock.now() - retention)
        ctx = Context(actor=SYSTEM.actor)  # one request id for the run's batches
        total = 0
        while True:
            async with self._core.write() as tx:
                gone, bundles, requests = await sql.prune_leases(tx.conn, expired_before, batch)
                if gone or bundles or requests:
                    details = {
                        "leases": gone,
                        "bundles": bundles,
                        "requests": requests,
                        "expired_before": expired_before,
                    }
                    await self._core.record(tx, ctx, "lease.prune", "vault", details=details)
            total += gone
            if gone < batch:
                return total

    def digest(self, token: str) -> str:
        return tokens.digest(self._core.ring.system.token_key, token)

    async def audit(
        self,
        tx: Tx,
        ctx: Context,
        action: str,
        set_path: str,
        outcome: str,
        details: dict[str, Any],
    ) -> None:
        await self._core.record(
            tx, ctx, action, f"secret_set:{set_path}", details=details, outcome=outcome
        )


def invalid(field: str, msg: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {msg}", errors=[{"loc": [field], "msg": msg}])


def _lease_expiry(now: datetime, ttl: int, grant_expires: str | None) -> str:
    """``now + ttl``, but never past the grant, not even by a second of rounding."""
    expires = _iso(now + timedelta(seconds=ttl))
    return min(expires, grant_expires) if grant_expires else expires


def _mint_details(row: LeaseRow, ttl: int, request_id: str | None) -> dict[str, Any]:
    """What a ``lease.mint`` record says (never the token)."""
    return {
        "lease_id": row.id,
        "agent_id": row.agent_id,
        "grant_id": row.grant_id,
        "scope": row.scope,
        "ttl": ttl,
        "max_uses": row.max_uses,
        "request": request_id,
    }


def _batch_details(row: LeaseRow, ttl: int, ids: list[str]) -> dict[str, Any]:
    """What a batch mint's one ``lease.mint`` record says: every lease's id, how many, and
    what they share (never a token)."""
    return {
        "lease_ids": ids,
        "count": len(ids),
        "agent_id": row.agent_id,
        "grant_id": row.grant_id,
        "scope": row.scope,
        "ttl": ttl,
        "max_uses": row.max_uses,
        "request": None,
    }


def _cap(asked: int | None, ceiling: int | None) -> int | None:
    if ceiling is None:
        return asked
    return min(asked, ceiling) if asked is not None else ceiling
