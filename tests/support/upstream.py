"""Local stand-ins for provider APIs, in a background thread, and a listener that must stay idle.

``FakeUpstream`` serves (under any base path):

- ``ANY /echo…``: the request as JSON ``{method, path, query, headers: [[k, v]…], body}``;
  it also copies the request's ``Authorization``, ``x-api-key`` and query string into
  the response headers ``x-echo-authorization``, ``x-echo-api-key`` and ``x-echo-query``.
- ``GET /sse?events=N&delay=S&split=1``: ``text/event-stream``, one event per ``delay``
  seconds, each echoing the request's Authorization; ``split=1`` writes each event in
  two pieces cut in the middle of the echoed value.
- ``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic): a normal
  answer, or with ``"stream": true`` an SSE stream of ``chunks`` deltas ``delay`` apart
  (asked ``stream_options.include_usage``, as OpenAI: ``"usage":null`` on every delta and
  a final chunk with the usage).
- ``GET /redirect?to=URL&status=302``: a redirect.
- ``GET /status/N``, ``GET /slow?delay=S`` (headers after ``delay``), ``GET /stall``
  (headers, then nothing), ``GET /gzip`` (a gzip body whatever was asked), ``GET /big?n=``,
  ``GET /bytes?n=`` (n binary bytes 0, 1, … 255, 0, … as ``image/png``).
- ``GET /headers?set=name:value&set=…``: 200 with each ``set`` pair as a response header
  (repeatable, written as given, hop-by-hop ones included).
- ``ANY /s3/{bucket}/{key}``: a tiny S3 that checks every request's SigV4 signature
  with botocore (``tests.support.aws.verify_sigv4``) against ``aws_credentials`` and
  answers 403 ``SignatureDoesNotMatch`` otherwise.

Every request is recorded in ``seen`` (method, raw path, query, header pairs, body).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import ssl
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.aws import SignatureRejected, verify_sigv4


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    at: float

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass
class AwsCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    region: str = "us-east-1"
    service: str = "s3"


class _Loop:
    """An asyncio loop in a daemon thread, for servers that sync tests talk to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@dataclass
