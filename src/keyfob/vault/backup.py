"""``keyfob backup PATH`` and ``keyfob restore PATH``: the whole vault in one sealed file.

A backup file is::

    KEYFOB-BACKUP 1\\n
    {header: format, revision, created_at, database, counts, audit count and head}\\n
    nonce ‖ AES-256-GCM(body)            body: every table's rows as JSON

The body is sealed under a key derived from the master key (HKDF, label
``keyfob/backup/v1``) with the first two lines as associated data, so a changed header,
a changed or cut-short body and a wrong master key all fail the same way and nothing is
written. The master key is not in the file: restoring needs it. The rows are what the
database holds — secret values stay sealed under their own data keys inside the body.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyfob import __version__
from keyfob.crypto import MasterKeyProvider, master
from keyfob.errors import ConfigurationError, DecryptionFailed
from keyfob.settings import Settings
from keyfob.store import Database, snapshot
from keyfob.store import secrets as secrets_sql
from keyfob.vault.context import SYSTEM
from keyfob.vault.master_keys import missing_key_hint, open_master_key
from keyfob.vault.vault import Vault, _private_file

MAGIC = b"KEYFOB-BACKUP 1\n"
FORMAT = 1
# A header line longer than this is not one keyfob wrote.
_MAX_HEADER = 1 << 20


@dataclass(frozen=True)
class BackupFile:
    """A parsed, not yet opened backup: its header and the bytes the seal covers."""

    header: dict[str, Any]
    associated: bytes
    sealed: bytes


def _master(settings: Settings, doing: str) -> MasterKeyProvider:
    key = open_master_key(settings, create=False)
    if key is None:
        raise ConfigurationError(
            f"{doing} needs the vault's master key: {missing_key_hint(settings)} "
            "(a backup never contains it)"
        )
    return key


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` 0600 through a temporary file and a link; never replace a file.

    The temporary file is made by ``mkstemp`` (unpredictable name, ``O_EXCL``, 0600), so
    a symlink or file planted in a shared folder is neither followed nor reused.
    """
    if path.exists():
        raise ConfigurationError(f"{path} already exists; choose a new path for the backup")
    if not path.parent.is_dir():
        raise ConfigurationError(f"the folder {path.parent} does not exist")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temp, path, follow_symlinks=False)  # fails if PATH appeared meanwhile
    except FileExistsError:
        raise ConfigurationError(
            f"{path} already exists; choose a new path for the backup"
        ) from None
    finally:
        temp.unlink(missing_ok=True)


async def backup(settings: Settings, path: Path) -> dict[str, Any]:
    """Write a consistent, sealed copy of the vault to ``path`` while it keeps serving."""
    key = _master(settings, "a backup")
    # Proves the master key opens this vault; a backup never changes the schema.
    vault = await Vault.open(settings, migrate=False)
    try:
        dumped = await snapshot.dump(vault.db)
        header = {
            "format": FORMAT,
            "revision": dumped.revision,
            "created_at": vault.core.now(),
            "keyfob_version": __version__,
            "database": "sqlite" if vault.db.is_sqlite else "postgresql",
            "counts": dumped.counts(),
            "audit": {"count": dumped.audit_seq, "head": dumped.audit_head},
        }
        associated = MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n"
        body = json.dumps({"tables": dumped.tables}, separators=(",", ":")).encode()
        _write_private(path, associated + master.seal_backup(key, body, associated))
        async with vault.core.write() as tx:
            await vault.core.record(
                tx,
                SYSTEM,
                "vault.backup",
                "vault",
                details={
                    "revision": dumped.revision,
                    "audit_count": dumped.audit_seq,
                    "audit_head": dumped.audit_head,
                    "rows": sum(dumped.counts().values()),
                },
            )
    finally:
        await vault.close()
    return {"path": str(path), **header}


def read_backup(path: Path) -> BackupFile:
    """Parse a backup's frame and header; a clear ``ConfigurationError`` for anything else."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"{path} does not exist") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    if not raw.startswith(MAGIC):
        if raw.startswith(b"KEYFOB-BACKUP "):
            raise ConfigurationError(f"{path} is a backup in a format this keyfob does not know")
        raise ConfigurationError(f"{path} is not a keyfob backup")
    end = raw.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER)
    if end < 0:
        raise ConfigurationError(f"{path} is cut short or damaged (no header)")
    try:
        header = json.loads(raw[len(MAGIC) : end])
    except ValueError:
        header = None
    if not isinstance(header, dict) or not isinstance(header.get("revision"), str):
        raise ConfigurationError(f"{path} is damaged (its header is not readable)")
    if header.get("format") != FORMAT:
        raise ConfigurationError(f"{path} is a backup in a format this keyfob does not know")
    return BackupFile(header, raw[: end + 1], raw[end + 1 :])


def _open(file: BackupFile, key: MasterKeyProvider, path: Path) -> snapshot.Dump:
    try:
        body = json.loads(master.open_backup(key, file.sealed, file.associated))
    except DecryptionFailed:
        raise ConfigurationError(
            f"cannot open {path}: the master key is not the one it was made under, or the "
            "file was changed or cut short; nothing was restored"
        ) from None
    tables = body["tables"]
    dumped = snapshot.Dump(
        file.header["revision"],
        tables,
        int(file.header["audit"]["count"]),
        str(file.header["audit"]["head"]),
    )
    if dumped.counts() != file.header["counts"]:
        raise ConfigurationError(f"{path}: the rows do not match the header's counts")
    return dumped


async def restore(settings: Settings, path: Path, *, force: bool = False) -> dict[str, Any]:
    """Load a backup into an empty database, then prove it: every version decrypts and
    the audit chain verifies. ``force`` replaces whatever the target holds."""
    file = read_backup(path)
    key = _master(settings, "a restore")
    dumped = _open(file, key, path)  # everything is checked before anything is written
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _private_file(settings.data_dir / "keyfob.db")
    db = Database(settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        await snapshot.load(db, dumped, force=force)
    finally:
        await db.close()
    # A checkpoint left by the database this one replaced would not match the restored log.
    settings.resolved_checkpoint_file.unlink(missing_ok=True)
    vault = await Vault.open(settings)
    try:
        async with vault.db.read() as conn:
            versions = await secrets_sql.all_versions(conn)
        for row in versions:
            try:
                await vault.core.open_entries(
                    row.set_id, row.version, row.kek_term, row.wrapped_dek, row.ciphertext
                )
            except DecryptionFailed:
                raise ConfigurationError(
                    f"restored, but version {row.version} of set {row.set_id} does not "
                    "decrypt with this master key: do not use this database"
                ) from None
        if dumped.audit_seq:
            vault.core.checkpoint(dumped.audit_seq, dumped.audit_head)
        async with vault.core.write() as tx:
            await vault.core.record(
                tx,
                SYSTEM,
                "vault.restore",
                "vault",
                details={
                    "created_at": file.header.get("created_at"),
                    "revision": dumped.revision,
                    "audit_count": dumped.audit_seq,
                    "audit_head": dumped.audit_head,
                    "versions_checked": len(versions),
                },
            )
            # Nodes still running on this database (a --force restore) drop everything.
            tx.announce("all")
        report = await vault.audit.verify()
    finally:
        await vault.close()
    if not report["ok"]:
        raise ConfigurationError(
            f"the restored audit log does not verify: {report['first_bad']['reason']}"
        )
    return {
        "path": str(path),
        "revision": dumped.revision,
        "created_at": file.header.get("created_at"),
        "counts": dumped.counts(),
        "versions_checked": len(versions),
        "audit": {"ok": True, "count": report["count"], "head": report["head"]},
    }
