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
no byte of the next request is ever parsed as part of this one. Answers are framed by
``framing.Answer`` and written in as few TLS records as the app's messages allow: the
head goes out with the first piece of the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
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
from keyfob.proxy.framing import REASONS, TOKEN, Answer, BadAnswer, body_framing, head_end
from keyfob.proxy.headers import CREDENTIALS
from keyfob.vault import Vault, new_request_id
from keyfob.vault.context import Context
from keyfob.vault.forwarding import Bundle, SetRoute

READ_CHUNK = 64 * 1024
IDLE_TIMEOUT = 120.0
DRAIN_LIMIT = 64 * 1024
_LEASE_HEADER = b"x-keyfob-lease"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The request line, strictly: one space each side of the target, HTTP/1.0 or 1.1 only.
_REQUEST_LINE = re.compile(TOKEN + rb" [^ \x00-\x1f\x7f]+ HTTP/1\.[01]\r\n")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[\t\x20-\x7e\x80-\xff]*)?")
_TRAILER = re.compile(TOKEN + rb":[\t\x20-\x7e\x80-\xff]*")


class _Refused(Exception):
    def __init__(self, error: KeyfobError) -> None:
        self.error = error


class _BadBody(Exception):
    """The request body's framing is broken (or the client left mid-body)."""


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
                    scope, body, keep_alive, expects = self._request(head)
                except _Refused as refused:
                    await self._deny(writer, refused.error)
                    return
                scope["client"] = client
                scope["server"] = server
                if not await self._exchange(scope, body, keep_alive, expects, writer):
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
            end = head_end(buf, searched)
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

    def _request(self, head: bytes) -> tuple[dict[str, Any], tuple[int, bool], bool, bool]:
        """The ASGI scope for a head, its body framing (length, chunked), whether the
        connection may carry another request and whether the client waits for ``100
        Continue`` before sending the body; _Refused if any check fails."""
        if _REQUEST_LINE.match(head) is None:
            raise _Refused(_not_http("the request line is not HTTP/1.0 or HTTP/1.1"))
        try:
            framing = body_framing(head)
        except InvalidRequest as refused:
            raise _Refused(refused) from None
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
        expects = version == "1.1" and any(
            k == b"expect" and v.strip(b" \t").lower() == b"100-continue"
            for k, v in parsed.headers
        )
        return scope, framing, keep_alive, expects

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
        expects: bool,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Run one request through the app; False if the connection must close.

        ``Expect: 100-continue``: ``100 Continue`` goes out when the app first asks for the
        body, as uvicorn does on the reverse route; an app that answers without asking
        (a refusal) closes the connection instead of waiting for a body the client holds
        back."""
        length, chunked = framing
        body_done = not chunked and length == 0
        owed = expects and not body_done  # a 100 Continue the client waits for
        left = [-1 if chunked else length]
        broken = False
        finished = asyncio.Event()
        answer = Answer(writer, scope["method"] == "HEAD", keep_alive)

        async def receive() -> Message:
            nonlocal body_done, broken, owed
            if body_done or broken:
                await finished.wait()
                return {"type": "http.disconnect"}
            if owed:
                owed = False
                if not answer.started:
                    writer.write(_CONTINUE)
            try:
                piece, body_done = await self._body(chunked, left)
            except (_BadBody, TimeoutError, ConnectionError):
                broken = True
                answer.keep_alive = False
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": piece, "more_body": not body_done}

        try:
            await self._app(scope, receive, answer.send)
            if owed:
                return False  # the body was never asked for, so the client never sent it
            # A request without a body (or one the app refused before reading it): its end
            # is still to be read before the next request on this connection.
            # A large unread body is not worth reading: the connection closes instead.
            drained = 0
            while not body_done and not broken and drained <= DRAIN_LIMIT:
                piece, body_done = await self._body(chunked, left)
                drained += len(piece)
        except (StreamAborted, _BadBody, BadAnswer, ConnectionError, TimeoutError):
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
                REASONS.get(error.status, b""),
                PROBLEM_JSON.encode(),
                len(body),
                rid.encode(),
            )
        )
        writer.write(head + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()


def _not_http(detail: str) -> InvalidRequest:
    return InvalidRequest(detail, reason="bad_request")
