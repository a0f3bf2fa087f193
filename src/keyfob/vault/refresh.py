"""Access tokens for refreshed sets: cached, refreshed single-flight, rotation saved first.

In a process, one refresh per set at a time (an asyncio future the others await). Across
processes and nodes, the refresher must first win the set's claim: a conditional update
of its ``credential_tokens`` row (inside ``BEGIN IMMEDIATE`` on SQLite, a row-locking
``UPDATE`` on PostgreSQL) that only succeeds when nobody holds a live claim. Losers wait
and re-read the row until the winner has stored the new token. A rotated refresh token
is stored as a new set version (audited) in the same transaction that stores the access
token, before anyone uses it. An ``invalid_grant`` first re-reads the set (another node
may have rotated it) and only then marks the set as needing a reconnect.

Access tokens rest in the database sealed like a secret version (AAD: set id + ``:token``
and the set version), and in this process's memory; never in an audit record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from keyfob import crypto
from keyfob.clock import isoformat, parse_iso
from keyfob.errors import CredentialRefreshFailed, DecryptionFailed
from keyfob.profiles import Profile
from keyfob.profiles.model import GitHubApp, GoogleServiceAccount, OAuth2
from keyfob.secret import SECRET, Masked, Secret
from keyfob.store import SetRow, Tx
from keyfob.store import credential_tokens as token_sql
from keyfob.store import secrets as sets_sql
from keyfob.store.credential_tokens import TokenState
from keyfob.tokens import new_id
from keyfob.vault.context import Context
from keyfob.vault.core import Core
from keyfob.vault.secret_sets import SecretSets
from keyfob.vault.token_grants import (
    EndpointFailed,
    Fetch,
    InvalidGrant,
    Minted,
    call_for,
    read_answer,
)

log = logging.getLogger("keyfob.refresh")

# Refresh when less than min(EARLY, 10% of the lifetime) remains (DESIGN: Interfaces).
EARLY = 60.0
ACTOR = Context(actor="system:refresh")


@dataclass(frozen=True, slots=True)
class _Cached(Masked):
    token: Secret[str] = field(metadata=SECRET)
    version: int
    expires: float  # epoch seconds
    lifetime: int

    def due(self, now: float) -> bool:
        return self.expires - now < min(EARLY, 0.1 * self.lifetime)


@dataclass(frozen=True)
class Policy:
    """Bounded retries with backoff, how long a claim lasts, how losers wait."""

    attempts: int = 3
    backoff: float = 0.2
    claim_seconds: float = 60.0
    poll: float = 0.02
    wait: float = 30.0


def _token_aad(set_id: str) -> str:
    return f"{set_id}:token"


async def rewrap_tokens(core: Core, tx: Tx) -> int:
    """Move sealed access tokens to the active KEK term (``keys rewrap`` and ``retire``)."""
    term = core.ring.active_term
    moved = 0
    for set_id, version, old_term, wrapped in await token_sql.on_old_terms(tx.conn, term):
        await core.ensure_term(wrapped)
        new_term, rewrapped = crypto.rewrap(
            core.ring, wrapped, set_id=_token_aad(set_id), version=version
        )
        await token_sql.set_wrapped(tx.conn, set_id, old_term, new_term, rewrapped)
        moved += 1
    return moved


class Refresher:
    def __init__(
        self,
        core: Core,
        sets: SecretSets,
        policy: Policy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._core = core
        self._sets = sets
        self.policy = policy or Policy()
        self._sleep = sleep
        self._memory: dict[str, _Cached] = {}
        self._flights: dict[str, asyncio.Future[_Cached]] = {}

    def _now(self) -> float:
        return self._core.clock.now().timestamp()

    async def token(
        self, set_id: str, version: int, fetch: Fetch, *, stale: Secret[str] | None = None
    ) -> Secret[str]:
        """A current access token for the set at ``version`` or newer; ``stale`` is one the
        upstream refused (401), which is then replaced unless another request already did."""
        cached = self._memory.get(set_id)
        if cached is not None and cached.version >= version and not cached.due(self._now()):
            if stale is None or cached.token.reveal() != stale.reveal():
                return cached.token
        flight = self._flights.get(set_id)
        if flight is None:
            flight = asyncio.ensure_future(self._obtain(set_id, version, fetch, stale))
            self._flights[set_id] = flight
            flight.add_done_callback(lambda done: self._landed(set_id, done))
        return (await asyncio.shield(flight)).token

    def _landed(self, set_id: str, done: asyncio.Future[_Cached]) -> None:
        if self._flights.get(set_id) is done:
            del self._flights[set_id]
        if not done.cancelled() and done.exception() is None:
            self._memory[set_id] = done.result()

    def forget(self, set_id: str) -> None:
        self._memory.pop(set_id, None)

    def forget_all(self) -> None:
        self._memory.clear()

    async def _obtain(
        self, set_id: str, version: int, fetch: Fetch, stale: Secret[str] | None
    ) -> _Cached:
        deadline = time.monotonic() + self.policy.wait
        while True:
            async with self._core.db.read() as conn:
                row = await sets_sql.get_set_by_id(conn, set_id)
                state = await token_sql.get(conn, set_id)
            if row is None or row.deleted_at is not None or not row.profile:
                raise CredentialRefreshFailed("the secret set is gone", reason="no_set")
            usable = await self._usable(state, max(version, 0), stale)
            if usable is not None:
                return usable
            if (
                state is not None
                and state.reconnect
                and (state.reconnect_version or 0) >= row.version
            ):
                raise CredentialRefreshFailed(
                    "the provider refused this set's grant; reconnect it on the dashboard or "
                    "store a new refresh token",
                    reason="reconnect_needed",
                )
            who = new_id()
            now = self._core.clock.now()
            until = now + timedelta(seconds=self.policy.claim_seconds)
            async with self._core.write() as tx:
                won = await token_sql.claim(tx.conn, set_id, who, isoformat(now), isoformat(until))
            if won:
                result = await self._refresh_claimed(set_id, version, who, fetch, stale)
                if result is not None:
                    return result
                continue  # the set changed under an invalid_grant: read it again
            if time.monotonic() > deadline:
                raise CredentialRefreshFailed(
                    "another node's refresh did not finish in time", reason="busy"
                )
            await self._sleep(self.policy.poll)

    async def _usable(
        self, state: TokenState | None, version: int, stale: Secret[str] | None
    ) -> _Cached | None:
        if (
            state is None
            or state.ciphertext is None
            or state.wrapped_dek is None
            or state.kek_term is None
            or state.version is None
            or state.expires_at is None
            or state.version < version
        ):
            return None
        expires = parse_iso(state.expires_at, bounded=False).timestamp()
        try:
            entries = await self._core.open_entries(
                _token_aad(state.set_id),
                state.version,
                state.kek_term,
                state.wrapped_dek,
                state.ciphertext,
            )
        except DecryptionFailed:
            # A stored token is a cache: one that no longer opens (its key term retired
            # before ``keys rewrap`` reached it, or a damaged row) is fetched again.
            log.warning("a stored access token did not open; fetching a new one")
            return None
        token = Secret(str(entries.get("access_token", "")))
        cached = _Cached(token, state.version, expires, state.lifetime or 1)
        if cached.due(self._now()) or not token.reveal():
            return None
        if stale is not None and token.reveal() == stale.reveal():
            return None
        return cached

    async def _refresh_claimed(
        self, set_id: str, version: int, who: str, fetch: Fetch, stale: Secret[str] | None
    ) -> _Cached | None:
        """Mint under our claim; None when the set changed and must be read again."""
        try:
            async with self._core.db.read() as conn:
                row = await sets_sql.get_set_by_id(conn, set_id)
                stored = await sets_sql.get_version(conn, set_id, row.version) if row else None
                state = await token_sql.get(conn, set_id)
            # The last refresher may have stored its token between our read and our claim.
            usable = await self._usable(state, version, stale)
            if usable is not None:
                await self._release(set_id, who)
                return usable
            if row is None or stored is None or not row.profile:
                raise CredentialRefreshFailed("the secret set is gone", reason="no_set")
            profile = Profile.model_validate(row.profile)
            spec = profile.inject
            if not isinstance(spec, OAuth2 | GoogleServiceAccount | GitHubApp):
                raise CredentialRefreshFailed("the set is not refreshed", reason="not_refreshed")
            entries = await self._core.open_entries(
                set_id, stored.version, stored.kek_term, stored.wrapped_dek, stored.ciphertext
            )
            try:
                minted = await self._mint(spec, entries, profile.allow_private_upstream, fetch)
            except InvalidGrant:
                async with self._core.db.read() as conn:
                    again = await sets_sql.get_set_by_id(conn, set_id)
                if again is not None and again.version != row.version:
                    await self._release(set_id, who)
                    return None
                await self._mark_reconnect(row, who, _grant(spec))
                raise CredentialRefreshFailed(
                    "the provider refused this set's grant (invalid_grant); reconnect it",
                    reason="invalid_grant",
                ) from None
            return await self._store(row, who, spec, entries, minted)
        except CredentialRefreshFailed as failed:
            if failed.extra.get("reason") != "invalid_grant":
                await self._release(set_id, who, failed=str(failed.extra.get("reason")))
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                await self._release(set_id, who)
            raise

    async def _mint(
        self,
        spec: OAuth2 | GoogleServiceAccount | GitHubApp,
        entries: dict[str, str],
        allow_private: bool,
        fetch: Fetch,
    ) -> Minted:
        attempts = max(1, self.policy.attempts)
        for attempt in range(attempts):
            now = self._core.clock.now()
            call = call_for(spec, entries, allow_private, now)
            try:
                return read_answer(spec, await fetch(call), now)
            except EndpointFailed as failed:
                # A refresh token may have been spent by a request whose answer was lost;
                # only failures before the endpoint handled it are retried (see fetcher).
                log.warning("token endpoint failed (%s), attempt %d", failed, attempt + 1)
                if attempt + 1 == attempts:
                    break
                await self._sleep(self.policy.backoff * 2**attempt)
        raise CredentialRefreshFailed(
            "the token endpoint did not answer usefully; try again later", reason="endpoint"
        )

    async def _store(
        self,
        row: SetRow,
        who: str,
        spec: OAuth2 | GoogleServiceAccount | GitHubApp,
        entries: dict[str, str],
        minted: Minted,
    ) -> _Cached:
        now = self._core.clock.now()
        async with self._core.write() as tx:
            current = await sets_sql.get_set_by_id(tx.conn, row.id)
            if current is None:
                raise CredentialRefreshFailed("the secret set is gone", reason="no_set")
            version = current.version
            rotated = False
            key = spec.refresh_token if isinstance(spec, OAuth2) else None
            fresh = minted.refresh_token
            if key is not None and fresh is not None and fresh.reveal() != entries.get(key):
                if current.version != row.version:
                    stored = await sets_sql.get_version(tx.conn, row.id, current.version)
                    assert stored is not None
                    entries = await self._core.open_entries(
                        row.id,
                        stored.version,
                        stored.kek_term,
                        stored.wrapped_dek,
                        stored.ciphertext,
                    )
                entries = {**entries, key: fresh.reveal()}
                version = await self._sets.store_rotated(tx, ACTOR, current, entries, [key])
                rotated = True
            await self._core.sync_terms(tx)
            plain = json.dumps({"access_token": minted.access_token.reveal()}).encode()
            sealed = crypto.seal(self._core.ring, plain, set_id=_token_aad(row.id), version=version)
            expires = now + timedelta(seconds=minted.lifetime)
            await token_sql.release(
                tx.conn,
                row.id,
                who,
                isoformat(now),
                version=version,
                kek_term=sealed.term,
                wrapped_dek=sealed.wrapped_dek,
                ciphertext=sealed.ciphertext,
                expires_at=isoformat(expires),
                lifetime=minted.lifetime,
                reconnect=None,
                reconnect_version=None,
            )
            await self._core.record(
                tx,
                ACTOR,
                "credential.refresh",
                f"secret_set:{row.path}",
                details={
                    "grant": _grant(spec),
                    "version": version,
                    "rotated": rotated,
                    "expires_in": minted.lifetime,
                },
            )
            tx.announce(f"token:{row.id}")  # other nodes read the new token on next use
        return _Cached(minted.access_token, version, expires.timestamp(), minted.lifetime)

    async def _release(self, set_id: str, who: str, failed: str | None = None) -> None:
        now = isoformat(self._core.clock.now())
        async with self._core.write() as tx:
            await token_sql.release(tx.conn, set_id, who, now)
            if failed is not None:
                row = await sets_sql.get_set_by_id(tx.conn, set_id)
                path = row.path if row is not None else set_id
                await self._core.record(
                    tx,
                    ACTOR,
                    "credential.refresh",
                    f"secret_set:{path}",
                    details={"reason": failed},
                    outcome="error",
                )

    async def _mark_reconnect(self, row: SetRow, who: str, grant: str) -> None:
        now = isoformat(self._core.clock.now())
        async with self._core.write() as tx:
            await token_sql.release(
                tx.conn,
                row.id,
                who,
                now,
                reconnect="invalid_grant",
                reconnect_version=row.version,
                ciphertext=None,
                wrapped_dek=None,
                expires_at=None,
            )
            await self._core.record(
                tx,
                ACTOR,
                "credential.reconnect_needed",
                f"secret_set:{row.path}",
                details={"grant": grant, "version": row.version, "reason": "invalid_grant"},
                outcome="error",
            )
            tx.announce(f"token:{row.id}")
        self.forget(row.id)

    async def status(self) -> dict[str, Any]:
        """Set id → reconnect reason, for sets whose current version needs a reconnect."""
        async with self._core.db.read() as conn:
            marks = await token_sql.reconnect_marks(conn)
            out: dict[str, Any] = {}
            for set_id, (reason, version) in marks.items():
                row = await sets_sql.get_set_by_id(conn, set_id)
                if row is not None and (version or 0) >= row.version:
                    out[set_id] = reason
        return out


def _grant(spec: OAuth2 | GoogleServiceAccount | GitHubApp) -> str:
    if isinstance(spec, OAuth2):
        return spec.grant
    return "jwt_bearer" if isinstance(spec, GoogleServiceAccount) else "github_app"
