"""Masking secret values in proxied responses, chunk by chunk, without changing their length.

The proxy injects a credential into the agent's request; if the upstream echoes it back
(an error message, a debug echo endpoint, a redirect URL) the agent must still not see it.
A ``Scrubber`` holds every form a secret set's values take on the wire (raw, JSON- and
URL-escaped, hex, base64 at each alignment, HTTP basic auth) and overwrites each occurrence
with as many ``*`` bytes, so the upstream Content-Length stays true. ``StreamScrub`` does
the same across chunk boundaries, holding back only a tail that could still turn into a
match, so a server-sent event without a secret goes on at once.

Pure and stdlib-only. A byte is masked iff it lies inside some complete occurrence of some
form *in the upstream bytes*: matches are found on the original data, never on partly
masked data, so masking one form cannot hide an overlapping one. (A value containing ``*``
can appear to "match" across our own mask bytes afterwards; the visible part was never a
complete form in the input, so nothing more is revealed than any partial echo reveals.)
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from urllib.parse import quote, quote_plus

from keyfob.secret import Masked

MASK: int = ord("*")
# Values and forms shorter than this are left alone: masking every 4- or 6-byte string
# ("prod", "admin1") would corrupt ordinary text, and would hide nothing worth hiding.
MIN_LENGTH = 8

_Bytes = bytes  # ``Scrubber.bytes`` shadows the builtin inside the class body.
_STAR = bytes([MASK])


def _forms(value: str) -> Iterator[bytes]:
    raw = value.encode()
    yield raw
    yield json.dumps(value)[1:-1].encode()
    yield json.dumps(value, ensure_ascii=False)[1:-1].encode()
    yield quote(value, safe="").encode()
    yield quote_plus(value).encode()
    yield raw.hex().encode()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw)
        yield whole
        yield whole.rstrip(b"=")
        for shift in range(3):
            # Inside a larger base64 blob the value starts at one of three byte offsets;
            # the edge groups there also encode neighbouring bytes or padding, so drop them.
            yield encode(b"\0" * shift + raw)[4 if shift else 0 : -4]


def _basic_forms(user: str, password: str) -> Iterator[bytes]:
    whole = base64.b64encode(f"{user}:{password}".encode())
    yield whole
    yield whole.rstrip(b"=")


class Scrubber(Masked):
    """The patterns for one set of secret values; immutable, shared by every request using them."""

    __slots__ = ("_ends", "_firsts", "_patterns")

    def __init__(self, patterns: Iterable[_Bytes]) -> None:
        # Longest first, so the first pattern found at a position is the longest there.
        self._patterns = tuple(
            sorted({p for p in patterns if len(p) >= MIN_LENGTH}, key=lambda p: (-len(p), p))
        )
        # For the hold-back check: the proper prefixes of every pattern, keyed by their last
        # two bytes, longest first. Stored as (length, pattern) rather than as prefixes,
        # which would cost memory quadratic in a long value (a PEM key).
        ends: dict[_Bytes, list[tuple[int, _Bytes]]] = {}
        for p in self._patterns:
            for k in range(2, len(p)):
                ends.setdefault(p[k - 2 : k], []).append((k, p))
        self._ends = {two: tuple(sorted(c, reverse=True)) for two, c in ends.items()}
        self._firsts = frozenset(p[0] for p in self._patterns)

    @classmethod
    def for_values(
        cls, values: Iterable[str], *, basic: Iterable[tuple[str, str]] = ()
    ) -> Scrubber:
        """Every secret value of a set, and the (user, password) pairs sent as basic auth."""
        found: set[_Bytes] = set()
        for value in values:
            if len(value.encode()) >= MIN_LENGTH:
                found.update(_forms(value))
        for user, password in basic:
            found.update(_basic_forms(user, password))
        return cls(found)

    @property
    def empty(self) -> bool:
        """Nothing to scrub: every value was shorter than MIN_LENGTH, or there were none."""
        return not self._patterns

    def bytes(self, data: _Bytes) -> tuple[_Bytes, int]:
        """One complete blob (a header value): the masked bytes, and how many matches
        (a match wholly inside an earlier one is not counted again)."""
        spans = self._spans(data)
        if not spans:
            return data, 0
        out, count, _ = _masked(data, spans, 0, len(data))
        return out, count

    def stream(self) -> StreamScrub:
        """A fresh scrubber for one response body."""
        return StreamScrub(self)

    def _spans(self, data: _Bytes) -> list[tuple[int, int]]:
        """(start, end) of the longest match at each position where any pattern starts."""
        # One bytes.find per pattern beat one compiled alternation of them all (1 KiB SSE
        # chunk, 3 values of ~40 chars = 22 patterns, CPython 3.11, AMD EPYC): find 5.7 us,
        # re.search 17.5 us, a lookahead re.finditer for overlaps 54 us. Searching only
        # for patterns that contain no other (17 of 22) saved 0.7 us; not worth the code.
        # A whole feed() of such a chunk with no match takes 8 us, 11 us ending mid-word.
        longest: dict[int, int] = {}
        find = data.find
        for p in self._patterns:
            at = find(p)
            while at >= 0:
                longest.setdefault(at, at + len(p))
                at = find(p, at + 1)
        return sorted(longest.items())

    def _hold(self, data: _Bytes) -> int:
        """Length of the longest suffix of ``data`` that is a proper prefix of a pattern."""
        # Keyed by the last two bytes, this is one dict lookup for data that ends in text no
        # pattern has (an SSE event's "\n\n"): 0.27 us, against 13 us for trying every
        # suffix length and 3.8 us for one end-anchored re of nested optional groups.
        n = len(data)
        for k, pattern in self._ends.get(data[-2:], ()):
            if k <= n and data.endswith(pattern[:k]):
                return k
        return 1 if n and data[-1] in self._firsts else 0

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Scrubber holds secret values and is not picklable")


class StreamScrub(Masked):
    """Masks one response body fed chunk by chunk; ``count`` is the matches masked so far."""

    __slots__ = ("_covered", "_held", "_scrubber", "count")
    shown = ("count",)

    def __init__(self, scrubber: Scrubber) -> None:
        self._scrubber = scrubber
        # Not yet sent, as the upstream sent it: a longer pattern may still match through it.
        self._held = b""
        # How many leading bytes of _held a match already sent in part has claimed.
        self._covered = 0
        self.count = 0

    def feed(self, chunk: bytes) -> bytes:
        """What may be sent on now: all but a tail that could still begin a match."""
        data = self._held + chunk if self._held else chunk
        # A match not yet complete must start inside the held tail, so everything before
        # it is final: no longer match could still begin there.
        return self._send(data, len(data) - self._scrubber._hold(data))

    def flush(self) -> bytes:
        """The held-back rest, at the end of the stream."""
        return self._send(self._held, len(self._held))

    def _send(self, data: bytes, limit: int) -> bytes:
        spans = self._scrubber._spans(data)
        self._held = data[limit:]
        if not spans and not self._covered:
            return data[:limit]
        out, count, covered = _masked(data, spans, self._covered, limit)
        self.count += count
        self._covered = max(0, covered - limit)
        return out

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("StreamScrub holds secret values and is not picklable")


def _masked(
    data: bytes, spans: list[tuple[int, int]], covered: int, limit: int
) -> tuple[bytes, int, int]:
    """``data[:limit]`` with ``[0, covered)`` and every span starting before ``limit``
    masked; how many spans reached past what earlier ones covered; the new covered end."""
    out = bytearray(data[:limit])
    out[: min(covered, limit)] = _STAR * min(covered, limit)
    count = 0
    for start, end in spans:
        if start >= limit:
            break  # Still held: seen again, and counted, when the stream moves on.
        if end <= covered:
            continue  # Inside an earlier match (one value that contains another).
        count += 1
        low, high = max(start, covered), min(end, limit)
        if low < high:
            out[low:high] = _STAR * (high - low)
        covered = end
    return bytes(out), count, covered
