"""Dashboard users: argon2 passwords, sessions, lifecycle, and limits on failed sign-ins.

Passwords are hashed with argon2 on a bounded worker pool (``passwords``), never on the
event loop and never on a machine-token path. Every sign-in takes an attempt from two
counters before its password is checked — one per typed name (a keyed hash, so unknown
names lock exactly like known ones and tell nothing apart) and one per client address —
in one conditional UPDATE each, so concurrent guesses cannot slip past a lock. After
the free attempts a counter locks for a time that doubles per further failure (capped).
Sessions are random tokens kept only as HMAC digests: signing out, disabling or deleting
a user, or changing a password ends them at once.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import secrets
from datetime import timedelta
from typing import Any

from keyfob import tokens
from keyfob.clock import isoformat, parse_iso
from keyfob.errors import Conflict, NotFound, TooManyRequests, Unauthorized
from keyfob.profiles import SLUG_RE
from keyfob.secret import Secret
from keyfob.store import users as sql
from keyfob.store.users import UserRow
from keyfob.vault import validation
from keyfob.vault.context import Context
from keyfob.vault.core import Core
from keyfob.vault.operators import Principal
from keyfob.vault.paging import Page, clamp, decode, page_of
from keyfob.vault.passwords import Passwords

MIN_PASSWORD = 12
MAX_PASSWORD = 1024
FREE_ATTEMPTS = 5  # per typed name
ADDRESS_FREE_ATTEMPTS = 20  # per client address (an IPv6 /64 counts as one)
BASE_LOCK = 30
MAX_LOCK = 900
FORGET_AFTER = 3600  # a counter with no failure for this long starts again
SESSION_TTL = 8 * 3600
BAD_LOGIN = "wrong user name or password"
MAX_NAME = 64


def lock_seconds(failures: int, free: int = FREE_ATTEMPTS) -> int:
    """How long a counter stays locked after ``failures`` consecutive failures."""
    if failures < free:
        return 0
    return int(min(MAX_LOCK, BASE_LOCK * 2 ** min(failures - free, 16)))


def address_key(client: str | None) -> str | None:
    """The counter of a client address; an IPv6 client counts by its /64."""
    if not client:
        return None
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return "addr:" + client[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"addr:{ip.ipv4_mapped}"
        return f"addr:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"addr:{ip}"


def user_view(row: UserRow, locked_until: str | None = None) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "created_at": row.created_at,
        "created_by": row.created_by,
        "disabled_at": row.disabled_at,
        "locked_until": locked_until,
    }


def _check_password(plain: str) -> None:
    if not validation.is_text(plain) or not MIN_PASSWORD <= len(plain) <= MAX_PASSWORD:
        raise validation.field_error("password", f"{MIN_PASSWORD} to {MAX_PASSWORD} characters")


class Users:
    def __init__(self, core: Core, passwords: Passwords) -> None:
        self._core = core
        self.passwords = passwords

    async def create(self, ctx: Context, name: str, password: Secret[str]) -> dict[str, Any]:
        if not SLUG_RE.match(name):
            raise validation.field_error("name", "1-64 characters of a-z, 0-9, '-' or '_'")
        _check_password(password.reveal())
        digest = await self.passwords.hash(password.reveal())
        async with self._core.write() as tx:
            if await sql.user_by(tx.conn, name=name) is not None:
                raise Conflict(f"user {name} already exists")
            row = UserRow(tokens.new_id(), name, digest, 0, None, self._core.now(), ctx.actor, None)
            await sql.insert_user(tx.conn, row)
            await self._audit(tx, ctx, "user.create", row, "ok", {"name": name})
        return user_view(row)

    async def list_all(self) -> list[dict[str, Any]]:
        async with self._core.db.read() as conn:
            rows = await sql.list_users(conn)
            locks = await sql.limits(conn, [self._name_key(r.name) for r in rows])
        return [user_view(r, self._live_lock(locks.get(self._name_key(r.name)))) for r in rows]

    async def page(
        self, *, prefix: str | None = None, cursor: str | None = None, limit: int = 50
    ) -> Page[dict[str, Any]]:
        """Users by name, a page at a time (keyset); ``prefix`` narrows by name."""
        limit = clamp(limit)
        async with self._core.db.read() as conn:
            rows = await sql.list_users(
                conn, prefix=prefix, after=decode(cursor, 1), limit=limit + 1
            )
            shown, after = page_of(rows, limit, lambda r: (r.name,))
            locks = await sql.limits(conn, [self._name_key(r.name) for r in shown])
        views = [user_view(r, self._live_lock(locks.get(self._name_key(r.name)))) for r in shown]
        return Page(views, after)

    async def get(self, ref: str) -> dict[str, Any]:
        """A user by id or name."""
        async with self._core.db.read() as conn:
            row = await self._find(conn, ref)
            locks = await sql.limits(conn, [self._name_key(row.name)])
        return user_view(row, self._live_lock(locks.get(self._name_key(row.name))))

    async def set_disabled(self, ctx: Context, ref: str, disabled: bool) -> dict[str, Any]:
        """Disable (every session ends at once) or enable a user."""
        async with self._core.write() as tx:
            row = await self._find(tx.conn, ref)
            when = self._core.now() if disabled else None
            ended = await sql.delete_user_sessions(tx.conn, row.id) if disabled else 0
            await sql.update_user(tx.conn, row.id, disabled_at=when)
            action = "user.disable" if disabled else "user.enable"
            await self._audit(tx, ctx, action, row, "ok", {"sessions_ended": ended})
            row = await sql.user_by(tx.conn, id=row.id) or row
        return user_view(row)

    async def delete(self, ctx: Context, ref: str) -> dict[str, Any]:
        """Delete a user and end its sessions."""
        async with self._core.write() as tx:
            row = await self._find(tx.conn, ref)
            ended = await sql.delete_user_sessions(tx.conn, row.id)
            await sql.delete_user(tx.conn, row.id)
            await sql.clear_limit(tx.conn, self._name_key(row.name))
            await self._audit(
                tx, ctx, "user.delete", row, "ok", {"name": row.name, "sessions_ended": ended}
            )
        return {**user_view(row), "deleted": True}

    async def set_password(
        self, ctx: Context, ref: str, password: Secret[str], *, keep_session: str | None = None
    ) -> dict[str, Any]:
        """A new password; every session of the user ends but ``keep_session`` (the one
        that asked, when users change their own), and the sign-in lock is lifted."""
        _check_password(password.reveal())
        digest = await self.passwords.hash(password.reveal())
        keep = self._digest(keep_session) if keep_session else None
        async with self._core.write() as tx:
            row = await self._find(tx.conn, ref)
            await sql.update_user(tx.conn, row.id, password_hash=digest)
            ended = await sql.delete_user_sessions(tx.conn, row.id, keep=keep)
            await sql.clear_limit(tx.conn, self._name_key(row.name))
            await self._audit(tx, ctx, "user.password", row, "ok", {"sessions_ended": ended})
        return user_view(row)

    async def sign_in(
        self, name: str, password: Secret[str], ctx: Context
    ) -> tuple[Principal, Secret[str]]:
        """A session token for a correct password; audited failures and locks otherwise.

        Known and unknown names take the same path: the same counters, the same argon2
        work (a dummy hash), the same answers.
        """
        typed = name[:MAX_NAME]
        with self.passwords.slot():  # 429 at once when the pool is full: no work, no count
            row, failures, locked_for = await self._take_attempts(typed, ctx)
            matched = await self.passwords.verify(
                row.password_hash if row else None, password.reveal()
            )
            return await self._finish(typed, row, matched, failures, locked_for, ctx)

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

    def name_hash(self, typed: str) -> str:
        """The keyed hash the audit log shows for a typed name that is no user's: a
        password pasted into the name field must not land in the log."""
        key = self._core.ring.system.token_key
        return hmac.new(key, b"signin-name:" + typed.encode(), hashlib.sha256).hexdigest()

    async def _take_attempts(self, typed: str, ctx: Context) -> tuple[UserRow | None, int, int]:
        """Count this attempt per address and per name, or refuse it (429) if either is
        locked; the user row (``None`` for an unknown name), its count and new lock."""
        now = self._core.now()
        moment = self._core.clock.now()
        forget = isoformat(moment + timedelta(seconds=FORGET_AFTER))
        name_key = self._name_key(typed)
        keys = [(k, f) for k, f in ((address_key(ctx.client), ADDRESS_FREE_ATTEMPTS),) if k]
        keys.append((name_key, FREE_ATTEMPTS))
        failures = locked_for = 0
        refused: tuple[str, str | None] | None = None
        async with self._core.write() as tx:
            await sql.purge_limits(tx.conn, now)
            row = await sql.user_by(tx.conn, name=typed) if SLUG_RE.match(typed) else None
            for key, free in keys:
                count = await sql.take_attempt(tx.conn, key, now, forget)
                if count is None:
                    reason = "locked" if key == name_key else "address_locked"
                    refused = (reason, await sql.locked_until(tx.conn, key))
                    break
                seconds = lock_seconds(count, free)
                if seconds:
                    until = isoformat(moment + timedelta(seconds=seconds))
                    await sql.lock(tx.conn, key, until, max(until, forget))
                if key == name_key:
                    failures, locked_for = count, seconds
            if refused is not None:
                await self._record_failure(tx, ctx, row, typed, {"reason": refused[0]})
        if refused is not None:
            raise TooManyRequests(
                "too many failed sign-ins; try again later", retry_after=self._left(refused[1])
            )
        return row, failures, locked_for

    async def _finish(
        self,
        typed: str,
        row: UserRow | None,
        matched: bool,
        failures: int,
        locked_for: int,
        ctx: Context,
    ) -> tuple[Principal, Secret[str]]:
        token = secrets.token_urlsafe(32)
        now = self._core.now()
        expires = isoformat(self._core.clock.now() + timedelta(seconds=SESSION_TTL))
        async with self._core.write() as tx:
            # Read again: the user may have been disabled or deleted during the check.
            fresh = await sql.user_by(tx.conn, id=row.id) if row else None
            if matched and fresh is not None and fresh.disabled_at is None:
                await sql.clear_limit(tx.conn, self._name_key(typed))
                client = address_key(ctx.client)
                if client:
                    await sql.forgive(tx.conn, client, ADDRESS_FREE_ATTEMPTS)
                await sql.delete_expired_sessions(tx.conn, now)
                await sql.insert_session(tx.conn, self._digest(token), fresh.id, now, expires)
                await self._audit(
                    tx, _as(fresh, ctx), "user.login", fresh, "ok", {"name": fresh.name}
                )
                return Principal("user", fresh.id, fresh.name), Secret(token)
            reason = (
                "unknown_user"
                if fresh is None
                else "disabled"
                if matched or fresh.disabled_at
                else "bad_password"
            )
            details = {"reason": reason, "failures": failures, "locked_for": locked_for}
            await self._record_failure(tx, ctx, fresh, typed, details)
        raise Unauthorized(BAD_LOGIN)

    async def _find(self, conn: Any, ref: str) -> UserRow:
        row = await sql.user_by(conn, id=ref) or await sql.user_by(conn, name=ref)
        if row is None:
            raise NotFound("no such user")
        return row

    def _name_key(self, typed: str) -> str:
        return "name:" + self.name_hash(typed)

    def _live_lock(self, until: str | None) -> str | None:
        return until if until and until > self._core.now() else None

    def _left(self, until: str | None) -> int:
        if until is None:
            return 1
        left = (parse_iso(until) - self._core.clock.now()).total_seconds()
        return max(1, math.ceil(left))

    async def _record_failure(
        self, tx: Any, ctx: Context, row: UserRow | None, typed: str, details: dict[str, Any]
    ) -> None:
        # A known name is the user's id and name; anything else only as a keyed hash.
        who = {"name": row.name} if row else {"name_hash": self.name_hash(typed)}
        await self._core.record(
            tx,
            ctx,
            "user.login_failed",
            f"user:{row.id}" if row else "user:?",
            details={**who, **details},
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
