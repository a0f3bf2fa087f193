"""Undoing an upstream's compression so its answer can be scrubbed, within a size cap.

keyfob asks for ``Accept-Encoding: identity`` whenever it scrubs; an upstream that
compresses anyway is decoded here: every coding it lists, in ``Content-Encoding``
(repeated or stacked) and in ``Transfer-Encoding`` (besides ``chunked``), undone in
reverse order; every member of a multi-member gzip stream; zlib-wrapped and raw
deflate. Each layer's output is counted as it goes, so a small answer that inflates to
gigabytes (or a nest of them) stops at ``limit`` bytes instead of filling memory.
Codings that cannot be decoded with the standard library (``br``, ``zstd``, anything
else) are refused: what cannot be read cannot be scrubbed.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

GZIP = frozenset({"gzip", "x-gzip"})
DECODABLE = GZIP | {"deflate"}
# Output per zlib call: bounds the memory a single upstream chunk can inflate to.
_STEP = 64 * 1024


class Undecodable(ValueError):
    """The answer uses a coding keyfob cannot decode (``br``, ``zstd``, unknown)."""


class TooLarge(ValueError):
    """The decoded answer would exceed the size limit."""


def codings(content_encoding: Iterable[str], transfer_encoding: Iterable[str]) -> list[str]:
    """The codings applied to the body, first applied first (``identity`` and ``chunked``
    left out); raises ``Undecodable`` for one keyfob cannot undo."""
    applied = [
        token
        for header in (*content_encoding, *transfer_encoding)
        for part in header.split(",")
        if (token := part.strip().lower()) not in ("", "identity", "chunked")
    ]
    for token in applied:
        if token not in DECODABLE:
            raise Undecodable(token)
    return applied


class _Layer:
    """One coding undone: gzip (every member) or deflate (zlib-wrapped or raw)."""

    __slots__ = ("_gzip", "_inflate", "_raw", "_started")

    def __init__(self, coding: str) -> None:
        self._gzip = coding in GZIP
        self._raw = False
        self._started = False
        self._inflate = self._new()

    def _new(self) -> zlib._Decompress:
        if self._gzip:
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        return zlib.decompressobj(-zlib.MAX_WBITS if self._raw else zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterable[bytes]:
        while True:
            try:
                piece = self._inflate.decompress(data, _STEP)
            except zlib.error:
                # "deflate" is zlib-wrapped by the standard, raw by some servers.
                if self._gzip or self._started or self._raw:
                    raise
                self._raw = True
                self._inflate = self._new()
                continue
            self._started = True
            if piece:
                yield piece
            if self._inflate.eof:
                # A gzip body may hold several members, each a complete gzip stream.
                data = self._inflate.unused_data
                self._inflate = self._new()
                self._started = False
                if not data:
                    return
                continue
            data = self._inflate.unconsumed_tail
            if not data and len(piece) < _STEP:
                return

    def flush(self) -> bytes:
        return self._inflate.flush()


class Decoder:
    """Decodes one answer's body chunk by chunk; raises ``TooLarge`` past ``limit`` bytes
    out of any layer, ``zlib.error`` on a corrupt stream."""

    __slots__ = ("_counts", "_layers", "_limit")

    def __init__(self, applied: list[str], limit: int) -> None:
        self._layers = [_Layer(coding) for coding in reversed(applied)]
        self._counts = [0] * len(self._layers)
        self._limit = limit

    def feed(self, chunk: bytes) -> bytes:
        pieces = [chunk]
        for i, layer in enumerate(self._layers):
            pieces = [out for piece in pieces for out in self._counted(i, layer.feed(piece))]
        return b"".join(pieces)

    def flush(self) -> bytes:
        tail = b""
        for i, layer in enumerate(self._layers):
            out = list(self._counted(i, layer.feed(tail))) if tail else []
            out.extend(self._counted(i, [layer.flush()]))
            tail = b"".join(out)
        return tail

    def _counted(self, i: int, pieces: Iterable[bytes]) -> Iterable[bytes]:
        for piece in pieces:
            self._counts[i] += len(piece)
            if self._counts[i] > self._limit:
                raise TooLarge("the decoded answer is larger than the limit")
            yield piece
