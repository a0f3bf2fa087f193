"""The master key: 32 random bytes from a 0600 file or ``KEYFOB_MASTER_KEY`` (base64)."""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from keyfob.crypto import _aead
from keyfob.errors import ConfigurationError
from keyfob.secret import Masked, Secret

_WRAP_INFO = b"keyfob/master-wrap/v1"
# Backups get a key of their own (HKDF under another label): a backup's ciphertext can
# never be passed off as a wrapped keyring entry, nor the other way round.
_BACKUP_INFO = b"keyfob/backup/v1"


class MasterKey(Masked):
    """Wraps and unwraps the keyring; never leaves this object."""

    __slots__ = ("_backup", "_wrap")

    def __init__(self, raw: Secret[bytes]) -> None:
        value = raw.reveal()
        if len(value) != _aead.KEY_BYTES:
            raise ConfigurationError("the master key must be 32 bytes (base64 encoded)")
        self._wrap = _aead.Aead(_aead.hkdf(value, _WRAP_INFO))
        self._backup = _aead.Aead(_aead.hkdf(value, _BACKUP_INFO))

    def seal_backup(self, plaintext: bytes, associated: bytes) -> bytes:
        """A backup's body, sealed under the key derived for backups."""
        return self._backup.seal(plaintext, associated)

    def open_backup(self, sealed: bytes, associated: bytes) -> bytes:
        """``DecryptionFailed`` for a wrong master key or a changed file alike."""
        return self._backup.open(sealed, associated)

    def wrap(self, plaintext: bytes, associated: bytes) -> bytes:
        return self._wrap.seal(plaintext, associated)

    def unwrap(self, wrapped: bytes, associated: bytes) -> bytes:
        return self._wrap.open(wrapped, associated)


def encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def decode(text: str) -> Secret[bytes]:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError("the master key is not valid base64") from None
    if len(raw) != _aead.KEY_BYTES:
        raise ConfigurationError("the master key must decode to 32 bytes")
    return Secret(raw)


def generate() -> Secret[bytes]:
    return Secret(_aead.random_key())


def write_file(path: Path, key: Secret[bytes]) -> None:
    """Create the key file with mode 0600; never overwrite an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(f"refusing to overwrite the master key file {path}") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(encode(key.reveal()) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_file(path: Path) -> Secret[bytes]:
    """Read the key file; refuse one that group or others can read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigurationError(f"master key file {path} does not exist") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"master key file {path} is readable by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )
    return decode(path.read_text())
