"""Crypto recipes: envelope ``seal``/``open``/``rewrap``, the keyring and the master key.

Knows nothing of the domain; only ``_aead`` (and ``_x509``, for a self-signed TLS
certificate) import ``cryptography.hazmat``.
"""

from datetime import datetime

from keyfob.crypto._aead import verify_signature
from keyfob.crypto.envelope import DataKeys, Sealed, open, rewrap, seal, term_of
from keyfob.crypto.keyring import Keyring, SystemKeys, WrappedKek
from keyfob.crypto.master import MasterKey


def self_signed(hosts: list[str], *, days: int, now: datetime) -> tuple[bytes, bytes]:
    """A self-signed certificate and key (PEM) for ``hosts`` (see ``_x509.self_signed``)."""
    # Imported here: ``cryptography.x509`` is ~10 MB of a serving process that never
    # makes a certificate.
    from keyfob.crypto._x509 import self_signed as make

    return make(hosts, days=days, now=now)


__all__ = [
    "DataKeys",
    "Keyring",
    "MasterKey",
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
