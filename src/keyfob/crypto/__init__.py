"""Crypto recipes: envelope ``seal``/``open``/``rewrap``, the keyring and the master key.

Knows nothing of the domain; only ``_aead`` (and ``_x509``, for a self-signed TLS
certificate) import ``cryptography.hazmat``.
"""

from keyfob.crypto._aead import verify_signature
from keyfob.crypto._x509 import self_signed
from keyfob.crypto.envelope import DataKeys, Sealed, open, rewrap, seal, term_of
from keyfob.crypto.keyring import Keyring, SystemKeys, WrappedKek
from keyfob.crypto.master import MasterKey

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
