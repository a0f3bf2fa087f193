"""Master key providers: what wraps the keyring (KEK terms and the system keys).

``MasterKeyProvider`` is the interface; ``MasterKey`` is the local one (32 random bytes
from a 0600 file or ``KEYFOB_MASTER_KEY``, base64); ``keyfob.crypto.hsm`` holds the
PKCS#11 one, imported only when it is configured.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path
from typing import Protocol

from keyfob.crypto import _aead
from keyfob.errors import ConfigurationError, DecryptionFailed
from keyfob.secret import Masked, Secret

_WRAP_INFO = b"keyfob/master-wrap/v1"
# A backup's body is sealed under a fresh key that the provider wraps with this label in
# the associated data: a wrapped backup key can never pass for a keyring entry.
_BACKUP_KEY = b"keyfob/backup-key/v1\n"


class MasterKeyProvider(Protocol):
    """Wraps and unwraps keyring material; the wrapping key never leaves the provider.

    ``unwrap`` raises ``DecryptionFailed`` for bytes it cannot open and ``Unavailable``
    when the provider itself cannot work now (an HSM gone away).
    """

    def wrap(self, plaintext: bytes, associated: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, associated: bytes) -> bytes: ...

    def describe(self) -> dict[str, str]:
        """What status pages show: the provider's name and where its key is (never a PIN)."""
        ...

    def check(self) -> None:
        """Raise ``Unavailable`` (saying why) unless the provider can wrap and unwrap now."""
        ...

    def close(self) -> None: ...


class MasterKey(Masked):
    """The local provider (file or environment); the key never leaves this object."""

    __slots__ = ("_source", "_wrap")

    def __init__(self, raw: Secret[bytes], source: dict[str, str] | None = None) -> None:
        value = raw.reveal()
        if len(value) != _aead.KEY_BYTES:
            raise ConfigurationError("the master key must be 32 bytes (base64 encoded)")
        self._wrap = _aead.Aead(_aead.hkdf(value, _WRAP_INFO))
        self._source = dict(source or {"provider": "env"})

    def wrap(self, plaintext: bytes, associated: bytes) -> bytes:
        return self._wrap.seal(plaintext, associated)

    def unwrap(self, wrapped: bytes, associated: bytes) -> bytes:
        return self._wrap.open(wrapped, associated)

    def describe(self) -> dict[str, str]:
        return dict(self._source)

    def check(self) -> None:
        """Always ready: the key is in memory."""

    def close(self) -> None:
        """Nothing to release."""


def seal_backup(provider: MasterKeyProvider, plaintext: bytes, associated: bytes) -> bytes:
    """A backup's body under a fresh AES-256-GCM key that ``provider`` wraps (a key file
    and an HSM alike): the wrapped key's length (2 bytes), the wrapped key, the body."""
    key = _aead.random_key()
    wrapped = provider.wrap(key, _BACKUP_KEY + associated)
    return len(wrapped).to_bytes(2, "big") + wrapped + _aead.Aead(key).seal(plaintext, associated)


def open_backup(provider: MasterKeyProvider, sealed: bytes, associated: bytes) -> bytes:
    """``DecryptionFailed`` for another master key, a changed or a cut file alike."""
    size = int.from_bytes(sealed[:2], "big")
    wrapped, body = sealed[2 : 2 + size], sealed[2 + size :]
    if len(sealed) < 2 or len(wrapped) != size:
        raise DecryptionFailed()
    key = provider.unwrap(wrapped, _BACKUP_KEY + associated)
    return _aead.Aead(key).open(body, associated)


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
