"""The forward proxy's listener: ``CONNECT`` authenticated by a multi-set lease, then
TLS interception for a set's host, a plain tunnel (or a refusal) for any other.

``HTTPS_PROXY=http://keyfob:<lease>@HOST:PORT``. In order, for each connection: the
``CONNECT`` line and ``Proxy-Authorization`` are read (407 without a live credential,
audited); IP literals are refused; a host that is one of the credential's sets' upstreams
is intercepted (``tunnel.Interception``: keyfob's leaf certificate, then every request
goes through the reverse route's ASGI app); any other host follows the agent's egress
policy — ``deny`` (403) or ``tunnel`` (resolved and checked like an upstream, audited,
bytes passed untouched).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import ssl
from collections.abc import Callable

import h11

from keyfob import addresses
from keyfob.errors import (
    PROBLEM_JSON,
    BadGateway,
    Forbidden,
    InvalidRequest,
    KeyfobError,
    MethodNotAllowed,
    ProxyAuthRequired,
    Unauthorized,
)
from keyfob.proxy import egress
from keyfob.proxy.app import ProxyApp
from keyfob.proxy.tunnel import Interception
from keyfob.settings import Settings
from keyfob.text import digits
from keyfob.vault import Vault, new_request_id
from keyfob.vault.context import Context
from keyfob.vault.forwarding import Bundle, SetRoute

log = logging.getLogger("keyfob.forward")

HEAD_LIMIT = 16 * 1024
HEAD_TIMEOUT = 30.0
PIPE_CHUNK = 64 * 1024
TUNNEL_GRACE = 2.0


class ForwardProxy:
    """Serves ``CONNECT`` on its own listener; shares the reverse route's app."""

    def __init__(self, settings: Settings, vault: Callable[[], Vault], app: ProxyApp) -> None:
        self._vault = vault
        self._app = app
        self._overrides = settings.resolve_map
        self._connect_timeout = settings.proxy_connect_timeout
        self._max_headers = settings.proxy_max_header_bytes
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> asyncio.Server:
        self._server = await asyncio.start_server(self._accept, host, port, limit=HEAD_LIMIT)
        return self._server

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError):
            pass
        except Exception as exc:
            log.error("forward proxy: unhandled %s", type(exc).__name__)
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ctx = Context("anonymous", new_request_id(), peer[0] if peer else None)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_headers)
        event = await _next_request(conn, reader)
        if event is None:
            return
        headers = {k.lower(): v for k, v in event.headers}
        vault = self._vault()
        try:
            bundle = await vault.forwarding.authenticate(
                _credential(headers.get(b"proxy-authorization")), ctx
            )
        except Unauthorized:
            await _answer(
                writer,
                ProxyAuthRequired(
                    'the forward proxy needs Proxy-Authorization: Basic base64("keyfob:" + lease)'
                ),
                ctx.request_id,
            )
            return
        ctx = Context(f"agent:{bundle.agent_id}", ctx.request_id, ctx.client)
        if event.method != b"CONNECT":
            await self._refuse(
                writer,
                bundle,
                ctx,
                "-",
                MethodNotAllowed(
                    "only CONNECT is proxied: use https:// URLs through the forward proxy",
                    reason="not_connect",
                ),
            )
            return
        try:
            host, port = _authority(event.target.decode("ascii", "replace"))
        except _Literal:
            error = Forbidden(
                "CONNECT to an IP address is not allowed; name the host", reason="ip_literal"
            )
            await self._refuse(writer, bundle, ctx, "-", error)
            return
        except ValueError as exc:
            await self._refuse(
                writer, bundle, ctx, "-", InvalidRequest(str(exc), reason="bad_target")
            )
            return
        target = f"{host}:{port}"
        if conn.trailing_data[0]:
            await self._refuse(
                writer,
                bundle,
                ctx,
                target,
                InvalidRequest(
                    "bytes arrived before the CONNECT was answered", reason="early_data"
                ),
            )
            return
        route = bundle.route(host, port)
        if route is not None:
            await self._intercept(reader, writer, bundle, ctx, route, host, port)
        elif bundle.egress == "deny":
            await self._refuse(
                writer,
                bundle,
                ctx,
                target,
                Forbidden(
                    f"{host} is not a host of this lease's secret sets and the agent's egress "
                    "policy is deny",
                    reason="egress_denied",
                ),
            )
        else:
            await self._tunnel(reader, writer, bundle, ctx, host, port)

    async def _refuse(
        self,
        writer: asyncio.StreamWriter,
        bundle: Bundle,
        ctx: Context,
        target: str,
        error: KeyfobError,
    ) -> None:
        reason = str(error.extra.get("reason") or error.slug)
        details = {
            "reason": reason,
            "client": ctx.client,
            **{k: v for k, v in error.extra.items() if k != "reason"},
        }
        await self._vault().forwarding.record(
            bundle, ctx, "forward.deny", f"host:{target}", "denied", details
        )
        await _answer(writer, error, ctx.request_id)

    async def _intercept(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        bundle: Bundle,
        ctx: Context,
        route: SetRoute,
        host: str,
        port: int,
    ) -> None:
        vault = self._vault()
        context = await vault.authority.server_context(host)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await writer.start_tls(context)
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            # The usual cause: the client does not trust keyfob's CA.
            await vault.forwarding.record(
                bundle,
                ctx,
                "forward.tls_failed",
                f"host:{host}:{port}",
                "denied",
                {"reason": "handshake_failed", "error": type(exc).__name__, "client": ctx.client},
            )
            return
        interception = Interception(
            self._app,
            vault,
            bundle,
            route,
            host,
            port,
            ctx,
            self._max_headers,
        )
        await interception.serve(reader, writer)

    async def _tunnel(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        bundle: Bundle,
        ctx: Context,
        host: str,
        port: int,
    ) -> None:
        target = f"{host}:{port}"
        try:
            address, to_port = await egress.resolve_checked(host, port, self._overrides)
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(address, to_port), self._connect_timeout
            )
        except egress.DestinationRefused as refused:
            await self._refuse(
                writer,
                bundle,
                ctx,
                target,
                Forbidden(
                    "the destination address is not allowed (private, loopback, link-local, "
                    "metadata or otherwise not public)",
                    reason="destination_refused",
                    address_class=refused.reason,
                ),
            )
            return
        except (OSError, TimeoutError):
            await self._refuse(
                writer,
                bundle,
                ctx,
                target,
                BadGateway("the destination could not be reached", reason="connect"),
            )
            return
        vault = self._vault()
        try:
            # Audited before a byte passes: no record, no tunnel.
            await vault.forwarding.record(
                bundle,
                ctx,
                "forward.tunnel",
                f"host:{target}",
                "ok",
                {"stage": "open", "client": ctx.client},
            )
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            counts = [0, 0]
            pipes = {
                asyncio.ensure_future(_pipe(reader, upstream_writer, counts, 0)),
                asyncio.ensure_future(_pipe(upstream_reader, writer, counts, 1)),
            }
            _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            # One side has hung up: the other gets a moment to finish, not a kept socket.
            if pending:
                _, pending = await asyncio.wait(pending, timeout=TUNNEL_GRACE)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            up, down = counts
        finally:
            upstream_writer.close()
        await vault.forwarding.record(
            bundle,
            ctx,
            "forward.tunnel",
            f"host:{target}",
            "ok",
            {"stage": "close", "bytes_up": up, "bytes_down": down},
        )


