"""Using a lease outside the proxy: export (consumes a use), the dry run (consumes none),
and a lease as a principal.

Export goes through the same consumer as the proxy (``consume.py``: decided, counted and
audited in one grouped commit); the dry run asks the same ``decision.decide`` over the
same rows, judged from the same normalised method and path as the proxy
(``keyfob.paths``), so its answer is the proxy's answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from keyfob import paths, tokens
from keyfob.errors import Unauthorized
from keyfob.profiles import Profile
from keyfob.secret import SECRET, Masked, Secret
from keyfob.store import access as sql
from keyfob.store import secrets as sets_sql
from keyfob.store import usage as usage_sql
from keyfob.store.records import LeaseRow
from keyfob.vault import budgets
from keyfob.vault.consume import Attempt, Consumer, token_kind
from keyfob.vault.context import Context
from keyfob.vault.core import UNAUTHORIZED, Core
from keyfob.vault.decision import EXPORT, PROXY, Deny, Now, Spend, Target, Use, decide
from keyfob.vault.leases import Leases, LeaseView, lease_view
from keyfob.vault.operators import Principal
from keyfob.vault.validation import field_error


@dataclass(frozen=True, slots=True)
class Checked:
    """The dry run's answer: would the use be allowed, and if not, why."""

    allowed: bool
    reason: str | None
    lease: LeaseView


@dataclass(frozen=True, slots=True)
class Exported(Masked):
    """Plaintext handed out by an export (audited as ``secret_set.export``)."""

    secret_set: str
    entries: dict[str, Secret[str]] = field(metadata=SECRET)


class LeaseUsage:
    def __init__(self, core: Core, leases: Leases, consumer: Consumer) -> None:
        self._core = core
        self._leases = leases
        self._consumer = consumer

    async def export(
        self,
        token: str | None,
        ctx: Context,
        secret_set: str,
        keys: list[str] | None,
        route: str,
    ) -> Exported:
        """Plaintext of the allowed keys, for a lease whose grant allows ``export``."""
        digest = None
        refusal = "unknown"
        if token and tokens.looks_like(token, tokens.LEASE):
            digest = self._leases.digest(token)
        else:
            refusal = "missing" if not token else "malformed"
        consumed = await self._consumer.take(
            Attempt(
                digest,
                EXPORT,
                secret_set,
                None,
                None,
                tuple(keys) if keys is not None else None,
                ctx.request_id,
                route,
                ctx.client,
                refusal=refusal,
                token_kind=token_kind(token),
                client_cert=ctx.client_cert,
            )
        )
        # The version read (and audited) in the commit is the one opened here.
        state = consumed.state
        values = await self._core.open_entries(
            state.id, state.version, state.kek_term, state.wrapped_dek, state.ciphertext
        )
        entries = {k: Secret(values[k]) for k in consumed.keys if k in values}
        return Exported(consumed.lease.set_path, entries)

    async def check(
        self,
        token: str | None,
        ctx: Context,
        *,
        action: str = PROXY,
        secret_set: str | None = None,
        method: str | None = None,
        path: str | None = None,
        route: str = "",
    ) -> Checked:
        """Would this use be allowed now? The proxy's answer, consuming nothing."""
        # The proxy's own normalisation: the dry run judges what the proxy would check.
        try:
            method = paths.normalise_method(method) if method is not None else None
        except paths.MethodRefused as exc:
            raise field_error("method", str(exc)) from None
        try:
            path = paths.normalise(path) if path is not None else None
        except paths.PathRefused as exc:
            raise field_error("path", str(exc)) from None
        if action != PROXY:
            method = path = None  # an export has neither, so neither can refuse it
        lease = await self._lookup(token, ctx, route)
        async with self._core.db.read(snapshot=True) as conn:
            lease = await sql.lease_by(conn, id=lease.id) or lease
            grant = await sql.grant_by_id(conn, lease.grant_id)
            agent = await sql.agent_by(conn, id=lease.agent_id)
            found = await sets_sql.get_set_by_id(conn, lease.set_id)
            owners = [f"grant:{lease.grant_id}", f"lease:{lease.id}"]
            counters = await usage_sql.budget_counters(conn, owners)
        profile = None
        if action == PROXY and found is not None and found.profile:
            try:
                profile = Profile.model_validate(found.profile)
            except ValidationError:
                profile = None
        keys = tuple(profile.referenced_keys()) if profile is not None else None
        target = Target(found.deleted_at is not None, profile is not None) if found else None
        use = Use(action, secret_set, method, path, keys, ctx.client, ctx.client_cert)
        now = Now(self._core.clock.now())
        spend = None
        if grant is not None:
            # The dry run has no body: would the smallest request fit what remains?
            lines = budgets.lines(grant, lease, now.iso)
            used = {line.key: counters.get(line.key, 0) for line in lines}
            spend = Spend(lines, used, budgets.SMALLEST)
        verdict = decide(lease, grant, agent, target, use, now, spend=spend)
        reason = verdict.reason if isinstance(verdict, Deny) else None
        return Checked(reason is None, reason, lease_view(lease, now.iso))

    async def authenticate(self, token: str | None, ctx: Context, route: str) -> Principal:
        """The lease as a principal (``lease:<id>``), or an audited ``Unauthorized``."""
        lease = await self._lookup(token, ctx, route)
        return Principal("lease", lease.id, lease.agent_id)

    async def _lookup(self, token: str | None, ctx: Context, route: str) -> LeaseRow:
        reason = "missing" if not token else "malformed"
        if token and tokens.looks_like(token, tokens.LEASE):
            async with self._core.db.read() as conn:
                row = await sql.lease_by(conn, digest=self._leases.digest(token))
            if row is not None:
                return row
            reason = "unknown"
        await self._core.audit_auth_failure(ctx, route, reason, token)
        raise Unauthorized(UNAUTHORIZED)
