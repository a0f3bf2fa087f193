"""Operator tokens (``kfo_…``): create, list, revoke, and authenticate requests.

Tokens are looked up by HMAC digest (no slow hash on the request path); every failed
authentication is audited, and the answer is the same whatever the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keyfob import tokens
from keyfob.errors import Conflict, NotFound, Unauthorized, ValidationFailed
from keyfob.secret import SECRET, Masked, Secret
from keyfob.store import TokenRow
from keyfob.store import tokens as sql
from keyfob.vault import validation
from keyfob.vault.context import Context
from keyfob.vault.core import UNAUTHORIZED, Core

MAX_NAME = 64


@dataclass(frozen=True)
class Principal(Masked):
    """An authenticated operator; ``actor`` is what the audit log records."""

    kind: str
    id: str
    name: str
    # The digest of the token that authenticated it: the transaction that acts for the
    # principal checks it is still current (a rotated or disabled agent acts no more).
    credential: str | None = field(default=None, compare=False, metadata=SECRET)

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"


class Operators:
    def __init__(self, core: Core) -> None:
        self._core = core

    async def create_token(self, ctx: Context, name: str) -> tuple[dict[str, Any], Secret[str]]:
        name = name.strip()
        if (
            not name
            or len(name) > MAX_NAME
            or any(c in name for c in "\r\n\x00")
            or not validation.is_text(name)
        ):
            raise ValidationFailed(
                f"name: 1-{MAX_NAME} characters, one line",
                errors=[{"loc": ["name"], "msg": f"1-{MAX_NAME} characters, one line"}],
            )
        async with self._core.write() as tx:
            row, token = await self.insert_token(tx, ctx, name)
        return row.as_dict(), token

    async def insert_token(self, tx: Any, ctx: Context, name: str) -> tuple[TokenRow, Secret[str]]:
        """Create a token inside an open write transaction (also used by ``init``)."""
        token = tokens.new_token(tokens.OPERATOR)
        row = TokenRow(tokens.new_id(), name, self._core.now(), ctx.actor, None)
        await sql.insert(tx.conn, row, tokens.digest(self._core.ring.system.token_key, token))
        await self._core.record(
            tx, ctx, "token.create", f"token:{row.id}", details={"name": name, "kind": "operator"}
        )
        return row, Secret(token)

    async def list_tokens(self) -> list[dict[str, Any]]:
        async with self._core.db.read() as conn:
            return [r.as_dict() for r in await sql.list_all(conn)]

    async def revoke_token(self, ctx: Context, token_id: str) -> dict[str, Any]:
        async with self._core.write() as tx:
            row = await sql.by_id(tx.conn, token_id)
            if row is None:
                raise NotFound(f"operator token {token_id} does not exist")
            if row.revoked_at is not None:
                raise Conflict(f"operator token {token_id} is already revoked")
            now = self._core.now()
            await sql.revoke(tx.conn, token_id, now)
            await self._core.record(
                tx,
                ctx,
                "token.revoke",
                f"token:{token_id}",
                details={"name": row.name, "kind": "operator"},
            )
        return {**row.as_dict(), "revoked_at": now}

    async def authenticate(self, token: str | None, ctx: Context, route: str) -> Principal:
        """The operator behind ``token``, or an audited ``Unauthorized``."""
        reason = "missing"
        if token:
            reason = "malformed"
            if tokens.looks_like(token, tokens.OPERATOR):
                digest = tokens.digest(self._core.ring.system.token_key, token)
                async with self._core.db.read() as conn:
                    row = await sql.by_digest(conn, digest)
                if row is not None and row.revoked_at is None:
                    return Principal("operator", row.id, row.name)
                reason = "revoked" if row is not None else "unknown"
        await self._core.audit_auth_failure(ctx, route, reason, token)
        raise Unauthorized(UNAUTHORIZED)
