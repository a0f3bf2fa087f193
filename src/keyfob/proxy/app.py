"""The proxy route as a plain ASGI app: lease in, credential injected, bytes streamed.

``/proxy/{provider}/{environment}/{name}/{path}`` → the set's base URL + ``path``. In
order: the route, path, query and headers are checked (400/413/431, nothing consumed);
the lease is used (``Proxying.begin``: checked, counted, ``lease.use`` committed, values
opened); the upstream request is built from parsed parts and the credential injected;
the response streams back through the scrubber; ``proxy.request`` records the outcome.

No framework runs on this path: no middleware classes, no validation models, one
aiohttp session per policy for the whole process (``egress.Egress``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import traceback
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from starlette.types import Message, Receive, Scope, Send

from keyfob import paths
from keyfob.errors import (
    PROBLEM_JSON,
    BadGateway,
    GatewayTimeout,
    InvalidRequest,
    KeyfobError,
    MethodNotAllowed,
    PayloadTooLarge,
)
from keyfob.metrics import clock
from keyfob.profiles.model import AwsSigV4
from keyfob.profiles.taps import Tap
from keyfob.proxy import decoding, egress, headers, inject
from keyfob.proxy.scrub import Scrubber, StreamScrub
from keyfob.proxy.token_fetch import TokenFetcher
from keyfob.secret import Secret
from keyfob.settings import Settings
from keyfob.tls_scope import client_certificate
from keyfob.vault import ProxyRequest, ProxyUse, Vault, new_request_id

log = logging.getLogger("keyfob.proxy")

METHODS = paths.METHODS
SCRUBBERS_KEPT = 128
# A body of known length up to this size is read whole before the lease is used, so a
# budget can read what it asks for; a larger or chunked one streams to the upstream.
WHOLE_BODY = 1024 * 1024
_HTTP_VERSIONS = frozenset({"1.0", "1.1", "2", "2.0"})


class StreamAborted(RuntimeError):
    """The upstream broke off after the response started: the agent's connection is cut so
    a truncated stream cannot pass for a complete one."""


class _Exchange:
    """One proxied request's progress, for the outcome record and the error path."""

    __slots__ = (
        "began_at",
        "body_done",
        "bytes_down",
        "bytes_up",
        "client_gone",
        "error",
        "first_byte_at",
        "scrubbed",
        "set_path",
        "started",
        "status",
        "tap",
        "too_large",
        "upstream_s",
    )

    def __init__(self) -> None:
        # For metrics.ProxyMetrics: the set (once a lease use is taken) and the timings.
        self.began_at = clock()
        self.set_path: str | None = None
        self.upstream_s: float | None = None
        self.first_byte_at: float | None = None
        self.started = False
        self.status: int | None = None
        self.bytes_up = 0
        self.bytes_down = 0
        self.scrubbed = 0
        self.error: str | None = None
        self.body_done = False
        self.client_gone = False
        self.too_large = False
        self.tap: Tap | None = None

    def details(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "scrubbed": self.scrubbed,
            "error": self.error,
        }


