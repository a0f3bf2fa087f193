"""The dashboard's OAuth connect flows in progress, kept in the database.

A flow (who started it, where the set goes, the client secret and the PKCE verifier)
is sealed like a secret version and stored under a digest of its random ``state``, so
the provider's callback may land on any node. The callback takes it once: the row is
deleted in the transaction that reads it, and only for the browser that started it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from keyfob import crypto
from keyfob.clock import isoformat
from keyfob.errors import Conflict, DecryptionFailed
from keyfob.secret import SECRET, Masked, Secret
from keyfob.store import Tx
from keyfob.store import oauth_flows as sql
from keyfob.vault.core import Core

FLOW_SECONDS = 600
MAX_FLOWS = 256


@dataclass(frozen=True)
class Flow(Masked):
    """One started connect: who, where to store, and the PKCE verifier and client secret."""

    actor: str
    preset: str
    environment: str
    name: str
    profile: dict[str, Any]
    client_id: str
    client_secret: Secret[str] = field(metadata=SECRET)
    verifier: Secret[str] = field(metadata=SECRET)
    redirect_uri: str


@dataclass(frozen=True)
class Started(Masked):
    """What the starting page needs: ``state`` for the provider, ``browser`` for the
    cookie that binds the callback to this browser."""

    state: str = field(metadata=SECRET)
    browser: str = field(metadata=SECRET)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _aad(state_digest: str) -> str:
    return f"oauth_flow:{state_digest}"


async def rewrap_flows(core: Core, tx: Tx) -> int:
    """Move flows in progress to the active KEK term (``keys rewrap`` and ``retire``)."""
    term = core.ring.active_term
    moved = 0
    for state_digest, old_term, wrapped in await sql.on_old_terms(tx.conn, term):
        await core.ensure_term(wrapped)
        new_term, rewrapped = crypto.rewrap(
            core.ring, wrapped, set_id=_aad(state_digest), version=1
        )
        await sql.set_wrapped(tx.conn, state_digest, old_term, new_term, rewrapped)
        moved += 1
    return moved


def new_verifier() -> Secret[str]:
    return Secret(secrets.token_urlsafe(48))


class ConnectFlows:
    def __init__(self, core: Core) -> None:
        self._core = core

    async def start(self, flow: Flow) -> Started:
        """Store ``flow`` for ten minutes; Conflict if too many are in progress."""
        state = secrets.token_urlsafe(24)
        browser = secrets.token_urlsafe(24)
        state_digest = _digest(state)
        plain = json.dumps(
            {
                "actor": flow.actor,
                "preset": flow.preset,
                "environment": flow.environment,
                "name": flow.name,
                "profile": flow.profile,
                "client_id": flow.client_id,
                "client_secret": flow.client_secret.reveal(),
                "verifier": flow.verifier.reveal(),
                "redirect_uri": flow.redirect_uri,
            }
        ).encode()
        moment = self._core.clock.now()
        now = isoformat(moment)
        async with self._core.write() as tx:
            await sql.purge_expired(tx.conn, now)
            if await sql.count(tx.conn) >= MAX_FLOWS:
                raise Conflict("too many connections are being set up; try again in a few minutes")
            await self._core.sync_terms(tx)
            sealed = crypto.seal(self._core.ring, plain, set_id=_aad(state_digest), version=1)
            await sql.insert(
                tx.conn,
                state_digest=state_digest,
                browser_digest=_digest(browser),
                kek_term=sealed.term,
                wrapped_dek=sealed.wrapped_dek,
                ciphertext=sealed.ciphertext,
                created_at=now,
                expires_at=isoformat(moment + timedelta(seconds=FLOW_SECONDS)),
            )
        return Started(state, browser)

    async def take(self, state: str, browser: str) -> Flow | None:
        """The flow ``state`` names, if this browser started it and it is live; deleted
        as it is read, so a second callback (on any node) finds nothing."""
        if not state or not browser:
            return None
        state_digest = _digest(state)
        async with self._core.write() as tx:
            row = await sql.take(tx.conn, state_digest, _digest(browser), self._core.now())
        if row is None:
            return None
        try:
            await self._core.ensure_term(row.wrapped_dek)
            plain = crypto.open(
                self._core.ring,
                crypto.Sealed(row.kek_term, row.wrapped_dek, row.ciphertext),
                set_id=_aad(state_digest),
                version=1,
            )
            data = json.loads(plain)
        except (DecryptionFailed, ValueError):
            # A key term retired meanwhile, or a row that is not ours: start again.
            return None
        return Flow(
            actor=data["actor"],
            preset=data["preset"],
            environment=data["environment"],
            name=data["name"],
            profile=data["profile"],
            client_id=data["client_id"],
            client_secret=Secret(data["client_secret"]),
            verifier=Secret(data["verifier"]),
            redirect_uri=data["redirect_uri"],
        )
