"""Envelope encryption of secret versions: ``seal``, ``open``, ``rewrap``.

Formats (all integers big-endian):

    wrapped DEK  = 0x01 | term:u32 | nonce:12 | AES-GCM(KEK[term], DEK) with
                   AAD = "keyfob/dek/v1" + set id + version + term
    ciphertext   = 0x01 | nonce:12 | AES-GCM(DEK, plaintext) with
                   AAD = "keyfob/data/v1" + set id + version

A fresh 256-bit DEK per version. ``rewrap`` re-encrypts only the DEK under the newest
term; the ciphertext is never touched. Rows cannot be swapped: both AADs name the set
and version they belong to.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from keyfob.crypto import _aead
from keyfob.crypto.keyring import Keyring
from keyfob.errors import DecryptionFailed
from keyfob.secret import SECRET, Masked

_V1 = 1
_DEK_LABEL = b"keyfob/dek/v1"
_DATA_LABEL = b"keyfob/data/v1"
_HEADER = struct.Struct(">BI")


@dataclass(frozen=True)
class Sealed(Masked):
    term: int
    wrapped_dek: bytes = field(metadata=SECRET)
    ciphertext: bytes = field(metadata=SECRET)


def _wrap_dek(ring: Keyring, dek: bytes, set_id: str, version: int, term: int) -> bytes:
    associated = _aead.aad(_DEK_LABEL, set_id, version, term)
    return _HEADER.pack(_V1, term) + ring.kek(term).seal(dek, associated)


def _unwrap_dek(ring: Keyring, wrapped: bytes, set_id: str, version: int) -> bytes:
    if len(wrapped) < _HEADER.size:
        raise DecryptionFailed()
    fmt, term = _HEADER.unpack_from(wrapped)
    if fmt != _V1:
        raise DecryptionFailed()
    associated = _aead.aad(_DEK_LABEL, set_id, version, term)
    return ring.kek(term).open(wrapped[_HEADER.size :], associated)


def term_of(wrapped_dek: bytes) -> int:
    """The KEK term a wrapped DEK needs (readable without any key)."""
    if len(wrapped_dek) < _HEADER.size:
        raise DecryptionFailed()
    return int(_HEADER.unpack_from(wrapped_dek)[1])


def seal(ring: Keyring, plaintext: bytes, *, set_id: str, version: int) -> Sealed:
    """Encrypt one secret version under a fresh DEK wrapped by the active term."""
    dek = _aead.random_key()
    term = ring.active_term
    body = _aead.Aead(dek).seal(plaintext, _aead.aad(_DATA_LABEL, set_id, version))
    return Sealed(term, _wrap_dek(ring, dek, set_id, version, term), bytes([_V1]) + body)


class DataKeys(Masked):
    """Unwrapped data keys (never values), by set version and wrapped form, so a version
    read again skips the unwrap. Bounded; ``forget`` a set on update or delete and
    ``clear`` on rotation and rewrap, so no key outlives its use for long."""

    __slots__ = ("_keys", "limit")

    def __init__(self, limit: int = 1024) -> None:
        self.limit = limit
        self._keys: dict[tuple[str, int, bytes], _aead.Aead] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, ring: Keyring, wrapped: bytes, set_id: str, version: int) -> _aead.Aead:
        """The version's data key, unwrapped once; a row with other wrapped bytes (a rewrap,
        a swapped row) is unwrapped again and checked against its AAD."""
        key = (set_id, version, wrapped)
        aead = self._keys.get(key)
        if aead is None:
            aead = _aead.Aead(_unwrap_dek(ring, wrapped, set_id, version))
            if len(self._keys) >= self.limit:
                self._keys.pop(next(iter(self._keys)))
            self._keys[key] = aead
        return aead

    def forget(self, set_id: str) -> None:
        """Drop every cached key of the set (its versions changed, or it was deleted)."""
        for key in [k for k in self._keys if k[0] == set_id]:
            del self._keys[key]

    def clear(self) -> None:
        self._keys.clear()


def open(
    ring: Keyring,
    sealed: Sealed,
    *,
    set_id: str,
    version: int,
    keys: DataKeys | None = None,
) -> bytes:
    """Decrypt one secret version; any mismatch is the same ``DecryptionFailed``."""
    if not sealed.ciphertext or sealed.ciphertext[0] != _V1:
        raise DecryptionFailed()
    if keys is not None:
        aead = keys.get(ring, sealed.wrapped_dek, set_id, version)
    else:
        aead = _aead.Aead(_unwrap_dek(ring, sealed.wrapped_dek, set_id, version))
    return aead.open(sealed.ciphertext[1:], _aead.aad(_DATA_LABEL, set_id, version))


def rewrap(ring: Keyring, wrapped_dek: bytes, *, set_id: str, version: int) -> tuple[int, bytes]:
    """The same DEK wrapped under the active term: ``(term, wrapped)``."""
    dek = _unwrap_dek(ring, wrapped_dek, set_id, version)
    term = ring.active_term
    return term, _wrap_dek(ring, dek, set_id, version, term)