async def _next_request(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
    """The ``CONNECT`` request's head, or None if the client went away or sent garbage."""
    async with asyncio.timeout(HEAD_TIMEOUT):
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return None
            if isinstance(event, h11.Request):
                return event
            if event is h11.NEED_DATA:
                data = await reader.read(HEAD_LIMIT)
                if not data:
                    return None
                conn.receive_data(data)
                continue
            return None


def _credential(header: bytes | None) -> str | None:
    """The lease in ``Proxy-Authorization: Basic base64("keyfob:" + lease)``."""
    if not header:
        return None
    scheme, _, rest = header.decode("latin-1").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, _, password = decoded.partition(":")
    return password or None


class _Literal(ValueError):
    """A CONNECT to an IP literal (or an odd form of one): refused, never resolved."""


def _authority(target: str) -> tuple[str, int]:
    """``host:port`` of a CONNECT; an IP literal, a bad port or a bad name is refused."""
    host, sep, port = target.rpartition(":")
    if not sep or not digits(port, 5) or not 0 < int(port) < 65536:
        raise ValueError("CONNECT needs host:port")
    host = host.lower()
    if host.startswith("["):
        raise _Literal(host)
    try:
        literal = addresses.parse_host(host)
    except ValueError:
        raise _Literal(host) from None
    if literal is not None:
        raise _Literal(host)
    if not host or len(host) > 253 or any(not (c.isalnum() or c in "-.") for c in host):
        raise ValueError("CONNECT names no valid host")
    return host, int(port)


async def _answer(writer: asyncio.StreamWriter, error: KeyfobError, rid: str) -> None:
    """A problem answer to the CONNECT itself; the connection closes after it."""
    body = error.render(rid)
    head = [
        f"HTTP/1.1 {error.status} {error.title}",
        f"Content-Type: {PROBLEM_JSON}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        f"X-Request-Id: {rid}",
        *(f"{k}: {v}" for k, v in error.headers().items()),
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counts: list[int], index: int
) -> None:
    """Copy until EOF, counting bytes in ``counts[index]`` for the audit record."""
    try:
        while data := await reader.read(PIPE_CHUNK):
            counts[index] += len(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
