"""Inside an intercepted tunnel: HTTP/1.1 requests (keep-alive) parsed with httptools and
handed, as ASGI, to the reverse route's app — the same decision, injection, scrubbing,
streaming and audit, with only the arrival different.

Each request must name the CONNECT's host and lie under the set's base path; its framing
must be unambiguous. Every credential the client sent (placeholders included) is taken
out and the set's own lease (derived from the credential) put in its place, so the app
sees ``/proxy/{set}/{rest}`` with a lease, exactly as a reverse-route request.

The framing is keyfob's own: a request's head is read up to its blank line (431 past
``max_headers``), checked for ambiguous framing, then parsed and validated by httptools
(llhttp, strict); the body is read by its Content-Length or decoded from chunks here, so
no byte of the next request is ever parsed as part of this one. Answers are framed here
too, and written in as few TLS records as the app's messages allow: the head goes out
with the first piece of the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from http import HTTPStatus
from typing import Any

import httptools
from starlette.types import Message

from keyfob.errors import (
    PROBLEM_JSON,
    HeadersTooLarge,
    InvalidRequest,
    KeyfobError,
    MisdirectedRequest,
)
from keyfob.proxy.app import ProxyApp, StreamAborted
from keyfob.proxy.headers import CREDENTIALS
from keyfob.vault import Vault, new_request_id
from keyfob.vault.context import Context
from keyfob.vault.forwarding import Bundle, SetRoute

READ_CHUNK = 64 * 1024
IDLE_TIMEOUT = 120.0
DRAIN_LIMIT = 64 * 1024
# Answer bytes held back to share a TLS record; past this they are written and drained.
WRITE_HIGH = 64 * 1024
_LEASE_HEADER = b"x-keyfob-lease"
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# The request line, strictly: one space each side of the target, HTTP/1.0 or 1.1 only.
_REQUEST_LINE = re.compile(_TOKEN + rb" [^ \x00-\x1f\x7f]+ HTTP/1\.[01]\r\n")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[\t\x20-\x7e\x80-\xff]*)?")
_TRAILER = re.compile(_TOKEN + rb":[\t\x20-\x7e\x80-\xff]*")
_FIELD_NAME = re.compile(_TOKEN)
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_NO_BODY_STATUS = frozenset({204, 304})
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class _Refused(Exception):
    def __init__(self, error: KeyfobError) -> None:
        self.error = error


class _BadBody(Exception):
    """The request body's framing is broken (or the client left mid-body)."""


class _BadAnswer(Exception):
    """The app's answer cannot be framed as it claims (length, header bytes)."""