class FakeUpstream:
    tls: ssl.SSLContext | None = None
    host: str = "127.0.0.1"
    seen: list[Seen] = field(default_factory=list)
    aws: list[AwsCredentials] = field(default_factory=list)
    objects: dict[str, bytes] = field(default_factory=dict)
    port: int = 0

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> FakeUpstream:
        self._loop = _Loop()
        self._runner = self._loop.run(self._start())
        return self

    def stop(self) -> None:
        self._loop.run(self._runner.cleanup())
        self._loop.stop()

    def clear(self) -> None:
        self.seen.clear()

    def count(self, path_part: str = "") -> int:
        return sum(1 for s in self.seen if path_part in s.path)

    async def _start(self) -> web.AppRunner:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self.tls)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        return runner

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        raw_path = request.raw_path.split("?", 1)[0]
        self.seen.append(
            Seen(
                request.method,
                raw_path,
                request.query_string,
                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
                body,
                time.monotonic(),
            )
        )
        path = request.path
        for suffix, handler in _ROUTES:
            index = path.find(suffix)
            if index >= 0:
                return await handler(self, request, body, path[index:])
        return web.json_response({"error": "no such fake route"}, status=404)

    # -- routes ------------------------------------------------------------------------

    async def _echo(self, request: web.Request, body: bytes, _: str) -> web.StreamResponse:
        seen = self.seen[-1]
        answer = {
            "method": request.method,
            "path": seen.path,
            "query": request.query_string,
            "headers": [[k, v] for k, v in seen.headers],
            "body": body.decode("latin-1"),
        }
        headers = {
            "x-echo-authorization": request.headers.get("authorization", ""),
            "x-echo-api-key": request.headers.get("x-api-key", ""),
            "x-echo-query": request.query_string,
        }
        return web.json_response(answer, headers=headers)

    async def _git_refs(self, request: web.Request, _: bytes, __: str) -> web.StreamResponse:
        """Just enough of git's smart HTTP for ``git ls-remote``: 401 without credentials
        (git asks only then), one ref with them."""
        if not request.headers.get("authorization"):
            return web.Response(status=401, headers={"www-authenticate": 'Basic realm="fake git"'})

        def pkt(line: str) -> bytes:
            return f"{len(line) + 4:04x}{line}".encode()

        sha = "1" * 40
        body = (
            pkt("# service=git-upload-pack\n")
            + b"0000"
            + pkt(f"{sha} HEAD\0symref=HEAD:refs/heads/main\n")
            + pkt(f"{sha} refs/heads/main\n")
            + b"0000"
        )
        return web.Response(body=body, content_type="application/x-git-upload-pack-advertisement")

    async def _sse(self, request: web.Request, _: bytes, __: str) -> web.StreamResponse:
        events = int(request.query.get("events", "3"))
        delay = float(request.query.get("delay", "0"))
        split = request.query.get("split") == "1"
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        auth = request.headers.get("authorization", "") + request.headers.get("x-api-key", "")
        for i in range(events):
            event = f"id: {i}\ndata: {json.dumps({'i': i, 'auth': auth})}\n\n".encode()
            if split:
                cut = event.index(b'"auth"') + 8 + len(auth) // 2
                await response.write(event[:cut])
                await asyncio.sleep(0.01)
                await response.write(event[cut:])
            else:
                await response.write(event)
            if delay:
                await asyncio.sleep(delay)
        await response.write_eof()
        return response

    async def _openai(self, request: web.Request, body: bytes, _: str) -> web.StreamResponse:
        asked = json.loads(body or b"{}")
        if not asked.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": 1,
                    "model": asked.get("model", "gpt-fake"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "hello from upstream"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
                }
            )
        chunks = int(asked.get("chunks", 5))
        delay = float(asked.get("delay", 0.05))
        options = asked.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for i in range(chunks):
            delta: dict[str, Any] = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": asked.get("model", "gpt-fake"),
                "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}],
                "sent_at": time.monotonic(),
            }
            if usage:
                delta["usage"] = None
            await response.write(f"data: {json.dumps(delta)}\n\n".encode())
            await asyncio.sleep(delay)
        if usage:
            last = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": asked.get("model", "gpt-fake"),
                "choices": [],
                "usage": {
                    "prompt_tokens": 1,
                    "completion_tokens": chunks,
                    "total_tokens": 1 + chunks,
                },
            }
            await response.write(f"data: {json.dumps(last)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _anthropic(self, request: web.Request, body: bytes, _: str) -> web.StreamResponse:
        asked = json.loads(body or b"{}")
        return web.json_response(
            {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": asked.get("model", "claude-fake"),
                "content": [{"type": "text", "text": "hello from upstream"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 3},
            }
        )

    async def _redirect(self, request: web.Request, _: bytes, __: str) -> web.StreamResponse:
        status = int(request.query.get("status", "302"))
        return web.Response(status=status, headers={"location": request.query["to"]})

    async def _status(self, request: web.Request, _: bytes, path: str) -> web.StreamResponse:
        return web.json_response({"status": "as asked"}, status=int(path.rsplit("/", 1)[-1]))

    async def _slow(self, request: web.Request, _: bytes, __: str) -> web.StreamResponse:
        await asyncio.sleep(float(request.query.get("delay", "5")))
        return web.json_response({"slow": True})

    async def _stall(self, request: web.Request, _: bytes, __: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await asyncio.sleep(float(request.query.get("delay", "30")))
        return response

    async def _gzip(self, request: web.Request, _: bytes, __: str) -> web.StreamResponse:
        auth = request.headers.get("authorization", "")
        payload = gzip.compress(json.dumps({"auth": auth}).encode())
        return web.Response(
            body=payload,
            headers={"content-encoding": "gzip", "content-type": "application/json"},
        )

    async def _big(self, request: web.Request, _: bytes, __: str) -> web.StreamResponse:
        return web.Response(body=b"x" * int(request.query.get("n", "1000000")))

    async def _bytes(self, request: web.Request, _: bytes, __: str) -> web.StreamResponse:
        n = int(request.query.get("n", "256"))
        return web.Response(body=bytes(i % 256 for i in range(n)), content_type="image/png")

    async def _headers(self, request: web.Request, _: bytes, __: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/json"})
        for pair in request.query.getall("set", []):
            name, _sep, value = pair.partition(":")
            response.headers.add(name, value)
        body = b'{"headers": "as asked"}'
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body)
        await response.write_eof()
        return response

    async def _s3(self, request: web.Request, body: bytes, path: str) -> web.StreamResponse:
        seen = self.seen[-1]
        url = seen.path + (f"?{seen.query}" if seen.query else "")
        problems = []
        for creds in self.aws:
            try:
                verify_sigv4(
                    request.method,
                    url,
                    seen.headers,
                    body,
                    access_key_id=creds.access_key_id,
                    secret_access_key=creds.secret_access_key,
                    session_token=creds.session_token,
                    region=creds.region,
                    service=creds.service,
                )
                break
            except SignatureRejected as exc:
                problems.append(str(exc))
        else:
            error = b"<Error><Code>SignatureDoesNotMatch</Code></Error>"
            return web.Response(status=403, body=error, content_type="application/xml")
        key = path.removeprefix("/s3/")
        if request.method == "PUT":
            self.objects[key] = _unchunk(body, seen)
            return web.Response(status=200, headers={"etag": '"fake"'})
        if request.method == "GET" and key in self.objects:
            return web.Response(body=self.objects[key], content_type="application/octet-stream")
        if request.method == "GET" and "/" not in key.strip("/"):
            items = "".join(
                f"<Contents><Key>{k.split('/', 1)[1]}</Key><Size>{len(v)}</Size></Contents>"
                for k, v in self.objects.items()
                if k.startswith(key.strip("/") + "/")
            )
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>'
                '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<Name>{key.strip('/')}</Name><IsTruncated>false</IsTruncated>{items}"
                "</ListBucketResult>"
            )
            return web.Response(body=xml.encode(), content_type="application/xml")
        return web.Response(status=404, body=b"<Error><Code>NoSuchKey</Code></Error>")


def _unchunk(body: bytes, seen: Seen) -> bytes:
    """The object bytes of an S3 PUT, decoding ``aws-chunked`` uploads."""
    if "aws-chunked" not in (seen.header("content-encoding") or ""):
        return body
    out = bytearray()
    rest = body
    while rest:
        line, _, rest = rest.partition(b"\r\n")
        size = int(line.split(b";", 1)[0], 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


_ROUTES: list[tuple[str, Any]] = [
    ("/info/refs", FakeUpstream._git_refs),
    ("/s3/", FakeUpstream._s3),
    ("/echo", FakeUpstream._echo),
    ("/sse", FakeUpstream._sse),
    ("/v1/chat/completions", FakeUpstream._openai),
    ("/v1/messages", FakeUpstream._anthropic),
    ("/redirect", FakeUpstream._redirect),
    ("/status/", FakeUpstream._status),
    ("/slow", FakeUpstream._slow),
    ("/stall", FakeUpstream._stall),
    ("/gzip", FakeUpstream._gzip),
    ("/big", FakeUpstream._big),
    ("/bytes", FakeUpstream._bytes),
    ("/headers", FakeUpstream._headers),
]


class Listener:
    """A TCP listener that records every connection: where a credential must never go."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.connections = 0
        self.received = bytearray()
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.settimeout(0.5)
            try:
                while chunk := conn.recv(65536):
                    self.received += chunk
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=5)
