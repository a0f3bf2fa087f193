"""Crypto recipes: envelope ``seal``/``open``/``rewrap``, the keyring and the master key.

Knows nothing of the domain; only ``_aead`` (and ``_pki``, for X.509 certificates)
import ``cryptography.hazmat``.
"""

import datetime

from keyfob.crypto._aead import verify_signature
from keyfob.crypto.envelope import DataKeys, Sealed, open, rewrap, seal, term_of
from keyfob.crypto.keyring import Keyring, SystemKeys, WrappedKek
from keyfob.crypto.master import MasterKey, MasterKeyProvider


def self_signed(hosts: list[str], *, days: int, now: datetime.datetime) -> tuple[bytes, bytes]:
    """A listener certificate for ``hosts`` signing itself: ``(cert PEM, key PEM)``."""
    # X.509 (``cryptography.x509``) is imported only to make one: a server never does.
    from keyfob.crypto import _pki

    return _pki.self_signed(hosts, days=days, now=now)


__all__ = [
    "DataKeys",
    "Keyring",
    "MasterKey",
    "MasterKeyProvider",
    "Sealed",
    "SystemKeys",
    "WrappedKek",
    "open",
    "rewrap",
    "seal",
    "self_signed",
    "term_of",
    "verify_signature",
]
