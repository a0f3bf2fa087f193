"""The checks every request passes before dispatch: trusted proxies, then the Host allow-list.

A browser tricked by DNS rebinding sends the attacker's host name in ``Host``; answering
only to known names (421 otherwise) keeps it away from ``/ui``, the API and the proxy.
Forwarded headers are believed only from configured proxy addresses: then the request's
scheme and client come from them, so the session cookie is ``Secure``, HSTS is sent and
per-address limits count the real client.
"""

from __future__ import annotations

import ipaddress

from starlette.types import Message, Scope, Send

from keyfob.errors import PROBLEM_JSON, MisdirectedRequest
from keyfob.settings import Settings
from keyfob.vault import new_request_id

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
HSTS = (b"strict-transport-security", b"max-age=31536000")
_WILDCARD_BINDS = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 - names, not a bind
_MISDIRECTED = MisdirectedRequest("this server does not answer to that host name")
_ANSWER_HEADERS = [
    (b"content-type", PROBLEM_JSON.encode()),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def host_name(value: str) -> str:
    """The host part of a ``Host`` header or setting, lower case, without a port."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rpartition(":")[0] if value.count(":") == 1 else value


def _literal(address: str) -> str:
    """An address as it appears in ``Host``: IPv6 bracketed."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def allowed_names(settings: Settings) -> frozenset[str] | None:
    """The configured host names; ``None`` allows any (``*``)."""
    if settings.allowed_hosts is not None:
        names = {host_name(h) for h in settings.allowed_hosts}
        return None if "*" in names else frozenset(names)
    names = set(LOOPBACK_NAMES)
    if settings.host.lower() not in _WILDCARD_BINDS:
        names.add(host_name(_literal(settings.host)))
    return frozenset(names)


class Edge:
    """Checks a request's ``Host`` and applies trusted proxies' headers to its scope."""

    def __init__(self, settings: Settings) -> None:
        self.names = allowed_names(settings)
        # With the default list, the address a request arrived on is allowed too: it is
        # an IP literal (no DNS, so nothing to rebind), and covers wildcard binds.
        self.own_address = settings.allowed_hosts is None
        self.proxies: tuple[Network, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies
        )
        self._known: dict[bytes, bool] = {}

    def admits(self, scope: Scope) -> bool:
        """Whether the request's ``Host`` is one this server answers to."""
        if self.names is None:
            return True
        raw = _header(scope, b"host")
        if raw is None:
            return False
        known = self._known.get(raw)
        if known is None:
            name = host_name(raw.decode("latin-1"))
            known = name in self.names
            if len(self._known) < 1024:  # bounded: a client picks any Host it likes
                self._known[raw] = known
        if known:
            return True
        server = scope.get("server")
        if self.own_address and server:
            return host_name(raw.decode("latin-1")) == _literal(str(server[0])).lower()
        return False

    def forwarded(self, scope: Scope) -> Scope:
        """The scope with scheme and client from a trusted proxy's headers, if any."""
        if not self.proxies:
            return scope
        client = scope.get("client")
        if not client or not self._trusted(client[0]):
            return scope
        proto, hops = _forwarded_fields(scope)
        changed = dict(scope)
        if proto in ("http", "https"):
            changed["scheme"] = proto
        # The client is the last address before the chain of trusted proxies.
        for hop in reversed(hops):
            if not self._trusted(hop):
                changed["client"] = (hop, 0)
                break
        return changed

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            return False
        return any(ip in network for network in self.proxies)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _forwarded_fields(scope: Scope) -> tuple[str | None, list[str]]:
    """``(proto, [client, proxy1, …])`` from ``Forwarded`` or else ``X-Forwarded-*``."""
    forwarded = _header(scope, b"forwarded")
    if forwarded is not None:
        proto: str | None = None
        hops: list[str] = []
        for element in forwarded.decode("latin-1").split(","):
            for pair in element.split(";"):
                key, _, value = pair.strip().partition("=")
                value = value.strip().strip('"')
                if key.lower() == "for":
                    hops.append(host_name(value).strip("[]"))
                elif key.lower() == "proto":
                    proto = value.lower()
        return proto, hops
    raw_proto = _header(scope, b"x-forwarded-proto")
    raw_for = _header(scope, b"x-forwarded-for")
    proto = raw_proto.decode("latin-1").split(",")[-1].strip().lower() if raw_proto else None
    hops = [h.strip() for h in raw_for.decode("latin-1").split(",")] if raw_for else []
    return proto, [h for h in hops if h]


async def misdirected(send: Send) -> None:
    """Answer 421 problem+json; the request is not read further."""
    rid = new_request_id()
    body = _MISDIRECTED.render(rid)
    headers = [*_ANSWER_HEADERS, (b"x-request-id", rid.encode())]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": _MISDIRECTED.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def with_hsts(send: Send) -> Send:
    """``send`` that adds HSTS to the response head (the request came over TLS)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), HSTS]}
        await send(message)

    return sending