class ProxyApp:
    def __init__(self, settings: Settings, vault: Callable[[], Vault]) -> None:
        self._vault = vault
        self._max_body = settings.proxy_max_body_bytes
        self._max_headers = settings.proxy_max_header_bytes
        self._max_decoded = settings.proxy_max_decompressed_bytes
        self.egress = egress.Egress(settings.upstream_ca_file, settings.resolve_map)
        self.fetch_token = TokenFetcher(self.egress)
        self._scrubbers: dict[tuple[str, int], Scrubber] = {}
        self._options = egress.request_options(
            settings.proxy_connect_timeout,
            settings.proxy_read_timeout,
            settings.proxy_total_timeout,
        )

    async def close(self) -> None:
        await self.egress.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        rid = new_request_id()
        ex = _Exchange()
        metrics = self._vault().metrics.proxy
        metrics.open += 1
        try:
            await self._serve(scope, receive, send, rid, ex)
        except KeyfobError as error:
            if ex.started:
                raise StreamAborted("the upstream stream broke off") from None
            ex.status = error.status
            await _problem(send, error, rid)
        except StreamAborted:
            raise
        except Exception as exc:
            # A foreign exception's message could carry anything (a URL with a key in its
            # query): log where it happened, never what it says.
            frames = traceback.extract_tb(exc.__traceback__)
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            log.error("unhandled %s at %s (request %s)", type(exc).__name__, where, rid)
            if ex.started:
                raise StreamAborted("the proxied response failed") from None
            ex.status = 500
            await _problem(send, KeyfobError("unexpected server error; see the server log"), rid)
        finally:
            metrics.open -= 1
            metrics.done(ex)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, rid: str, ex: _Exchange
    ) -> None:
        method = scope["method"]
        if scope.get("http_version") not in _HTTP_VERSIONS:
            # A request line without a version (HTTP/0.9) is how CR/LF in a path smuggles
            # headers past some parsers.
            raise InvalidRequest("only HTTP/1.0, 1.1 and 2 are proxied")
        try:
            provider, environment, name, rest = paths.split_route(
                scope.get("raw_path") or scope["path"].encode()
            )
            path = paths.normalise(rest)
            query = paths.check_query(scope.get("query_string", b""))
        except paths.PathRefused as exc:
            raise InvalidRequest(str(exc)) from None
        try:
            method = paths.normalise_method(method)
        except paths.MethodRefused as exc:
            raise MethodNotAllowed(str(exc)) from None
        incoming = headers.read_request(
            scope["headers"], max_bytes=self._max_headers, max_body=self._max_body
        )
        declared = inject.payload_hash(incoming.amz_content_sha256)
        set_path = f"{provider}/{environment}/{name}"
        client = scope.get("client")
        # The body is read before the lease is used: a budget reserves from what it asks.
        data: bytes | AsyncIterator[bytes] | None = None
        if incoming.content_length or incoming.chunked:
            length = incoming.content_length
            whole = length is not None and length <= WHOLE_BODY
            data = await self._body(receive, ex, whole=whole)
        else:
            ex.body_done = True
        request = ProxyRequest(
            token=incoming.lease,
            set_path=set_path,
            method=method,
            path=path,
            query_names=tuple(paths.query_names(query)),
            request_id=rid,
            client=client[0] if client else None,
            route=f"/proxy/{set_path}{path}",
            body=data if isinstance(data, bytes) else None,
            size=len(data) if isinstance(data, bytes) else incoming.content_length or 0,
            client_cert=client_certificate(scope),
        )
        vault = self._vault()
        use = await vault.proxy.begin(request)
        ex.set_path = use.set_path
        try:
            await self._forward(vault, use, incoming, query, declared, data, receive, send, rid, ex)
        except KeyfobError as error:
            ex.error = str(error.extra.get("reason") or error.slug)
            raise
        except StreamAborted:
            ex.error = ex.error or "upstream_broke_off"
            raise
        except Exception:
            ex.error = "internal"
            raise
        finally:
            outcome = "ok" if ex.status is not None and ex.error is None else "error"
            vault.proxy.finish(use, outcome, ex.tap, **ex.details())

    async def _forward(
        self,
        vault: Vault,
        use: ProxyUse,
        incoming: headers.Incoming,
        query: str,
        declared: str | None,
        data: bytes | AsyncIterator[bytes] | None,
        receive: Receive,
        send: Send,
        rid: str,
        ex: _Exchange,
    ) -> None:
        profile = use.profile
        upstream = inject.target(profile, use.request.method, use.request.path, query)
        forward = inject.forwarded(profile, incoming.forward)
        # The one hook for refreshed sets (OAuth, service accounts); static sets skip it.
        access = (
            await vault.refresh.token(use.set_id, use.version, self.fetch_token)
            if profile.refreshed
            else None
        )
        scrubber = None
        if profile.scrub:
            scrubber = self._scrubber(use, access)
            # Only an uncompressed answer can be scrubbed.
            forward = [(n, v) for n, v in forward if n != "accept-encoding"]
            forward.append(("accept-encoding", "identity"))
        plan = use.plan
        if plan is not None:
            if not profile.scrub:
                # Usage can be read only off an uncompressed answer.
                forward = [(n, v) for n, v in forward if n != "accept-encoding"]
                forward.append(("accept-encoding", "identity"))
            if plan.body is not None:
                # Usage asked for on the client's behalf (removed again from the answer).
                data = plan.body
                forward = [(n, v) for n, v in forward if n != "content-length"]
                forward.append(("content-length", str(len(data))))
        upstream.headers = [("host", upstream.authority), *forward]
        try:
            egress.check_literal(upstream.host, profile.allow_private_upstream)
        except egress.DestinationRefused as refused:
            raise _refused(refused) from None

        body_hash = ""
        if isinstance(profile.inject, AwsSigV4):
            body_hash = declared or ""
            if not declared:
                # No hash declared: sign the real one, which needs the whole body first.
                if data is not None and not isinstance(data, bytes):
                    data = b"".join([chunk async for chunk in data])
                body_hash = hashlib.sha256(data or b"").hexdigest()
        now = vault.core.clock.now()
        inject.inject(upstream, profile, use.values, body_hash=body_hash, now=now, access=access)

        session = self.egress.session(profile.allow_private_upstream)
        sent = clock()
        try:
            response = await session.request(
                upstream.method,
                upstream.url(),
                headers=upstream.headers,
                data=data,
                **self._options,
            )
            if (
                access is not None
                and response.status == 401
                and not isinstance(data, AsyncIterator)
            ):
                # A refused access token: refresh it and send the (buffered) request once more.
                response.release()
                access = await vault.refresh.token(
                    use.set_id, use.version, self.fetch_token, stale=access
                )
                upstream.headers[-1] = ("authorization", "Bearer " + access.reveal())
                scrubber = self._scrubber(use, access) if profile.scrub else None
                response = await session.request(
                    upstream.method,
                    upstream.url(),
                    headers=upstream.headers,
                    data=data,
                    **self._options,
                )
        except KeyfobError:
            raise
        except Exception as exc:
            raise self._upstream_error(exc, ex) from None
        ex.upstream_s = clock() - sent
        try:
            await self._relay(response, scrubber, receive, send, rid, ex, vault, use)
        finally:
            response.release()

    def forget_set(self, set_id: str | None) -> None:
        """Drop the scrubbers (they hold values) of a set, or of every set when None."""
        if set_id is None:
            self._scrubbers.clear()
            return
        for key in [k for k in self._scrubbers if k[0].split(":", 1)[0] == set_id]:
            del self._scrubbers[key]

    def _scrubber(self, use: ProxyUse, access: Secret[str] | None = None) -> Scrubber:
        """The scrubber for the set version in use. Building one costs far more than the
        rest of the request, so the latest few versions' are kept (see threat-model.md)."""
        key = (use.set_id, use.version)
        if access is not None:
            # A minted access token is scrubbed too; a new token makes a new scrubber.
            key = (
                f"{use.set_id}:{hashlib.sha256(access.reveal().encode()).hexdigest()}",
                use.version,
            )
        scrubber = self._scrubbers.pop(key, None)
        if scrubber is None:
            values = [v.reveal() for v in use.values.values()]
            if access is not None:
                values.append(access.reveal())
            basic = inject.basic_pairs(use.profile, use.values)
            scrubber = Scrubber.for_values(values, basic=basic)
        self._scrubbers[key] = scrubber
        while len(self._scrubbers) > SCRUBBERS_KEPT:
            self._scrubbers.pop(next(iter(self._scrubbers)))
        return scrubber

    async def _body(
        self, receive: Receive, ex: _Exchange, *, whole: bool = False
    ) -> bytes | AsyncIterator[bytes]:
        """The request body: bytes if it came in one piece (the usual case) or is small
        and of known length (``whole``: what a budget reads), else a stream."""
        first = await receive()
        chunk = self._count(first, ex)
        if not first.get("more_body", False):
            ex.body_done = True
            return chunk
        if whole:
            pieces = [chunk]
            while True:
                message = await receive()
                pieces.append(self._count(message, ex))
                if not message.get("more_body", False):
                    ex.body_done = True
                    return b"".join(pieces)

        async def rest() -> AsyncIterator[bytes]:
            if chunk:
                yield chunk
            while True:
                message = await receive()
                piece = self._count(message, ex)
                if piece:
                    yield piece
                if not message.get("more_body", False):
                    ex.body_done = True
                    return

        return rest()

    def _count(self, message: Message, ex: _Exchange) -> bytes:
        if message["type"] == "http.disconnect":
            ex.client_gone = True
            raise InvalidRequest("the client went away while sending the body")
        chunk: bytes = message.get("body", b"")
        ex.bytes_up += len(chunk)
        if ex.bytes_up > self._max_body:
            ex.too_large = True
            raise PayloadTooLarge("the request body is too large for the proxy")
        return chunk

    def _upstream_error(self, exc: Exception, ex: _Exchange) -> KeyfobError:
        """An upstream failure as a problem that carries no upstream detail."""
        if ex.too_large:
            return PayloadTooLarge("the request body is too large for the proxy")
        if isinstance(exc, KeyfobError):
            return exc
        if isinstance(exc, aiohttp.ClientConnectorDNSError) and isinstance(
            exc.os_error, egress.DestinationRefused
        ):
            return _refused(exc.os_error)
        if isinstance(exc, egress.DestinationRefused):
            return _refused(exc)
        if isinstance(exc, TimeoutError):
            return GatewayTimeout("the upstream did not answer in time", reason="timeout")
        if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
            return BadGateway("the upstream's TLS certificate was not accepted", reason="tls")
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            return BadGateway("the upstream host name did not resolve", reason="dns")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return BadGateway("the upstream could not be reached", reason="connect")
        log.warning("upstream request failed: %s", type(exc).__name__)
        return BadGateway("the upstream failed to answer", reason="upstream")

    async def _relay(
        self,
        response: aiohttp.ClientResponse,
        scrubber: Scrubber | None,
        receive: Receive,
        send: Send,
        rid: str,
        ex: _Exchange,
        vault: Vault,
        use: ProxyUse,
    ) -> None:
        out = headers.response_headers(response.raw_headers)
        decoder = None
        if scrubber is not None:
            try:
                applied = decoding.codings(
                    response.headers.getall("content-encoding", ()),
                    response.headers.getall("transfer-encoding", ()),
                )
            except decoding.Undecodable:
                raise BadGateway(
                    "the upstream sent a compressed answer that cannot be scrubbed",
                    reason="compressed_response",
                ) from None
            if applied:
                decoder = decoding.Decoder(applied, self._max_decoded)
                out = [(n, v) for n, v in out if n not in (b"content-encoding", b"content-length")]
        stream: StreamScrub | None = None
        if scrubber is not None and not scrubber.empty:
            out = _scrub_headers(scrubber, out, ex)
            stream = scrubber.stream()
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            out.append((b"x-accel-buffering", b"no"))
        tap = None
        readable = decoder is not None or "content-encoding" not in response.headers
        if use.plan is not None and readable:
            tap = ex.tap = vault.proxy.tap(use, content_type)
            if tap is not None and tap.stream:
                # What keyfob strips or cuts changes the length: the answer is chunked.
                out = [(n, v) for n, v in out if n != b"content-length"]
        out.append((b"x-keyfob-request-id", rid.encode()))
        chunks = response.content.iter_any()
        first = b""
        if decoder is not None:
            # The first piece is decoded before the answer starts, so a small answer that
            # inflates past the limit (the usual bomb) still gets a clean 502.
            try:
                first = decoder.feed(await anext(chunks, b""))
            except decoding.TooLarge:
                raise _too_large() from None
            except zlib.error:
                raise BadGateway(
                    "the upstream's compressed answer is corrupt", reason="compressed_response"
                ) from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._upstream_error(exc, ex) from None
        ex.status = response.status
        ex.first_byte_at = clock()
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        ex.started = True
        # A stream without a length may run for minutes: stop reading it when the agent
        # hangs up. (The request body must be fully read before receive() is ours.)
        watcher = None
        if response.content_length is None and ex.body_done:
            watcher = asyncio.ensure_future(_watch(receive, response, ex))
        in_headers = ex.scrubbed
        try:
            if first:
                await self._send_body(first, stream, send, ex, tap)
            async for chunk in chunks:
                if decoder is not None:
                    chunk = decoder.feed(chunk)
                await self._send_body(chunk, stream, send, ex, tap)
                if tap is not None and tap.cut:
                    break
            tail = decoder.flush() if decoder is not None else b""
            if tap is not None:
                tail = tap.feed(tail) + tap.flush()
            if stream is not None:
                tail = stream.feed(tail) + stream.flush()
        except decoding.TooLarge:
            ex.error = "decompressed_too_large"
            raise StreamAborted("the decoded answer is larger than the limit") from None
        except (aiohttp.ClientError, TimeoutError, zlib.error) as exc:
            if ex.client_gone:
                ex.error = "client_disconnected"
                return
            ex.error = "timeout" if isinstance(exc, TimeoutError) else "upstream_broke_off"
            raise StreamAborted("the upstream stream broke off") from None
        finally:
            if watcher is not None:
                watcher.cancel()
            if stream is not None:
                ex.scrubbed = in_headers + stream.count
        ex.bytes_down += len(tail)
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    @staticmethod
    async def _send_body(
        chunk: bytes, stream: StreamScrub | None, send: Send, ex: _Exchange, tap: Tap | None
    ) -> None:
        if tap is not None:
            chunk = tap.feed(chunk)
        if stream is not None:
            chunk = stream.feed(chunk)
        if chunk:
            ex.bytes_down += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


