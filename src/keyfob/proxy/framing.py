"""HTTP/1.1 framing for the intercepted tunnel (``tunnel.Interception``): where a request
head ends, how its body is framed (ambiguous framing refused as request smuggling), and
an answer framed and written in as few TLS records as the app's messages allow.
"""

from __future__ import annotations

import asyncio
import re
from http import HTTPStatus

from starlette.types import Message

from keyfob.errors import InvalidRequest

# Answer bytes held back to share a TLS record; past this they are written and drained.
WRITE_HIGH = 64 * 1024
TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_FIELD_NAME = re.compile(TOKEN)
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_NO_BODY_STATUS = frozenset({204, 304})


class BadAnswer(Exception):
    """The app's answer cannot be framed as it claims (length, header bytes)."""


class Answer:
    """One response, framed for HTTP/1.1 and written in as few writes as its messages
    allow: what the app sends is held until the end of the message, until the task
    yields (so a stream's pieces are not delayed), or until ``WRITE_HIGH`` bytes."""

    __slots__ = (
        "_chunked",
        "_held",
        "_left",
        "_loop",
        "_pending",
        "_size",
        "_writer",
        "done",
        "head_only",
        "keep_alive",
        "started",
    )

    def __init__(self, writer: asyncio.StreamWriter, head_only: bool, keep_alive: bool) -> None:
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._held: list[bytes] = []
        self._size = 0
        self._pending: asyncio.Handle | None = None
        self._chunked = False
        self._left = -1  # bytes still owed to a Content-Length; -1 without one
        self.head_only = head_only
        self.keep_alive = keep_alive
        self.done = False
        self.started = False  # the answer's head is written or held

    async def send(self, message: Message) -> None:
        if self._writer.transport.is_closing():
            raise ConnectionResetError("the client closed the tunnel")
        if message["type"] == "http.response.start":
            self._start(message["status"], message.get("headers", []))
            self._schedule()
            return
        if message["type"] != "http.response.body":
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self.head_only:
            body = b""
        elif self._chunked:
            if body:
                self._hold(b"%x\r\n" % len(body))
                self._hold(body)
                self._hold(b"\r\n")
            if not more:
                self._hold(b"0\r\n\r\n")
        else:
            if self._left >= 0:
                if len(body) > self._left:
                    raise BadAnswer("the answer is longer than its Content-Length")
                self._left -= len(body)
                if not more and self._left:
                    raise BadAnswer("the answer is shorter than its Content-Length")
            if body:
                self._hold(body)
        if not more:
            self.done = True
            self._flush()
        elif self._size >= WRITE_HIGH:
            self._flush()
        else:
            self._schedule()
        if self._writer.transport.get_write_buffer_size() > WRITE_HIGH:
            await self._writer.drain()

    def _start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b""))]
        length = None
        for name, value in headers:
            if _FIELD_NAME.fullmatch(name) is None or _BAD_VALUE.search(value) is not None:
                raise BadAnswer("a header of the answer cannot be written")
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    raise BadAnswer("the answer's Content-Length cannot be written")
                length = int(value)
            lines.append(b"%s: %s\r\n" % (name, value))
        no_body = status in _NO_BODY_STATUS or status < 200
        if no_body:
            self.head_only = True
        elif length is not None:
            self._left = length
        elif not self.head_only:
            # No length: chunked, as uvicorn frames the reverse route's answers.
            self._chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        self._hold(b"".join(lines))

    def _hold(self, data: bytes) -> None:
        self._held.append(data)
        self._size += len(data)

    def _schedule(self) -> None:
        if self._pending is None and self._held:
            self._pending = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.cancel()
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            self._size = 0
            if not self._writer.transport.is_closing():
                self._writer.write(data)

    def cancel(self) -> None:
        """Drop a pending flush (the exchange is over)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


def head_end(buf: bytearray, start: int) -> int:
    """Where a request head ends (after its blank line), or -1 if it has not yet; a bare
    LF ends it too, for the parser to refuse rather than wait for."""
    crlf = buf.find(b"\n\r\n", start)
    lf = buf.find(b"\n\n", start)
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf + 2
    return crlf + 3 if crlf >= 0 else -1


def _smuggling(detail: str) -> InvalidRequest:
    return InvalidRequest(detail, reason="smuggling")


def body_framing(head: bytes) -> tuple[int, bool]:
    """(Content-Length, chunked) of a request head; ambiguous framing, which two parsers
    might read two ways (request smuggling), is refused before anything reads the body."""
    lengths = []
    codings = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"content-length":
            lengths.append(value.strip(b" \t"))
        elif name == b"transfer-encoding":
            codings.append(value)
    if codings and lengths:
        raise _smuggling("Content-Length and Transfer-Encoding may not both be sent")
    if len(lengths) > 1:
        raise _smuggling("more than one Content-Length header")
    if codings:
        if [c.strip(b" \t").lower() for c in b",".join(codings).split(b",")] != [b"chunked"]:
            raise _smuggling("the only transfer coding accepted is chunked")
        return 0, True
    if lengths:
        if not lengths[0].isdigit() or len(lengths[0]) > 18:
            raise _smuggling("the Content-Length is not a plain decimal number")
        return int(lengths[0]), False
    return 0, False
