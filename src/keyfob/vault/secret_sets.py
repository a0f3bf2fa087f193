"""Secret sets: create, update, version, roll back, delete, restore, purge.

The only place secret values are in memory in plaintext (besides the proxy, later):
they arrive here, are sealed, and leave only as ciphertext or, via ``reveal``, to an
explicitly allowed caller.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from keyfob import crypto
from keyfob.errors import Conflict, DecryptionFailed, InvalidRequest, NotFound
from keyfob.profiles import Profile
from keyfob.secret import Secret
from keyfob.store import KeyMeta, SetRow, Tx, VersionRow
from keyfob.store import access as access_sql
from keyfob.store import credential_tokens as token_sql
from keyfob.store import secrets as sql
from keyfob.text import digits
from keyfob.tokens import new_id
from keyfob.vault import paging, validation
from keyfob.vault.context import Context
from keyfob.vault.core import Core
from keyfob.vault.paging import Page, clamp
from keyfob.vault.views import Purged, SetView, VersionView, set_view, version_view

SETS = "secret_set"


def _target(path: str) -> str:
    return f"{SETS}:{path}"


def encode_cursor(row: SetRow) -> str:
    return base64.urlsafe_b64encode(row.path.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        provider, environment, name = raw.split("/")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("cursor is not one this server handed out") from None
    return provider, environment, name


class SecretSets:
    def __init__(self, core: Core) -> None:
        self._core = core

    # -- reading ----------------------------------------------------------------------

    async def get(self, path: str) -> SetView:
        async with self._core.db.read() as conn:
            row = await self._find(conn, path)
            current = await sql.get_version(conn, row.id, row.version)
            state = await token_sql.get(conn, row.id) if row.profile else None
        marked = state is not None and state.reconnect is not None
        needs = marked and (state.reconnect_version or 0) >= row.version  # type: ignore[union-attr]
        return set_view(row, current, needs)

    async def search(
        self,
        *,
        provider: str | None = None,
        environment: str | None = None,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        include_deleted: bool = False,
        cursor: str | None = None,
        limit: int = 100,
        prefix: str | None = None,
    ) -> tuple[list[SetView], str | None]:
        after = decode_cursor(cursor) if cursor else None
        async with self._core.db.read() as conn:
            rows = await sql.list_sets(
                conn,
                provider=provider,
                environment=environment,
                name=name,
                labels=labels,
                include_deleted=include_deleted,
                after=after,
                limit=limit + 1,
                prefix=prefix,
            )
            marks = await token_sql.reconnect_marks(conn)
            page = rows[:limit]
            current = await sql.get_versions(conn, [(r.id, r.version) for r in page])
            items = [
                set_view(
                    r,
                    current.get((r.id, r.version)),
                    r.id in marks and (marks[r.id][1] or 0) >= r.version,
                )
                for r in page
            ]
        next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        return items, next_cursor

    async def versions(self, path: str) -> list[VersionView]:
        async with self._core.db.read() as conn:
            row = await self._find(conn, path)
            return [version_view(v) for v in await sql.list_versions(conn, row.id)]

    async def versions_page(
        self, path: str, *, cursor: str | None = None, limit: int = 50
    ) -> Page[VersionView]:
        """A set's versions newest first, a page at a time (keyset on the version number)."""
        limit = clamp(limit)
        key = paging.decode(cursor, 1)
        if key is not None and not digits(key[0], 9):
            raise InvalidRequest("cursor is not one this server handed out")
        async with self._core.db.read() as conn:
            row = await self._find(conn, path)
            rows = await sql.list_versions(
                conn, row.id, below=int(key[0]) if key else None, limit=limit + 1
            )
        shown, after = paging.page_of(rows, limit, lambda v: (str(v.version),))
        return Page([version_view(v) for v in shown], after)

    async def reveal(self, path: str, version: int | None = None) -> dict[str, Secret[str]]:
        """Decrypted entries, each wrapped in ``Secret``; for the proxy and granted export."""
        async with self._core.db.read() as conn:
            row = await self._find(conn, path, include_deleted=False)
            stored = await sql.get_version(conn, row.id, version or row.version)
        if stored is None:
            raise NotFound(f"secret set {path} has no version {version}")
        return {k: Secret(v) for k, v in (await self._open(stored)).items()}

    # -- writing ----------------------------------------------------------------------

    async def create(
        self,
        ctx: Context,
        *,
        provider: str,
        environment: str,
        name: str,
        entries: Mapping[str, object],
        labels: Mapping[str, object] | None = None,
        profile: Mapping[str, Any] | None = None,
    ) -> SetView:
        validation.path_parts(provider, environment, name)
        values = validation.check_entries(entries, allow_null=False)
        validation.check_key_count(len(values))
        clean_labels = validation.check_labels(labels or {})
        clean_profile = validation.check_profile(profile, set(values)) if profile else None
        validation.check_refreshed(clean_profile, {k: v for k, v in values.items() if v})
        path = f"{provider}/{environment}/{name}"
        async with self._core.write() as tx:
            existing = await sql.get_set(tx.conn, provider, environment, name)
            if existing is not None:
                state = "deleted; restore or purge it first" if existing.deleted_at else "exists"
                raise Conflict(f"secret set {path} already {state}")
            now = self._core.now()
            row = SetRow(
                id=new_id(),
                provider=provider,
                environment=environment,
                name=name,
                labels=clean_labels,
                profile=clean_profile,
                version=1,
                created_at=now,
                updated_at=now,
                deleted_at=None,
                exported_at=None,
            )
            await sql.insert_set(tx.conn, row)
            plain = {k: v for k, v in values.items() if v is not None}
            current = await self._store_version(tx, ctx, row, 1, plain, {}, "create", None)
            await self._audit(tx, ctx, "create", path, version=1, keys_set=sorted(plain))
        return set_view(row, current)

    async def update(
        self,
        ctx: Context,
        path: str,
        *,
        entries: Mapping[str, object] | None = None,
        labels: Mapping[str, object] | None = None,
        profile: Mapping[str, Any] | None = None,
        expected_version: int | None = None,
    ) -> SetView:
        changes = validation.check_entries(entries or {}, allow_null=True)
        clean_labels = validation.check_labels(labels) if labels is not None else None
        async with self._core.write() as tx:
            row = await self._find(tx.conn, path, include_deleted=False)
            self._expect(row, expected_version)
            current = await self._current(tx, row)
            old = await self._open(current)
            new = dict(old)
            for key, value in changes.items():
                if value is None:
                    new.pop(key, None)
                else:
                    new[key] = value
            validation.check_key_count(len(new))
            spec = profile if profile is not None else row.profile
            clean_profile = validation.check_profile(spec, set(new)) if spec else None
            validation.check_refreshed(clean_profile, new)
            meta_changed = (clean_labels is not None and clean_labels != row.labels) or (
                clean_profile != row.profile
            )
            if new == old and not meta_changed:
                return set_view(row, current)
            # Every change, labels and profile included, makes a version: the version is
            # what If-Match compares, so no change may slip past it.
            version = row.version + 1
            prior = {k.name: k for k in current.keys}
            current = await self._store_version(tx, ctx, row, version, new, prior, "update", None)
            now = self._core.now()
            values: dict[str, Any] = {"version": version, "updated_at": now}
            if clean_labels is not None:
                values["labels"] = clean_labels
            values["profile"] = clean_profile
            await sql.update_set(tx.conn, row.id, **values)
            await self._audit(
                tx,
                ctx,
                "update",
                path,
                version=version,
                keys_set=sorted(k for k, v in changes.items() if v is not None),
                keys_removed=sorted(k for k, v in changes.items() if v is None and k in old),
                labels_changed=clean_labels is not None and clean_labels != row.labels,
                profile_changed=clean_profile != row.profile,
            )
            row = await self._find(tx.conn, path)
            tx.announce(f"set:{row.id}")  # other nodes drop its keys and tokens
        self._core.data_keys.forget(row.id)
        return set_view(row, current)

    async def store_rotated(
        self, tx: Tx, ctx: Context, row: SetRow, entries: dict[str, str], changed: list[str]
    ) -> int:
        """A new version with a provider-rotated value (refresh token), audited; its number."""
        current = await self._current(tx, row)
        prior = {k.name: k for k in current.keys}
        version = row.version + 1
        await self._store_version(tx, ctx, row, version, entries, prior, "refresh", None)
        await sql.update_set(tx.conn, row.id, version=version, updated_at=self._core.now())
        await self._audit(tx, ctx, "rotate", row.path, version=version, keys_set=changed)
        tx.announce(f"set:{row.id}")
        return version

    async def rollback(
        self, ctx: Context, path: str, version: int, *, expected_version: int | None = None
    ) -> SetView:
        async with self._core.write() as tx:
            row = await self._find(tx.conn, path, include_deleted=False)
            self._expect(row, expected_version)
            source = await sql.get_version(tx.conn, row.id, version)
            if source is None:
                raise NotFound(f"secret set {path} has no version {version}")
            plain = await self._open(source)
            if row.profile:
                validation.profile_keys_ok(Profile.model_validate(row.profile), set(plain))
            current = await self._current(tx, row)
            prior = {k.name: k for k in current.keys}
            new_version = row.version + 1
            stored = await self._store_version(
                tx, ctx, row, new_version, plain, prior, "rollback", version
            )
            await sql.update_set(tx.conn, row.id, version=new_version, updated_at=self._core.now())
            await self._audit(tx, ctx, "rollback", path, version=new_version, rollback_of=version)
            row = await self._find(tx.conn, path)
            tx.announce(f"set:{row.id}")  # other nodes drop its keys and tokens
        self._core.data_keys.forget(row.id)
        return set_view(row, stored)

    async def delete(self, ctx: Context, path: str) -> SetView:
        async with self._core.write() as tx:
            row = await self._find(tx.conn, path, include_deleted=False)
            now = self._core.now()
            await sql.update_set(tx.conn, row.id, deleted_at=now, updated_at=now)
            revoked = await access_sql.revoke_leases(tx.conn, now, "set_deleted", set_id=row.id)
            await self._audit(
                tx, ctx, "delete", path, version=row.version, leases_revoked=len(revoked)
            )
            row = await self._find(tx.conn, path)
            current = await sql.get_version(tx.conn, row.id, row.version)
            tx.announce(f"set:{row.id}")  # other nodes drop its keys and tokens
        self._core.data_keys.forget(row.id)
        return set_view(row, current)

    async def restore(self, ctx: Context, path: str) -> SetView:
        async with self._core.write() as tx:
            row = await self._find(tx.conn, path)
            if row.deleted_at is None:
                raise Conflict(f"secret set {path} is not deleted")
            await sql.update_set(tx.conn, row.id, deleted_at=None, updated_at=self._core.now())
            await self._audit(tx, ctx, "restore", path, version=row.version)
            row = await self._find(tx.conn, path)
            current = await sql.get_version(tx.conn, row.id, row.version)
        return set_view(row, current)

    async def purge(self, ctx: Context, path: str) -> Purged:
        async with self._core.write() as tx:
            row = await self._find(tx.conn, path)
            if row.deleted_at is None:
                raise Conflict(f"secret set {path} must be deleted before it can be purged")
            now = self._core.now()
            revoked = await access_sql.revoke_leases(tx.conn, now, "set_purged", set_id=row.id)
            grants = await access_sql.revoke_grants(tx.conn, now, set_id=row.id)
            await token_sql.purge(tx.conn, row.id)
            removed = await sql.purge_set(tx.conn, row.id)
            await self._audit(
                tx,
                ctx,
                "purge",
                path,
                versions=removed,
                leases_revoked=len(revoked),
                grants_revoked=len(grants),
            )
            tx.announce(f"set:{row.id}")  # other nodes drop its keys and tokens
        self._core.data_keys.forget(row.id)
        return Purged(purged=path, versions=removed)

    # -- helpers ----------------------------------------------------------------------

    async def _find(self, conn: Any, path: str, *, include_deleted: bool = True) -> SetRow:
        provider, environment, name = validation.split_path(path)
        row = await sql.get_set(conn, provider, environment, name)
        if row is None or (row.deleted_at is not None and not include_deleted):
            raise NotFound(f"secret set {path} does not exist")
        return row

    @staticmethod
    def _expect(row: SetRow, expected: int | None) -> None:
        if expected is not None and expected != row.version:
            raise Conflict(
                f"secret set {row.path} is at version {row.version}, not {expected}: "
                "someone else changed it; reload and retry",
                current_version=row.version,
            )

    async def _current(self, tx: Tx, row: SetRow) -> VersionRow:
        current = await sql.get_version(tx.conn, row.id, row.version)
        if current is None:
            raise DecryptionFailed()
        return current

    async def _open(self, stored: VersionRow) -> dict[str, str]:
        return await self._core.open_entries(
            stored.set_id, stored.version, stored.kek_term, stored.wrapped_dek, stored.ciphertext
        )

    async def _store_version(
        self,
        tx: Tx,
        ctx: Context,
        row: SetRow,
        version: int,
        entries: dict[str, str],
        prior: dict[str, KeyMeta],
        reason: str,
        rollback_of: int | None,
    ) -> VersionRow:
        await self._core.sync_terms(tx)
        fingerprint = self._core.ring.system.fingerprint
        keys = []
        for name in sorted(entries):
            mark = fingerprint(entries[name])
            old = prior.get(name)
            keys.append(
                KeyMeta(name, mark, old.version if old and old.fingerprint == mark else version)
            )
        plain = json.dumps(entries, sort_keys=True, separators=(",", ":")).encode()
        sealed = crypto.seal(self._core.ring, plain, set_id=row.id, version=version)
        stored = VersionRow(
            set_id=row.id,
            version=version,
            created_at=self._core.now(),
            actor=ctx.actor,
            reason=reason,
            rollback_of=rollback_of,
            keys=tuple(keys),
            kek_term=sealed.term,
            wrapped_dek=sealed.wrapped_dek,
            ciphertext=sealed.ciphertext,
        )
        await sql.insert_version(tx.conn, stored)
        return stored

    async def _audit(self, tx: Tx, ctx: Context, verb: str, path: str, **details: Any) -> None:
        await self._core.record(tx, ctx, f"{SETS}.{verb}", _target(path), details=details)