def _too_large() -> KeyfobError:
    return BadGateway(
        "the upstream's compressed answer decodes to more than the proxy accepts",
        reason="decompressed_too_large",
    )


def _scrub_headers(
    scrubber: Scrubber, out: list[tuple[bytes, bytes]], ex: _Exchange
) -> list[tuple[bytes, bytes]]:
    """Every header name and value scrubbed in one pass: joined by LF, which no header
    holds, so a match cannot span two of them; if masking ever swallowed a separator (a
    value with a line break), each is scrubbed on its own."""
    items = [part for pair in out for part in pair]
    joined, hits = scrubber.bytes(b"\n".join(items))
    if not hits:
        return out
    masked = joined.split(b"\n")
    if len(masked) != len(items):
        masked = []
        hits = 0
        for item in items:
            clean, found = scrubber.bytes(item)
            hits += found
            masked.append(clean)
    ex.scrubbed += hits
    return list(zip(masked[::2], masked[1::2], strict=True))


async def _watch(receive: Receive, response: aiohttp.ClientResponse, ex: _Exchange) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            ex.client_gone = True
            response.close()
            return


def _refused(refused: egress.DestinationRefused) -> KeyfobError:
    return BadGateway(
        "the upstream address is not allowed (private, loopback, link-local, metadata or "
        "otherwise not public)",
        reason="destination_refused",
        address_class=refused.reason,
    )


async def _problem(send: Send, error: KeyfobError, rid: str) -> None:
    body = error.render(rid)
    out = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        # keyfob's own answer, so the API's header name; relayed answers use
        # x-keyfob-request-id, since x-request-id there is the upstream's.
        (b"x-request-id", rid.encode()),
    ]
    out.extend((k.lower().encode(), v.encode()) for k, v in error.headers().items())
    await send({"type": "http.response.start", "status": error.status, "headers": out})
    await send({"type": "http.response.body", "body": body})
