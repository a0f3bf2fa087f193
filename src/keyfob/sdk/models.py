"""What the SDK hands back: leases (their token masked in every print), lease requests,
grants and dry-run answers, read from keyfob's JSON."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from keyfob.secret import SECRET, Masked, Secret


@dataclass(frozen=True, slots=True)
class Lease(Masked):
    """A minted lease. ``token.reveal()`` is the ``kfl_…`` to send; ``deadline`` is when
    it expires on this machine's monotonic clock (no trust in wall clocks agreeing)."""

    id: str
    token: Secret[str] = field(metadata=SECRET)
    secret_set: str
    scope: str
    expires_at: str
    ttl: int
    max_uses: int | None
    deadline: float

    def remaining(self, now: float | None = None) -> float:
        """Seconds left before the lease expires (negative once it has)."""
        return self.deadline - (time.monotonic() if now is None else now)


def lease_of(data: dict[str, Any], sent_at: float) -> Lease:
    """A lease from a mint answer; ``sent_at`` (monotonic, before the request left) makes
    the local deadline err early, never late."""
    ttl = int(data.get("ttl") or 0)
    return Lease(
        id=str(data["id"]),
        token=Secret(str(data["token"])),
        secret_set=str(data.get("secret_set", "")),
        scope=str(data.get("scope", "")),
        expires_at=str(data.get("expires_at", "")),
        ttl=ttl,
        max_uses=data.get("max_uses"),
        deadline=sent_at + ttl,
    )


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """A lease request under a grant that needs approval; ``lease`` once it is issued."""

    id: str
    secret_set: str
    status: str  # pending, approved, denied, issued or expired
    expires_at: str
    lease: Lease | None = None


def request_of(data: dict[str, Any], sent_at: float) -> LeaseRequest:
    lease = data.get("lease")
    return LeaseRequest(
        id=str(data.get("id", "")),
        secret_set=str(data.get("secret_set", "")),
        status=str(data.get("status", "")),
        expires_at=str(data.get("expires_at", "")),
        lease=lease_of(lease, sent_at) if isinstance(lease, dict) else None,
    )


@dataclass(frozen=True, slots=True)
class Grant:
    """One of the agent's grants as keyfob shows it to the agent (names, never values)."""

    grant_id: str
    secret_set: str
    keys: list[str]
    actions: list[str]
    scopes: list[str]
    max_lease_ttl: int
    approval: str
    data: dict[str, Any]  # every field keyfob sent, the ones above included

    @property
    def env(self) -> dict[str, str]:
        """The variables the set's preset declares (``{proxy_url}``/``{lease}`` templates)."""
        env = self.data.get("env")
        return {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}


def grant_of(data: dict[str, Any]) -> Grant:
    return Grant(
        grant_id=str(data.get("grant_id", "")),
        secret_set=str(data.get("secret_set", "")),
        keys=list(data.get("keys") or []),
        actions=list(data.get("actions") or []),
        scopes=list(data.get("scopes") or []),
        max_lease_ttl=int(data.get("max_lease_ttl") or 0),
        approval=str(data.get("approval", "none")),
        data=data,
    )


@dataclass(frozen=True, slots=True)
class Check:
    """The dry run's answer: would this lease allow this use (nothing consumed)."""

    allowed: bool
    reason: str | None
    lease_view: dict[str, Any]  # the lease as keyfob shows it (never its token)
