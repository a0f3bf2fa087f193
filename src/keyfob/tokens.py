"""Bearer tokens: random, prefixed so scanners find leaked ones, stored as HMAC digests.

``kfo_`` operator, ``kfa_`` agent, ``kfl_`` lease. A token is the prefix plus 43
base62 characters, each drawn uniformly from the system's randomness (43 x log2(62) =
256 bits); the server keeps only HMAC-SHA-256(server key, token), so a database dump
yields no usable token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
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
# Random bytes to base62 characters by ``bytes.translate``: a byte below 248 (4 x 62) is
# the character ``_ALPHABET[byte % 62]``, uniformly; 248-255 are dropped (rejection
# sampling), so no character is likelier than another.
_KEEP: Final = 4 * len(_ALPHABET)
_TO_BASE62: Final = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) for b in range(256))
_DROPPED: Final = bytes(range(_KEEP, 256))


def _base62(data: bytes, length: int) -> str:
    number = int.from_bytes(data, "big")
    chars = []
    for _ in range(length):
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def _random_base62(length: int) -> str:
    """``length`` independent, uniform base62 characters from ``os.urandom``."""
    drawn = b""
    while len(drawn) < length:
        # ~3 % of bytes are dropped; asking ~6 % more plus a few almost always suffices.
        need = length - len(drawn)
        drawn += os.urandom(need + need // 16 + 8).translate(_TO_BASE62, _DROPPED)
    return drawn[:length].decode("ascii")


def new_token(prefix: str) -> str:
    """A fresh token with ``prefix``; shown once, never stored."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown token prefix {prefix!r}")
    return prefix + _random_base62(_BODY_LEN)


def looks_like(token: str, prefix: str) -> bool:
    """Cheap shape check before any lookup (length, prefix, alphabet)."""
    return token.startswith(prefix) and _BODY_RE.fullmatch(token, len(prefix)) is not None


def digest(key: bytes, token: str) -> str:
    """The stored form of a token: hex HMAC-SHA-256 under the server's token key."""
    return hmac.new(key, token.encode("ascii", "replace"), hashlib.sha256).hexdigest()


def new_tokens(prefix: str, count: int) -> list[str]:
    """``count`` fresh tokens from one read of the system's randomness (a read and a
    big-integer conversion per token were a tenth of a batch mint); each is as random as
    ``new_token``'s."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown token prefix {prefix!r}")
    n = _BODY_LEN
    pool = _random_base62(n * count)
    return [prefix + pool[i : i + n] for i in range(0, n * count, n)]


def new_ids(count: int) -> list[str]:
    """``count`` public identifiers shaped like ``new_id``'s (16 hex characters): one
    random 7-byte base and each one's position (0-255) as its last byte.

    Unique within the batch, and between batches as long as bases differ (56 random
    bits); guessable from one another, which is harmless for identifiers, never secrets
    (who may act on a lease by its id is checked separately). Adjacent, they share the
    same few pages of an index on the id, where independent ones each dirty a random
    page (and write it to the WAL) on every insert."""
    if not 1 <= count <= 256:
        raise ValueError("between 1 and 256 identifiers share a base")
    base = secrets.token_hex(7)
    return [f"{base}{i:02x}" for i in range(count)]


def new_id(prefix: str = "") -> str:
    """A public identifier (not a secret): 8 random bytes as 16 hex characters."""
    return prefix + secrets.token_hex(8)


def derive(token: str, label: str) -> str:
    """A lease token derived from ``token`` for ``label`` (one set of a multi-set lease):
    one-way, so the derived token never yields the credential or another set's token."""
    mac = hmac.new(token.encode("ascii", "replace"), label.encode(), hashlib.sha256).digest()
    return LEASE + _base62(mac, _BODY_LEN)