class _Head:
    """httptools' callbacks for one request head."""

    __slots__ = ("complete", "headers", "keep_alive", "parser", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.keep_alive = False
        self.parser = httptools.HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.complete = True
        # Read here: once the message is complete the parser forgets Connection: close.
        self.keep_alive = self.parser.should_keep_alive()


class Interception:
    """One intercepted CONNECT: requests in, through the proxy app, answers out."""

    def __init__(
        self,
        app: ProxyApp,
        vault: Vault,
        bundle: Bundle,
        route: SetRoute,
        host: str,
        port: int,
        ctx: Context,
        max_headers: int,
    ) -> None:
        self._app = app
        self._vault = vault
        self._bundle = bundle
        self._route = route
        self._host = host
        self._port = port
        self._ctx = ctx
        self._max_headers = max_headers
        self._lease = bundle.lease_for(route).encode()
        self._hosts = {host.encode(), f"{host}:{port}".encode()}
        self._base = route.base_path.encode()
        self._routed = f"/proxy/{route.set_path}".encode()
        # Read from the client and not yet consumed: the rest of a body, the next request.
        self._buf = bytearray()
        self._reader: asyncio.StreamReader | None = None
        self._loop = asyncio.get_running_loop()
        self._reading_since: float | None = None
        self._watch: asyncio.TimerHandle | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("sockname")
        client = (peer[0], peer[1]) if peer else None
        server = (sock[0], sock[1]) if sock else None
        self._watch = self._loop.call_later(IDLE_TIMEOUT, self._idle_check)
        try:
            while True:
                try:
                    head = await self._read_head()
                    if head is None:
                        return
                    scope, body, keep_alive = self._request(head)
                except _Refused as refused:
                    await self._deny(writer, refused.error)
                    return
                scope["client"] = client
                scope["server"] = server
                if not await self._exchange(scope, body, keep_alive, writer):
                    return
        finally:
            self._watch.cancel()

    async def _fill(self) -> bool:
        """More bytes from the client into the buffer; False at end of stream."""
        assert self._reader is not None
        self._reading_since = self._loop.time()
        try:
            data = await self._reader.read(READ_CHUNK)
        finally:
            self._reading_since = None
        self._buf += data
        return bool(data)

    def _idle_check(self) -> None:
        """A read that has waited ``IDLE_TIMEOUT`` ends in TimeoutError. One timer per
        tunnel, moved on lazily, instead of one armed and cancelled around every read."""
        since = self._reading_since
        now = self._loop.time()
        if since is not None and now - since >= IDLE_TIMEOUT:
            assert self._reader is not None
            self._reader.set_exception(TimeoutError("the tunnel was idle too long"))
            return
        wait = IDLE_TIMEOUT - (now - since) if since is not None else IDLE_TIMEOUT
        self._watch = self._loop.call_later(wait, self._idle_check)

    async def _read_head(self) -> bytes | None:
        """The next request's head, up to and with its blank line; None if the client
        closed the tunnel between requests (an idle one ends in TimeoutError)."""
        buf = self._buf
        searched = 0
        while True:
            end = _head_end(buf, searched)
            if end > self._max_headers or (end < 0 and len(buf) > self._max_headers):
                raise _Refused(
                    HeadersTooLarge(
                        "the request's head is larger than the proxy accepts",
                        reason="headers_too_large",
                    )
                )
            if end >= 0:
                head = bytes(buf[:end])
                del buf[:end]
                return head
            # The blank line may straddle two reads: look again from just before the seam.
            searched = max(0, len(buf) - 2)
            if not await self._fill():
                if buf:
                    raise _Refused(
                        InvalidRequest(
                            "the client closed the tunnel in the middle of a request",
                            reason="bad_request",
                        )
                    )
                return None

    def _request(self, head: bytes) -> tuple[dict[str, Any], tuple[int, bool], bool]:
        """The ASGI scope for a head, its body framing (length, chunked) and whether the
        connection may carry another request; _Refused if any check fails."""
        if _REQUEST_LINE.match(head) is None:
            raise _Refused(_not_http("the request line is not HTTP/1.0 or HTTP/1.1"))
        framing = _framing(head)
        parsed = _Head()
        parser = parsed.parser
        upgrade = False
        try:
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            # Upgrade and CONNECT: answered as plain requests, then the connection closes.
            upgrade = True
        except httptools.HttpParserError:
            parsed.complete = False
        if not parsed.complete:
            raise _Refused(_not_http("the request inside the tunnel is not valid HTTP/1.1"))
        version = parser.get_http_version()
        keep_alive = parsed.keep_alive and version == "1.1" and not upgrade
        hosts = [v for k, v in parsed.headers if k == b"host"]
        if len(hosts) != 1 or hosts[0].lower() not in self._hosts:
            raise _Refused(
                MisdirectedRequest(
                    "the request's Host is not the host of the CONNECT it came through",
                    reason="host_mismatch",
                )
            )
        target = parsed.url
        if not target.startswith(b"/"):
            raise _Refused(
                InvalidRequest(
                    "requests inside the tunnel use origin-form targets", reason="bad_target"
                )
            )
        raw_path, _, query = target.partition(b"?")
        base = self._base
        if base and raw_path != base and not raw_path.startswith(base + b"/"):
            raise _Refused(
                InvalidRequest(
                    "the path is outside the secret set's base URL", reason="outside_base_path"
                )
            )
        routed = self._routed + (raw_path[len(base) :] or b"/")
        # Every credential the client sent goes (placeholders too); the set's lease comes in.
        headers = [(k, v) for k, v in parsed.headers if k.decode("latin-1") not in CREDENTIALS]
        headers.append((_LEASE_HEADER, self._lease))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version,
            "method": parser.get_method().decode("ascii"),
            "scheme": "https",
            "path": routed.decode("latin-1"),
            "raw_path": routed,
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "extensions": {},
        }
        return scope, framing, keep_alive

    async def _body(self, chunked: bool, left: list[int]) -> tuple[bytes, bool]:
        """The next piece of the request body and whether it was the last; ``left`` holds
        what remains of a Content-Length, or the chunk decoder's state."""
        if chunked:
            return await self._chunks(left)
        buf = self._buf
        if not buf and left[0] and not await self._fill():
            raise _BadBody
        take = min(left[0], len(buf))
        piece = bytes(buf[:take])
        del buf[:take]
        left[0] -= take
        return piece, left[0] == 0

    async def _chunks(self, state: list[int]) -> tuple[bytes, bool]:
        """Decoded chunk data, as much as is at hand. ``state[0]``: bytes left of the
        current chunk's data, 0 for its closing CRLF, -1 for the next size line."""
        buf = self._buf
        pieces: list[bytes] = []
        while True:
            if state[0] > 0:
                if buf:
                    take = min(state[0], len(buf))
                    pieces.append(bytes(buf[:take]))
                    del buf[:take]
                    state[0] -= take
                    continue
            elif state[0] == 0:
                if len(buf) >= 2:
                    if buf[:2] != b"\r\n":
                        raise _BadBody
                    del buf[:2]
                    state[0] = -1
                    continue
            else:
                line = self._line()
                if line is not None:
                    match = _CHUNK_SIZE.fullmatch(line)
                    if match is None:
                        raise _BadBody
                    size = int(match[1], 16)
                    if size == 0:
                        await self._trailers()
                        return b"".join(pieces), True
                    state[0] = size
                    continue
            if pieces:
                return b"".join(pieces), False
            if not await self._fill():
                raise _BadBody

    def _line(self) -> bytes | None:
        """A CRLF-ended line off the buffer, or None until one is complete."""
        buf = self._buf
        end = buf.find(b"\n")
        if end < 0:
            if len(buf) > self._max_headers:
                raise _BadBody
            return None
        line = bytes(buf[: end - 1])
        if end == 0 or buf[end - 1] != 0x0D or b"\r" in line:
            raise _BadBody  # a bare LF or CR
        del buf[: end + 1]
        return line

    async def _trailers(self) -> None:
        """Read (and drop) the trailer section after the last chunk."""
        total = 0
        while True:
            line = self._line()
            if line is None:
                if not await self._fill():
                    raise _BadBody
                continue
            if not line:
                return
            total += len(line) + 2
            if total > self._max_headers or _TRAILER.fullmatch(line) is None:
                raise _BadBody

    async def _exchange(
        self,
        scope: dict[str, Any],
        framing: tuple[int, bool],
        keep_alive: bool,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Run one request through the app; False if the connection must close."""
        length, chunked = framing
        body_done = not chunked and length == 0
        left = [-1 if chunked else length]
        broken = False
        finished = asyncio.Event()
        answer = _Answer(writer, scope["method"] == "HEAD", keep_alive)

        async def receive() -> Message:
            nonlocal body_done, broken
            if body_done or broken:
                await finished.wait()
                return {"type": "http.disconnect"}
            try:
                piece, body_done = await self._body(chunked, left)
            except (_BadBody, TimeoutError, ConnectionError):
                broken = True
                answer.keep_alive = False
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": piece, "more_body": not body_done}

        try:
            await self._app(scope, receive, answer.send)
            # A request without a body (or one the app refused before reading it): its end
            # is still to be read before the next request on this connection.
            # A large unread body is not worth reading: the connection closes instead.
            drained = 0
            while not body_done and not broken and drained <= DRAIN_LIMIT:
                piece, body_done = await self._body(chunked, left)
                drained += len(piece)
        except (StreamAborted, _BadBody, _BadAnswer, ConnectionError, TimeoutError):
            return False
        finally:
            finished.set()
            answer.cancel()
        return answer.done and answer.keep_alive and body_done and not broken

    async def _deny(self, writer: asyncio.StreamWriter, error: KeyfobError) -> None:
        """A refusal before the app saw the request: audited, answered, connection closed."""
        rid = new_request_id()
        ctx = Context(self._ctx.actor, rid, self._ctx.client)
        details = {"reason": error.extra.get("reason") or error.slug, "set": self._route.set_path}
        await self._vault.forwarding.record(
            self._bundle, ctx, "forward.deny", f"host:{self._host}:{self._port}", "denied", details
        )
        body = error.render(rid)
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
            b"connection: close\r\nx-request-id: %s\r\n\r\n"
            % (
                error.status,
                _REASONS.get(error.status, b""),
                PROBLEM_JSON.encode(),
                len(body),
                rid.encode(),
            )
        )
        writer.write(head + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()


class _Answer:
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
                    raise _BadAnswer("the answer is longer than its Content-Length")
                self._left -= len(body)
                if not more and self._left:
                    raise _BadAnswer("the answer is shorter than its Content-Length")
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
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
        length = None
        for name, value in headers:
            if _FIELD_NAME.fullmatch(name) is None or _BAD_VALUE.search(value) is not None:
                raise _BadAnswer("a header of the answer cannot be written")
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    raise _BadAnswer("the answer's Content-Length cannot be written")
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
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


def _not_http(detail: str) -> InvalidRequest:
    return InvalidRequest(detail, reason="bad_request")


def _head_end(buf: bytearray, start: int) -> int:
    """Where a request head ends (after its blank line), or -1 if it has not yet; a bare
    LF ends it too, for the parser to refuse rather than wait for."""
    crlf = buf.find(b"\n\r\n", start)
    lf = buf.find(b"\n\n", start)
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf + 2
    return crlf + 3 if crlf >= 0 else -1


def _smuggling(detail: str) -> _Refused:
    return _Refused(InvalidRequest(detail, reason="smuggling"))


def _framing(head: bytes) -> tuple[int, bool]:
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
