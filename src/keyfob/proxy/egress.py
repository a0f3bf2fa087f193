"""Egress: the only sockets the proxy opens, and the checks that come before them.

One process holds two aiohttp sessions, made once: one for profiles that must reach
public addresses only, one for profiles that allow private upstreams (tests, on-prem).
Separate sessions keep their connection pools apart, so a connection opened under the
lenient policy is never reused under the strict one. Each session's resolver classifies
every address a name resolves to (``keyfob.addresses``) and hands aiohttp only those
that pass: the socket goes to an address that was checked, resolved once. IP literals
skip aiohttp's resolver, so ``check_literal`` checks them before the request.

Neither session reads proxy variables or ``.netrc`` (``trust_env=False``), follows a
redirect, keeps cookies, or decompresses: bytes pass through as the upstream sent them.
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import ClientRequest
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from keyfob import addresses


class DestinationRefused(OSError):
    """An upstream address keyfob will not connect to; ``reason`` says which class."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"destination refused: {reason}")
        self.reason = reason


def allowed(reason: str | None, allow_private: bool) -> bool:
    return reason is None or (allow_private and reason in addresses.PRIVATE)


def check_literal(host: str, allow_private: bool) -> None:
    """Refuse an IP-literal upstream host that the policy does not allow (names pass)."""
    refused = _literal_refusal(host, allow_private)
    if refused is not None:
        raise DestinationRefused(refused)


@functools.lru_cache(maxsize=1024)
def _literal_refusal(host: str, allow_private: bool) -> str | None:
    try:
        address = addresses.parse_host(host)
    except ValueError:
        return "ambiguous_address"
    if address is None:
        return None
    reason = addresses.refusal(address)
    return None if allowed(reason, allow_private) else reason


Overrides = dict[tuple[str, int], tuple[str, int]]


def _result(host: str, address: str, port: int) -> ResolveResult:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return {
        "hostname": host,
        "host": address,
        "port": port,
        "family": family,
        "proto": 0,
        "flags": socket.AI_NUMERICHOST,
    }


async def resolve_checked(
    host: str, port: int, overrides: Overrides | None = None
) -> tuple[str, int]:
    """One address for ``host`` that the strict policy allows (the forward proxy's
    tunnels): resolved once, so the caller connects to what was checked."""
    mapped = (overrides or {}).get((host.lower(), port))
    if mapped is not None:
        return mapped
    resolver = CheckedResolver(allow_private=False)
    try:
        found = await resolver.resolve(host, port, socket.AF_UNSPEC)
    finally:
        await resolver.close()
    return found[0]["host"], port


class CheckedResolver(AbstractResolver):
    """Resolves with the system resolver, then drops every address the policy refuses."""

    def __init__(self, allow_private: bool, overrides: Overrides | None = None) -> None:
        self._allow_private = allow_private
        self._inner = ThreadedResolver()
        self._overrides = overrides or {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        mapped = self._overrides.get((host.lower(), port))
        if mapped is not None:
            # ``test_resolve`` (tests only): the address is the operator's choice.
            return [_result(host, *mapped)]
        check_literal(host, self._allow_private)
        found = await self._inner.resolve(host, port, family)
        kept: list[ResolveResult] = []
        reason = "no_address"
        for info in found:
            try:
                address = addresses.parse_host(info["host"])
            except ValueError:
                continue
            why = addresses.refusal(address) if address is not None else "not_an_address"
            if allowed(why, self._allow_private):
                kept.append(info)
            elif why is not None:
                reason = why
        if not kept:
            raise DestinationRefused(reason)
        return kept

    async def close(self) -> None:
        await self._inner.close()


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system trust store (plus ``ca_file``), hostname checked, TLS 1.2 or newer."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


class _Connector(aiohttp.TCPConnector):
    """Takes the TLS context from ``tls`` when a request is HTTPS, and only then: the trust
    store (~0.7 MB) is loaded just before the first HTTPS upstream request, never by a
    server whose upstreams are all plain HTTP (loopback ones, tests, the benchmark).
    keyfob never sets ``ssl`` per request, so every HTTPS request gets this context."""

    def __init__(self, tls: Callable[[], ssl.SSLContext], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._keyfob_tls = tls

    def _get_ssl_context(self, req: ClientRequest) -> ssl.SSLContext | None:
        return self._keyfob_tls() if req.is_ssl() else None


class Egress:
    """The process's upstream sessions, created on first use inside the running loop."""

    def __init__(self, ca_file: Path | None, overrides: Overrides | None = None) -> None:
        self._ca_file = ca_file
        self._overrides = overrides
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        self._tls: ssl.SSLContext | None = None

    def session(self, allow_private: bool) -> aiohttp.ClientSession:
        session = self._sessions.get(allow_private)
        if session is None or session.closed:
            connector = _Connector(
                self.tls,
                resolver=CheckedResolver(allow_private, self._overrides),
                use_dns_cache=False,
                limit=4096,
                limit_per_host=0,
                enable_cleanup_closed=False,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                timeout=aiohttp.ClientTimeout(total=None),
            )
            self._sessions[allow_private] = session
        return session

    def tls(self) -> ssl.SSLContext:
        """The upstream TLS context (system trust store plus ``ca_file``), made on first use."""
        if self._tls is None:
            self._tls = tls_context(self._ca_file)
        return self._tls

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


def request_options(connect: float, read: float, total: float) -> dict[str, Any]:
    """Per-request options: never follow a redirect; connect, read and total timeouts."""
    return {
        "allow_redirects": False,
        "timeout": aiohttp.ClientTimeout(total=total, connect=connect, sock_read=read),
    }
