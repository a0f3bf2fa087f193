"""The keyring: versioned key-encryption keys (KEK terms) and the vault's system keys.

Each KEK is stored wrapped by the master key with AAD binding it to its term; the
system keys (token HMAC key, fingerprint key, audit signing key) are one wrapped blob.
Unwrapped material lives only in this object and is cached for the process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field

from keyfob.crypto import _aead
from keyfob.crypto.master import MasterKeyProvider
from keyfob.errors import ConfigurationError, DecryptionFailed
from keyfob.secret import SECRET, Masked, Secret

_KEK_LABEL = b"keyfob/kek/v1"
_SYSTEM_LABEL = b"keyfob/system/v1"
FORMAT_V1 = 1


@dataclass(frozen=True)
class WrappedKek(Masked):
    term: int
    wrapped: bytes = field(metadata=SECRET)


class SystemKeys(Masked):
    """Token HMAC key, fingerprint key and audit signing key; repr shows none of them."""

    __slots__ = ("_fingerprint", "_token", "signer")

    def __init__(self, token_key: bytes, fingerprint_key: bytes, signing_seed: bytes) -> None:
        self._token = Secret(token_key)
        self._fingerprint = Secret(fingerprint_key)
        self.signer = _aead.Signer(signing_seed)

    @property
    def token_key(self) -> bytes:
        return self._token.reveal()

    def fingerprint(self, value: str) -> str:
        """A keyed fingerprint: equal values match, but the value cannot be guessed offline."""
        mac = hmac.new(self._fingerprint.reveal(), value.encode(), hashlib.sha256)
        return "hmac-sha256:" + mac.hexdigest()[:16]

    @staticmethod
    def generate() -> tuple[SystemKeys, bytes]:
        """Fresh system keys and their plaintext serialisation (to be wrapped)."""
        material = {
            "token": _aead.random_key().hex(),
            "fingerprint": _aead.random_key().hex(),
            "signing": _aead.Signer.new_seed().hex(),
        }
        raw = json.dumps(material).encode()
        return SystemKeys._from_raw(raw), raw

    @staticmethod
    def _from_raw(raw: bytes) -> SystemKeys:
        material = json.loads(raw)
        return SystemKeys(
            bytes.fromhex(material["token"]),
            bytes.fromhex(material["fingerprint"]),
            bytes.fromhex(material["signing"]),
        )


def _wrong_key(master: MasterKeyProvider) -> str:
    where = master.describe()
    if where.get("provider") == "pkcs11":
        return (
            f"the PKCS#11 key {where.get('key_label')!r} on token {where.get('token_label')!r} "
            "does not open this vault's keyring: wrong token or key label for this database"
        )
    return (
        "the master key does not open this vault's keyring: wrong KEYFOB_MASTER_KEY "
        "or master key file for this database"
    )


class Keyring(Masked):
    """Unwrapped KEK terms (newest is active) plus the system keys."""

    shown = ("terms",)

    def __init__(self, master: MasterKeyProvider, keks: dict[int, _aead.Aead], system: SystemKeys):
        self._master = master
        self._keks = keks
        self.system = system

    @property
    def master(self) -> MasterKeyProvider:
        """The provider that wraps this keyring (for status and readiness)."""
        return self._master

    # -- building ---------------------------------------------------------------------

    @staticmethod
    def create(master: MasterKeyProvider) -> tuple[Keyring, WrappedKek, bytes]:
        """A brand-new keyring: term 1 and fresh system keys, plus their wrapped forms."""
        system, raw = SystemKeys.generate()
        wrapped_system = master.wrap(raw, _SYSTEM_LABEL)
        ring = Keyring(master, {}, system)
        return ring, ring.new_term(1), wrapped_system

    @staticmethod
    def load(master: MasterKeyProvider, keks: list[WrappedKek], wrapped_system: bytes) -> Keyring:
        """Unwrap what the store holds; a wrong master key is a clear start-up error."""
        try:
            system = SystemKeys._from_raw(master.unwrap(wrapped_system, _SYSTEM_LABEL))
        except DecryptionFailed:
            raise ConfigurationError(_wrong_key(master)) from None
        ring = Keyring(master, {}, system)
        for kek in keks:
            try:
                ring.add_wrapped(kek)
            except DecryptionFailed:
                raise ConfigurationError(
                    f"KEK term {kek.term} does not open with this master key although the "
                    "keyring does: the kek_terms row is damaged"
                ) from None
        return ring

    def add_wrapped(self, kek: WrappedKek) -> None:
        raw = self._master.unwrap(kek.wrapped, _aead.aad(_KEK_LABEL, kek.term))
        self._keks[kek.term] = _aead.Aead(raw)

    def new_term(self, term: int) -> WrappedKek:
        """A new KEK for ``term`` (active for new writes at once); the caller stores it."""
        if term in self._keks:
            raise ValueError(f"KEK term {term} already exists")
        raw = _aead.random_key()
        wrapped = WrappedKek(term, self._master.wrap(raw, _aead.aad(_KEK_LABEL, term)))
        self._keks[term] = _aead.Aead(raw)
        return wrapped

    def forget(self, term: int) -> None:
        self._keks.pop(term, None)

    # -- use --------------------------------------------------------------------------

    @property
    def active_term(self) -> int:
        return max(self._keks) if self._keks else 0

    @property
    def terms(self) -> list[int]:
        return sorted(self._keks)

    def has(self, term: int) -> bool:
        return term in self._keks

    def kek(self, term: int) -> _aead.Aead:
        try:
            return self._keks[term]
        except KeyError:
            raise DecryptionFailed() from None
