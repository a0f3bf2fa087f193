"""The proxy's use of a lease: decided, counted and audited in a grouped commit, then opened.

``begin`` takes one use of the lease for one upstream request through the one consumer
(``consume.py``, which asks ``decision.decide``); only after that commit does it decrypt
the set's current version and hand the values back, wrapped in ``Secret``. ``finish``
queues the ``proxy.request`` outcome record.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from keyfob import tokens
from keyfob.profiles import Profile
from keyfob.secret import SECRET, Masked, Secret
from keyfob.store.batch import Draft, SetState
from keyfob.vault.consume import Attempt, Consumer, token_kind
from keyfob.vault.core import Core
from keyfob.vault.decision import PROXY


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


class Proxying:
    def __init__(self, core: Core, consumer: Consumer) -> None:
        self._core = core
        self._consumer = consumer

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
            )
        )
        state = consumed.state
        values = await self._open(state)
        lease = consumed.lease
        assert consumed.profile is not None
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
        )

    def finish(self, use: ProxyUse, outcome: str, **details: Any) -> None:
        """Queue the ``proxy.request`` record of what happened upstream (nobody waits)."""
        request = use.request
        body = {
            "lease_id": use.lease_id,
            "method": request.method,
            "host": urlsplit(use.profile.base_url).netloc,
            "path": request.path,
            "duration_ms": round((time.monotonic() - use.started) * 1000, 3),
            **details,
        }
        self._consumer.commit.record(
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

    async def _open(self, state: SetState) -> dict[str, Secret[str]]:
        entries = await self._core.open_entries(
            state.id, state.version, state.kek_term, state.wrapped_dek, state.ciphertext
        )
        return {k: Secret(v) for k, v in entries.items()}
