"""Bearer tokens: random, prefixed so scanners find leaked ones, stored as HMAC digests.

``kfo_`` operator, ``kfa_`` agent, ``kfl_`` lease. A token is the prefix plus 43
base62 characters (256 bits from ``secrets``); the server keeps only
HMAC-SHA-256(server key, token), so a database dump yields no usable token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from typing import Final

OPERATOR: Final = "kfo_"
AGENT: Final = "kfa_"
LEASE: Final = "kfl_"
PREFIXES: Final = (OPERATOR, AGENT, LEASE)

_ALPHABET: Final = string.digits + string.ascii_letters
_BODY_LEN: Final = 43  # ceil(256 / log2(62))
_BODY_RE: Final = re.compile(f"[0-9A-Za-z]{{{_BODY_LEN}}}")


def _base62(data: bytes, length: int) -> str:
    number = int.from_bytes(data, "big")
    chars = []
    for _ in range(length):
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_token(prefix: str) -> str:
    """A fresh token with ``prefix``; shown once, never stored."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown token prefix {prefix!r}")
    return prefix + _base62(secrets.token_bytes(32), _BODY_LEN)


def looks_like(token: str, prefix: str) -> bool:
    """Cheap shape check before any lookup (length, prefix, alphabet)."""
    return token.startswith(prefix) and _BODY_RE.fullmatch(token, len(prefix)) is not None


def digest(key: bytes, token: str) -> str:
    """The stored form of a token: hex HMAC-SHA-256 under the server's token key."""
    return hmac.new(key, token.encode("ascii", "replace"), hashlib.sha256).hexdigest()


def new_tokens(prefix: str, count: int) -> list[str]:
    """``count`` fresh tokens from one read of the system's randomness (a read per
    token was a fifth of a batch mint's time); each is as random as ``new_token``'s."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown token prefix {prefix!r}")
    pool = secrets.token_bytes(32 * count)
    return [prefix + _base62(pool[i : i + 32], _BODY_LEN) for i in range(0, 32 * count, 32)]


def new_ids(count: int) -> list[str]:
    """``count`` public identifiers like ``new_id``'s, from one read of randomness."""
    pool = secrets.token_hex(8 * count)
    return [pool[i : i + 16] for i in range(0, 16 * count, 16)]


def new_id(prefix: str = "") -> str:
    """A public identifier (not a secret): 8 random bytes as 16 hex characters."""
    return prefix + secrets.token_hex(8)


def derive(token: str, label: str) -> str:
    """A lease token derived from ``token`` for ``label`` (one set of a multi-set lease):
    one-way, so the derived token never yields the credential or another set's token."""
    mac = hmac.new(token.encode("ascii", "replace"), label.encode(), hashlib.sha256).digest()
    return LEASE + _base62(mac, _BODY_LEN)
