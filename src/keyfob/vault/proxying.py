"""The proxy's use of a lease: checked, counted and audited in a grouped commit, then opened.

``begin`` takes one use of the lease for one upstream request. In the batch it reads the
lease, its grant and the set, runs the same refusal checks as every other use, takes the
lease and grant uses (rate window included) and writes ``lease.use`` or ``lease.deny``;
only after that commit does it decrypt the set's current version and hand the values
back, wrapped in ``Secret``. ``finish`` queues the ``proxy.request`` outcome record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from keyfob import tokens
from keyfob.errors import KeyfobError, Unauthorized
from keyfob.profiles import Profile
from keyfob.secret import SECRET, Masked, Secret
from keyfob.store.batch import Batch, Draft, SetState
from keyfob.store.records import GrantRow, LeaseRow
from keyfob.vault.core import UNAUTHORIZED, Core
from keyfob.vault.group_commit import GroupCommit
from keyfob.vault.lease_use import use_refusal
from keyfob.vault.leases import denial

ACTION = "proxy"
NO_PROFILE = "no_profile"


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


@dataclass(frozen=True, slots=True)
class _Attempt:
    request: ProxyRequest
    digest: str | None  # None: no lease of the right shape, refused without a look-up
    refusal: str = "unknown"


@dataclass(frozen=True, slots=True)
class _Granted:
    lease: LeaseRow
    state: SetState
    profile: Profile
    keys: tuple[str, ...]


class Proxying:
    def __init__(self, core: Core) -> None:
        self._core = core
        self._profiles: dict[str, Profile] = {}
        self._commit: GroupCommit[_Attempt, _Granted | KeyfobError] = GroupCommit(
            core, self._process
        )

    async def begin(self, request: ProxyRequest) -> ProxyUse:
        """Take one use for ``request`` (audited before this returns) or raise the denial."""
        started = time.monotonic()
        token = request.token
        if not token or not tokens.looks_like(token, tokens.LEASE):
            # Refused without a look-up, but still recorded before it is answered.
            attempt = _Attempt(request, None, "missing" if not token else "malformed")
        else:
            attempt = _Attempt(request, tokens.digest(self._core.ring.system.token_key, token))
        outcome = await self._commit.submit(attempt)
        if isinstance(outcome, KeyfobError):
            raise outcome
        values = await self._open(outcome.state)
        lease = outcome.lease
        return ProxyUse(
            lease.id,
            lease.agent_id,
            lease.set_id,
            lease.set_path,
            outcome.state.version,
            outcome.profile,
            outcome.keys,
            values,
            request,
            started,
        )

    def finish(self, use: ProxyUse, outcome: str, **details: Any) -> None:
        """Queue the ``proxy.request`` record of what happened upstream (nobody waits)."""
        request = use.request
        body = {
            "lease_id": use.lease_id,
            "method": request.method,
            "host": _host(use.profile),
            "path": request.path,
            "duration_ms": round((time.monotonic() - use.started) * 1000, 3),
            **details,
        }
        self._commit.record(
            Draft(
                self._core.now(),
                f"agent:{use.agent_id}",
                "proxy.request",
                f"secret_set:{use.set_path}",
                outcome,
                request.request_id,
                body,
            )
        )

    async def close(self) -> None:
        await self._commit.close()

    # -- in the batch: synchronous, inside the locked transaction (on SQLite on the event
    # -- loop, or in the writer thread while another process holds the lock) ----------

    def _process(self, batch: Batch, attempts: Sequence[_Attempt]) -> list[_Granted | KeyfobError]:
        now = self._core.now()
        epoch = int(self._core.clock.now().timestamp())
        leases = batch.leases({a.digest for a in attempts if a.digest is not None})
        grants = batch.grants({lease.grant_id for lease in leases.values()})
        sets = batch.sets({lease.set_id for lease in leases.values()})
        # Uses taken earlier in this batch count against the later ones.
        lease_uses: dict[str, int] = {}
        grant_uses: dict[str, tuple[int, int, int]] = {}
        drafts: list[Draft] = []
        results: list[_Granted | KeyfobError] = []
        for attempt in attempts:
            request = attempt.request
            lease = leases.get(attempt.digest) if attempt.digest is not None else None
            if lease is None:
                drafts.append(self._auth_failed(request, attempt.refusal))
                results.append(Unauthorized(UNAUTHORIZED))
                continue
            grant = grants.get(lease.grant_id)
            taken = grant_uses.get(grant.id) if grant is not None else None
            state = sets.get(lease.set_id)
            profile = self._profile(state)
            keys = tuple(profile.referenced_keys()) if profile else ()
            wanted = request.set_path, request.method, request.path, list(keys)
            reason = use_refusal(
                lease,
                grant,
                now,
                ACTION,
                *wanted,
                lease_uses=lease_uses.get(lease.id),
                grant_uses=taken[0] if taken else None,
            )
            if reason is None and (state is None or state.deleted):
                reason = "revoked"
            if reason is None and profile is None:
                reason = NO_PROFILE
            retry = None
            if reason is None and grant is not None:
                after = _take_grant_use(grant, taken, epoch // 60)
                if after is None:
                    reason = "rate_limited"
                    retry = 60 - epoch % 60
                else:
                    grant_uses[grant.id] = after
            details = {
                "lease_id": lease.id,
                "agent_id": lease.agent_id,
                "action": ACTION,
                "method": request.method,
                "host": _host(profile) if profile else None,
                "path": request.path,
                "query": list(request.query_names),
            }
            actor = f"agent:{lease.agent_id}"
            target = f"secret_set:{lease.set_path}"
            rid = request.request_id
            if reason is not None:
                body = {**details, "reason": reason, "stage": "use"}
                drafts.append(Draft(now, actor, "lease.deny", target, "denied", rid, body))
                results.append(denial(reason, retry_after=retry))
                continue
            assert state is not None
            assert profile is not None
            lease_uses[lease.id] = lease_uses.get(lease.id, lease.uses) + 1
            body = {**details, "keys": list(keys)}
            drafts.append(Draft(now, actor, "lease.use", target, "ok", rid, body))
            results.append(_Granted(lease, state, profile, keys))
        read = {lease.id: lease.uses for lease in leases.values()}
        batch.lease_uses([(i, read[i], n) for i, n in lease_uses.items()])
        batch.grant_uses([(i, grants[i].uses, u, w, c) for i, (u, w, c) in grant_uses.items()])
        batch.append(drafts)
        return results

    def _profile(self, state: SetState | None) -> Profile | None:
        if state is None or not state.profile:
            return None
        profile = self._profiles.get(state.profile)
        if profile is None:
            try:
                profile = Profile.model_validate(json.loads(state.profile))
            except (ValueError, ValidationError):
                return None
            if len(self._profiles) > 1024:
                self._profiles.clear()
            self._profiles[state.profile] = profile
        return profile

    def _auth_failed(self, request: ProxyRequest, reason: str) -> Draft:
        token = request.token
        kind = next((p for p in tokens.PREFIXES if token and token.startswith(p)), None)
        return Draft(
            self._core.now(),
            "anonymous",
            "auth.failed",
            f"route:{request.route}"[:300],
            "denied",
            request.request_id,
            {"reason": reason, "token_kind": kind, "client": request.client},
        )

    async def _open(self, state: SetState) -> dict[str, Secret[str]]:
        entries = await self._core.open_entries(
            state.id, state.version, state.kek_term, state.wrapped_dek, state.ciphertext
        )
        return {k: Secret(v) for k, v in entries.items()}


def _take_grant_use(
    grant: GrantRow, taken: tuple[int, int, int] | None, window: int
) -> tuple[int, int, int] | None:
    """The grant's (uses, window, count) after one more use, or None if the rate is spent;
    ``taken`` is its state after earlier uses in this batch.

    Windows only move forward, as in ``store.access.take_grant_use``."""
    uses, current, count = taken or (grant.uses, grant.rate_window, grant.rate_count)
    if current < window:
        return uses + 1, window, 1
    if grant.rate_limit is not None and count >= grant.rate_limit:
        return None
    return uses + 1, current, count + 1


def _host(profile: Profile) -> str:
    return urlsplit(profile.base_url).netloc
