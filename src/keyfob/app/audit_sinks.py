"""The audit shipping sinks ``KEYFOB_AUDIT_SHIP_*`` configure: a rotated JSONL file,
syslog (RFC 5424 over UDP, TCP or TLS) and an HTTPS webhook.

Each ``send`` returns only once its batch is delivered as far as the sink can tell (the
file fsynced, the TCP stream drained, a 2xx from the webhook) and raises ``ShipFailed``
with a message fit for logs and ``/readyz`` otherwise: no secret, no URL path or query
(webhook URLs often carry a token there).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from keyfob.audit import Event
from keyfob.audit.shipping import line, syslog_message, wire
from keyfob.proxy.egress import tls_context
from keyfob.secret import Masked
from keyfob.settings import Settings, split_listen
from keyfob.vault.shipping import ShipFailed, Sink

WEBHOOK_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)


class FileSink:
    """Appends JSON lines to ``path`` (mode 0600), fsynced; rotated by size."""

    name = "file"

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups

    async def send(self, events: Sequence[Event]) -> None:
        data = "".join(line(e) + "\n" for e in events).encode()
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ShipFailed(f"cannot write {self.path}: {reason}") from exc

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(data) > self.max_bytes:
            self._rotate()
            size = 0
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A line torn by a crash stays on a line of its own; its records are
                # written again below (they were never recorded as delivered).
                data = b"\n" + data
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        def numbered(n: int) -> Path:
            return self.path.with_name(f"{self.path.name}.{n}")

        numbered(self.backups).unlink(missing_ok=True)
        for n in range(self.backups - 1, 0, -1):
            if numbered(n).exists():
                os.replace(numbered(n), numbered(n + 1))
        os.replace(self.path, numbered(1))
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def close(self) -> None:
        return None


class SyslogSink:
    """RFC 5424 messages, one datagram each over UDP, octet-counted over TCP (RFC 6587)
    or over TLS with the server's certificate verified (RFC 5425)."""

    name = "syslog"

    def __init__(self, target: str, facility: int, ca_file: Path | None = None) -> None:
        self.scheme, _, address = target.partition("://")
        self.tcp = self.scheme in ("tcp", "tls")
        self._tls = tls_context(ca_file) if self.scheme == "tls" else None
        self.host, self.port = split_listen(address)
        self.facility = facility
        self.hostname = socket.gethostname()
        self._udp: socket.socket | None = None
        self._writer: asyncio.StreamWriter | None = None

    def _messages(self, events: Sequence[Event]) -> list[bytes]:
        pid = os.getpid()
        return [
            syslog_message(e, hostname=self.hostname, procid=pid, facility=self.facility)
            for e in events
        ]

    async def send(self, events: Sequence[Event]) -> None:
        messages = self._messages(events)
        where = f"{self.scheme}://{self.host}:{self.port}"
        try:
            if self.tcp:
                await self._send_tcp(messages)
            else:
                await self._send_udp(messages)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            await self.close()
            raise ShipFailed(f"{type(exc).__name__} sending to syslog at {where}") from exc

    async def _send_udp(self, messages: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        if self._udp is None:
            info = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            family, kind, proto, _, address = info[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            sock.connect(address)
            self._udp = sock
        for message in messages:
            await loop.sock_sendall(self._udp, message)

    async def _send_tcp(self, messages: list[bytes]) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            opening = asyncio.open_connection(self.host, self.port, ssl=self._tls)
            _, writer = await asyncio.wait_for(opening, 10)
            self._writer = writer
        assert writer is not None
        for message in messages:
            writer.write(str(len(message)).encode() + b" " + message)
        await asyncio.wait_for(writer.drain(), 30)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


# How much of a webhook receiver's answer is read (the status is what counts).
ANSWER_READ = 64 * 1024


class WebhookSink(Masked):
    """``POST {"records": […]}`` to an https URL; a 2xx acknowledges the batch. Prints as
    its origin only: the bearer token and the signing secret stay out of every repr."""

    name = "webhook"
    shown = ("origin",)

    def __init__(
        self,
        url: str,
        ca_file: Path | None,
        token: str | None = None,
        secret: bytes | None = None,
    ) -> None:
        self.url = url
        parts = urlsplit(url)
        self.origin = f"{parts.scheme}://{parts.netloc}"  # what errors name: no path, query
        self._ca_file = ca_file
        self._token = token
        self._secret = secret
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=tls_context(self._ca_file), limit=1)
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=WEBHOOK_TIMEOUT,
            )
        return self._session

    async def send(self, events: Sequence[Event]) -> None:
        body = json.dumps({"records": [wire(e) for e in events]}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "keyfob-audit-shipper"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        if self._secret is not None:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers["X-Keyfob-Signature"] = f"sha256={digest}"
        try:
            async with self._open().post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as answer:
                await answer.content.read(ANSWER_READ)  # a receiver's answer is not read whole
                status = answer.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ShipFailed(f"{type(exc).__name__} reaching {self.origin}") from exc
        if not 200 <= status < 300:
            raise ShipFailed(f"HTTP {status} from {self.origin}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def build_sinks(settings: Settings) -> list[Sink]:
    """The sinks ``settings`` turns on (none by default)."""
    sinks: list[Sink] = []
    if settings.audit_ship_file is not None:
        sinks.append(
            FileSink(
                settings.audit_ship_file,
                settings.audit_ship_file_max_bytes,
                settings.audit_ship_file_backups,
            )
        )
    if settings.audit_ship_syslog is not None:
        sinks.append(
            SyslogSink(
                settings.audit_ship_syslog,
                settings.audit_ship_syslog_facility,
                settings.audit_ship_syslog_ca_file,
            )
        )
    if settings.audit_ship_webhook is not None:
        token = settings.audit_ship_webhook_token
        secret = settings.audit_ship_webhook_secret
        sinks.append(
            WebhookSink(
                settings.audit_ship_webhook,
                settings.audit_ship_webhook_ca_file,
                token.get_secret_value() if token else None,
                secret.get_secret_value().encode() if secret else None,
            )
        )
    return sinks
