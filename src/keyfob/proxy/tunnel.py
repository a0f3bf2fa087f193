"""Inside an intercepted tunnel: HTTP/1.1 requests (keep-alive) read with h11 and handed,
as ASGI, to the reverse route's app — the same decision, injection, scrubbing, streaming
and audit, with only the arrival different.

Each request must name the CONNECT's host and lie under the set's base path; its framing
must be unambiguous. Every credential the client sent (placeholders included) is taken
out and the set's own lease (derived from the credential) put in its place, so the app
sees ``/proxy/{set}/{rest}`` with a lease, exactly as a reverse-route request.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import h11
from starlette.types import Message

from keyfob.errors import PROBLEM_JSON, InvalidRequest, KeyfobError, MisdirectedRequest
from keyfob.proxy.app import ProxyApp, StreamAborted
from keyfob.proxy.headers import CREDENTIALS
from keyfob.vault import Vault, new_request_id
from keyfob.vault.context import Context
from keyfob.vault.forwarding import Bundle, SetRoute

READ_CHUNK = 64 * 1024
IDLE_TIMEOUT = 120.0
DRAIN_LIMIT = 64 * 1024
_LEASE_HEADER = b"x-keyfob-lease"


class _Refused(Exception):
    def __init__(self, error: KeyfobError) -> None:
        self.error = error


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
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_headers)
        self._lease = bundle.lease_for(route).encode()
        self._hosts = {host.encode(), f"{host}:{port}".encode()}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                event = await self._next(reader)
            except h11.RemoteProtocolError:
                await self._deny(
                    writer,
                    InvalidRequest(
                        "the request inside the tunnel is not valid HTTP/1.1", reason="bad_request"
                    ),
                )
                return
            if not isinstance(event, h11.Request):
                return
            try:
                scope = self._scope(event, writer)
            except _Refused as refused:
                await self._deny(writer, refused.error)
                return
            if not await self._exchange(scope, reader, writer):
                return
            if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
                self._conn.start_next_cycle()
            else:
                return

    async def _next(self, reader: asyncio.StreamReader) -> Any:
        while True:
            event = self._conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            async with asyncio.timeout(IDLE_TIMEOUT):
                data = await reader.read(READ_CHUNK)
            self._conn.receive_data(data)
            if not data and self._conn.their_state is h11.IDLE:
                return h11.ConnectionClosed()

    def _scope(self, event: h11.Request, writer: asyncio.StreamWriter) -> dict[str, Any]:
        hosts = [v for k, v in event.headers if k == b"host"]
        if len(hosts) != 1 or hosts[0].lower() not in self._hosts:
            raise _Refused(
                MisdirectedRequest(
                    "the request's Host is not the host of the CONNECT it came through",
                    reason="host_mismatch",
                )
            )
        _check_framing(list(event.headers))
        target = event.target
        if not target.startswith(b"/"):
            raise _Refused(
                InvalidRequest(
                    "requests inside the tunnel use origin-form targets", reason="bad_target"
                )
            )
        raw_path, _, query = target.partition(b"?")
        base = self._route.base_path.encode()
        if base and raw_path != base and not raw_path.startswith(base + b"/"):
            raise _Refused(
                InvalidRequest(
                    "the path is outside the secret set's base URL", reason="outside_base_path"
                )
            )
        rest = raw_path[len(base) :] or b"/"
        routed = f"/proxy/{self._route.set_path}".encode() + rest
        # Every credential the client sent goes (placeholders too); the set's lease comes in.
        headers = [(k, v) for k, v in event.headers if k.decode("latin-1") not in CREDENTIALS]
        headers.append((_LEASE_HEADER, self._lease))
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("sockname")
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": event.http_version.decode("ascii"),
            "method": event.method.decode("ascii"),
            "scheme": "https",
            "path": routed.decode("latin-1"),
            "raw_path": routed,
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": (peer[0], peer[1]) if peer else None,
            "server": (sock[0], sock[1]) if sock else None,
            "extensions": {},
        }

    async def _exchange(
        self, scope: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Run one request through the app; False if the connection must close."""
        conn = self._conn
        finished = asyncio.Event()

        async def receive() -> Message:
            if conn.their_state is h11.DONE or finished.is_set():
                await finished.wait()
                return {"type": "http.disconnect"}
            while True:
                event = await self._next(reader)
                if isinstance(event, h11.Data):
                    return {"type": "http.request", "body": bytes(event.data), "more_body": True}
                if isinstance(event, h11.EndOfMessage):
                    return {"type": "http.request", "body": b"", "more_body": False}
                return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                out = h11.Response(
                    status_code=message["status"],
                    headers=[(k, v) for k, v in message.get("headers", [])],
                )
                writer.write(conn.send(out) or b"")
            elif kind == "http.response.body":
                body = message.get("body", b"")
                if body:
                    writer.write(conn.send(h11.Data(data=body)) or b"")
                if not message.get("more_body", False):
                    writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()

        try:
            await self._app(scope, receive, send)
            # A request without a body (or one the app refused before reading it): its end
            # is still to be read before the next request on this connection.
            # A large unread body is not worth reading: the connection closes instead.
            left = DRAIN_LIMIT
            while conn.their_state is h11.SEND_BODY and left > 0:
                event = await self._next(reader)
                if isinstance(event, h11.Data):
                    left -= len(event.data)
                elif not isinstance(event, h11.EndOfMessage):
                    return False
        except StreamAborted:
            return False
        except (h11.LocalProtocolError, h11.RemoteProtocolError, ConnectionError):
            return False
        finally:
            finished.set()
        return conn.our_state is h11.DONE

    async def _deny(self, writer: asyncio.StreamWriter, error: KeyfobError) -> None:
        """A refusal before the app saw the request: audited, answered, connection closed."""
        rid = new_request_id()
        ctx = Context(self._ctx.actor, rid, self._ctx.client)
        details = {"reason": error.extra.get("reason") or error.slug, "set": self._route.set_path}
        await self._vault.forwarding.record(
            self._bundle, ctx, "forward.deny", f"host:{self._host}:{self._port}", "denied", details
        )
        body = error.render(rid)
        headers = [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"x-request-id", rid.encode()),
        ]
        with contextlib.suppress(h11.LocalProtocolError):
            writer.write(
                self._conn.send(h11.Response(status_code=error.status, headers=headers)) or b""
            )
            writer.write(self._conn.send(h11.Data(data=body)) or b"")
            writer.write(self._conn.send(h11.EndOfMessage()) or b"")
        with contextlib.suppress(ConnectionError):
            await writer.drain()


def _check_framing(headers: list[tuple[bytes, bytes]]) -> None:
    """Refuse ambiguous framing before anything else reads it (request smuggling)."""
    lengths = {v.strip() for k, v in headers if k == b"content-length"}
    encodings = [v for k, v in headers if k == b"transfer-encoding"]
    if encodings and lengths:
        raise _Refused(
            InvalidRequest(
                "Content-Length and Transfer-Encoding may not both be sent", reason="smuggling"
            )
        )
    if len(lengths) > 1:
        raise _Refused(InvalidRequest("conflicting Content-Length headers", reason="smuggling"))
    if encodings and [e.strip().lower() for e in b",".join(encodings).split(b",")] != [b"chunked"]:
        raise _Refused(
            InvalidRequest("the only transfer coding accepted is chunked", reason="smuggling")
        )
