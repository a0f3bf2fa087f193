"""A fast fake upstream for the benchmark: raw asyncio + httptools under uvloop.

``python bench/upstream.py PORT`` serves on 127.0.0.1:PORT, keep-alive:

- ``/sse?events=N&interval=MS``: ``text/event-stream``, chunked, N events (first one at
  once, then one every MS milliseconds on a fixed schedule), then the end of the body;
- any other path, any method: a small fixed JSON body with ``Content-Length``.

Every response except the SSE events is pre-built, so the upstream is never what a
run measures.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any
from urllib.parse import parse_qs

import httptools
import uvloop

JSON_BODY = (
    b'{"id":"cmpl-bench","object":"chat.completion","model":"bench",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}'
)
JSON_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    + b"content-length: %d\r\n\r\n" % len(JSON_BODY)
    + JSON_BODY
)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
END_CHUNKS = b"0\r\n\r\n"


def _event(n: int) -> bytes:
    data = b'data: {"n":%d,"text":"token"}\n\n' % n
    return b"%x\r\n%s\r\n" % (len(data), data)


class Upstream(asyncio.Protocol):
    """One client connection; requests are answered in order, one at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.open = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(BAD_REQUEST)
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        url, self.url = self.url, b""
        assert self.transport is not None
        if url.startswith(b"/sse"):
            self._stream(url)
        else:
            self.transport.write(JSON_RESPONSE)
            if not self.parser.should_keep_alive():
                self.transport.close()

    def _stream(self, url: bytes) -> None:
        query = parse_qs(url.partition(b"?")[2].decode("latin-1"))
        events = max(1, int(query.get("events", ["10"])[0]))
        interval = max(0.0, float(query.get("interval", ["100"])[0]) / 1000)
        assert self.transport is not None
        self.transport.write(SSE_HEAD + _event(0))
        start = self.loop.time()
        # A fixed schedule (start + k * interval), so timer drift cannot look like a stall.
        for k in range(1, events):
            self.loop.call_at(start + k * interval, self._send, k, k == events - 1)
        if events == 1:
            self.transport.write(END_CHUNKS)

    def _send(self, n: int, last: bool) -> None:
        if not self.open or self.transport is None:
            return
        self.transport.write(_event(n) + END_CHUNKS if last else _event(n))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Upstream(loop), "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    try:
        uvloop.run(serve(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
