"""Dashboard users: argon2 passwords, sessions, and a backoff after failed sign-ins.

Passwords are hashed with argon2 (only here, never on a machine-token path). After
``FREE_ATTEMPTS`` failures an account is locked for a time that doubles with each
further failure (capped); every failure and lock is audited. Sessions are random
tokens kept only as HMAC digests, so signing out or disabling a user ends them at once.
"""

from __future__ import annotations

import functools
import secrets
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from keyfob import tokens
from keyfob.clock import isoformat, parse_iso
from keyfob.errors import Conflict, TooManyRequests, Unauthorized, ValidationFailed
from keyfob.profiles import SLUG_RE
from keyfob.secret import Secret
from keyfob.settings import Settings
from keyfob.store import users as sql
from keyfob.store.users import UserRow
from keyfob.vault import validation
from keyfob.vault.context import Context
from keyfob.vault.core import Core
from keyfob.vault.operators import Principal

MIN_PASSWORD = 12
MAX_PASSWORD = 1024
FREE_ATTEMPTS = 5
BASE_LOCK = 30
MAX_LOCK = 900
SESSION_TTL = 8 * 3600
BAD_LOGIN = "wrong user name or password"



def password_hasher(settings: Settings) -> PasswordHasher:
    """The argon2id hasher the ``KEYFOB_PASSWORD_HASH_*`` settings describe."""
    return PasswordHasher(
        time_cost=settings.password_hash_time_cost,
        memory_cost=settings.password_hash_memory_kib,
        parallelism=settings.password_hash_parallelism,
    )


@functools.cache
def _dummy_hash(hasher: PasswordHasher) -> str:
    """Verified against when the user does not exist, so timing does not tell names apart.
    Made on first use: hashing costs 64 MiB and a fraction of a second at start-up."""
    return hasher.hash(secrets.token_hex(16))


def _fail(field: str, msg: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {msg}", errors=[{"loc": [field], "msg": msg}])


def lock_seconds(failures: int) -> int:
    """How long an account stays locked after ``failures`` consecutive failures."""
    if failures < FREE_ATTEMPTS:
        return 0
    return int(min(MAX_LOCK, BASE_LOCK * 2 ** (failures - FREE_ATTEMPTS)))


def user_view(row: UserRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "created_at": row.created_at,
        "created_by": row.created_by,
        "disabled_at": row.disabled_at,
        "locked_until": row.locked_until,
    }


class Users:
    def __init__(self, core: Core, hasher: PasswordHasher | None = None) -> None:
        self._core = core
        self._hasher = hasher or PasswordHasher()

    async def create(self, ctx: Context, name: str, password: Secret[str]) -> dict[str, Any]:
        if not SLUG_RE.match(name):
            raise _fail("name", "1-64 characters of a-z, 0-9, '-' or '_'")
        plain = password.reveal()
        if not validation.is_text(plain) or not MIN_PASSWORD <= len(plain) <= MAX_PASSWORD:
            raise _fail("password", f"{MIN_PASSWORD} to {MAX_PASSWORD} characters")
        digest = self._hasher.hash(plain)
        async with self._core.write() as tx:
            if await sql.user_by(tx.conn, name=name) is not None:
                raise Conflict(f"user {name} already exists")
            row = UserRow(tokens.new_id(), name, digest, 0, None, self._core.now(), ctx.actor, None)
            await sql.insert_user(tx.conn, row)
            await self._audit(tx, ctx, "user.create", row, "ok", {"name": name})
        return user_view(row)

    async def list_all(self) -> list[dict[str, Any]]:
        async with self._core.db.read() as conn:
            return [user_view(r) for r in await sql.list_users(conn)]

    async def sign_in(
        self, name: str, password: Secret[str], ctx: Context
    ) -> tuple[Principal, Secret[str]]:
        """A session token for a correct password; audited failures and backoff otherwise."""
        async with self._core.db.read() as conn:
            row = await sql.user_by(conn, name=name) if SLUG_RE.match(name) else None
        now = self._core.now()
        if row is not None and row.locked_until and row.locked_until > now:
            await self._failure(ctx, row, name, "locked")
            raise TooManyRequests(
                "too many failed sign-ins; try again later", retry_after=self._left(row)
            )
        if not self._verify(row, password.reveal()) or row is None or row.disabled_at:
            await self._failure(ctx, row, name, "bad_password" if row else "unknown_user")
            raise Unauthorized(BAD_LOGIN)
        token = secrets.token_urlsafe(32)
        expires = isoformat(self._core.clock.now() + timedelta(seconds=SESSION_TTL))
        async with self._core.write() as tx:
            await sql.delete_expired_sessions(tx.conn, now)
            await sql.update_user(tx.conn, row.id, failed_count=0, locked_until=None)
            await sql.insert_session(tx.conn, self._digest(token), row.id, now, expires)
            await self._audit(tx, _as(row, ctx), "user.login", row, "ok", {"name": row.name})
        return Principal("user", row.id, row.name), Secret(token)

    async def session(self, token: str | None) -> Principal | None:
        if not token:
            return None
        async with self._core.db.read() as conn:
            row = await sql.session_user(conn, self._digest(token), self._core.now())
        return Principal("user", row.id, row.name) if row else None

    async def sign_out(self, token: str, ctx: Context) -> None:
        async with self._core.write() as tx:
            if await sql.delete_session(tx.conn, self._digest(token)):
                await self._core.record(tx, ctx, "user.logout", ctx.actor, details={})

    def csrf_token(self, session_token: str) -> str:
        """The form token of a session: derived, so nothing more is stored."""
        return tokens.digest(self._core.ring.system.token_key, "csrf:" + session_token)[:32]

    def _verify(self, row: UserRow | None, password: str) -> bool:
        # Made on the first sign-in whoever signs in, so even that one tells no names apart.
        dummy = _dummy_hash(self._hasher)
        try:
            return self._hasher.verify(row.password_hash if row else dummy, password) and (
                row is not None
            )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _left(self, row: UserRow) -> int:
        assert row.locked_until is not None
        return max(1, int((parse_iso(row.locked_until) - self._core.clock.now()).total_seconds()))

    async def _failure(self, ctx: Context, row: UserRow | None, name: str, reason: str) -> None:
        async with self._core.write() as tx:
            details: dict[str, Any] = {"name": name[:64], "reason": reason}
            if row is not None and reason != "locked":
                fresh = await sql.user_by(tx.conn, id=row.id) or row
                failures = fresh.failed_count + 1
                seconds = lock_seconds(failures)
                locked = (
                    isoformat(self._core.clock.now() + timedelta(seconds=seconds))
                    if seconds
                    else None
                )
                await sql.update_user(tx.conn, row.id, failed_count=failures, locked_until=locked)
                details.update(failures=failures, locked_for=seconds)
            await self._core.record(
                tx,
                ctx,
                "user.login_failed",
                f"user:{row.id}" if row else "user:?",
                details=details,
                outcome="denied",
            )

    def _digest(self, token: str) -> str:
        return tokens.digest(self._core.ring.system.token_key, "session:" + token)

    async def _audit(
        self,
        tx: Any,
        ctx: Context,
        action: str,
        row: UserRow,
        outcome: str,
        details: dict[str, Any],
    ) -> None:
        await self._core.record(tx, ctx, action, f"user:{row.id}", details=details, outcome=outcome)


def _as(row: UserRow, ctx: Context) -> Context:
    return Context(f"user:{row.id}", ctx.request_id, ctx.client)
