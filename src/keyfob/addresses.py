"""Which IP addresses the proxy may connect to, and which host literals name one.

``refusal(address)`` is ``None`` for a public unicast address, else one of these
stable reasons (they appear in audit records and problem details):

    reason        refused addresses
    ------------  -------------------------------------------------------------------
    metadata      169.254.169.254, fd00:ec2::254 (AWS), 100.100.100.200 (Alibaba),
                  168.63.129.16 (Azure wire server); checked first, so it wins
    unspecified   0.0.0.0/8, ::
    loopback      127.0.0.0/8, ::1
    private       10/8, 172.16/12, 192.168/16, fc00::/7 (unique local),
                  fec0::/10 (site local), 64:ff9b:1::/48 (local-use NAT64)
    link_local    169.254/16, fe80::/10
    cgnat         100.64/10
    multicast     224/4, ff00::/8
    broadcast     255.255.255.255
    reserved      240/4, 192.0.0/24, 192.0.2/24, 198.18/15, 198.51.100/24,
                  203.0.113/24, 100::/64, 2001::/23 but Teredo, 2001:db8::/32,
                  3fff::/20, all IPv6 outside 2000::/3, and whatever else
                  ``ipaddress`` says is not global
    teredo        2001::/32
    ipv4_mapped   ::ffff:0:0/96 (mapped), ::ffff:0:0:0/96 (translated) and ::/96
                  (compatible) forms of a public IPv4 address

IPv6 forms that carry an IPv4 address (mapped, translated, compatible, NAT64
64:ff9b::/96, 6to4 2002::/16) are judged by the address they carry, since that is
where the packet ends up: ``::ffff:127.0.0.1`` is ``loopback``, ``64:ff9b::a9fe:a9fe``
is ``metadata``. If the carried address is public, NAT64 and 6to4 pass (they are real
routes to it), but mapped, translated and compatible forms are refused as
``ipv4_mapped``: a socket treats them as the IPv4 address itself, and no upstream
legitimately resolves to one. Teredo and local-use NAT64 are refused outright, since
the IPv4 address they reach cannot be read reliably from the IPv6 one.

The tables are explicit rather than delegated to ``is_global``, whose answers change
between Python releases; ``is_global`` is only the last word after them.

``parse_host(host)`` reads a host literal: an IP address in canonical form, ``None``
for a DNS name, and ``ValueError`` for anything a resolver or browser could read as an
IP address some other way (``127.1``, ``0x7f.0.0.1``, ``2130706433``, ``foo.123``,
zone ids). It never guesses which address was meant.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REASONS: Final = frozenset(
    {
        "metadata",
        "unspecified",
        "loopback",
        "private",
        "link_local",
        "cgnat",
        "multicast",
        "broadcast",
        "reserved",
        "teredo",
        "ipv4_mapped",
    }
)

# The classes a profile's ``allow_private_upstream`` admits (tests, on-prem); the rest
# (metadata, multicast, unspecified, broadcast, reserved, Teredo, mapped forms of public
# addresses) stay refused whatever a profile says.
PRIVATE: Final = frozenset({"loopback", "private", "link_local", "cgnat"})

_METADATA: Final = frozenset(
    {
        int(ipaddress.IPv4Address("169.254.169.254")),
        int(ipaddress.IPv4Address("100.100.100.200")),
        int(ipaddress.IPv4Address("168.63.129.16")),
    }
)
_METADATA_V6: Final = frozenset({int(ipaddress.IPv6Address("fd00:ec2::254"))})


def _ranges(table: list[tuple[str, str]]) -> tuple[tuple[int, int, str], ...]:
    """(first, last, reason) integer ranges; the first match wins, so order matters."""
    out = []
    for cidr, reason in table:
        network = ipaddress.ip_network(cidr)
        out.append((int(network.network_address), int(network.broadcast_address), reason))
    return tuple(out)


_V4: Final = _ranges(
    [
        ("0.0.0.0/8", "unspecified"),
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("169.254.0.0/16", "link_local"),
        ("100.64.0.0/10", "cgnat"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
        ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
        ("192.0.2.0/24", "reserved"),  # documentation
        ("198.51.100.0/24", "reserved"),
        ("203.0.113.0/24", "reserved"),
        ("198.18.0.0/15", "reserved"),  # benchmarking
    ]
)

# Checked after the embedded-IPv4 forms, which sit inside ::/8 and 2000::/3.
_V6: Final = _ranges(
    [
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fc00::/7", "private"),
        ("fec0::/10", "private"),
        ("64:ff9b:1::/48", "private"),
        ("fe80::/10", "link_local"),
        ("ff00::/8", "multicast"),
        ("100::/64", "reserved"),  # discard
        ("2001::/32", "teredo"),
        ("2001::/23", "reserved"),  # IETF protocol assignments
        ("2001:db8::/32", "reserved"),  # documentation
        ("3fff::/20", "reserved"),  # documentation (RFC 9637)
    ]
)
_GLOBAL_UNICAST: Final = ipaddress.IPv6Network("2000::/3")

_MAPPED: Final = int(ipaddress.IPv6Address("::ffff:0:0"))
_TRANSLATED: Final = int(ipaddress.IPv6Address("::ffff:0:0:0"))
_NAT64: Final = int(ipaddress.IPv6Address("64:ff9b::"))
_LOW32: Final = 0xFFFFFFFF


def _lookup(value: int, ranges: tuple[tuple[int, int, str], ...]) -> str | None:
    for first, last, reason in ranges:
        if first <= value <= last:
            return reason
    return None


def _refusal_v4(address: ipaddress.IPv4Address) -> str | None:
    value = int(address)
    if value in _METADATA:
        return "metadata"
    reason = _lookup(value, _V4)
    if reason is None and not address.is_global:
        return "reserved"
    return reason


def _embedded_v4(value: int) -> tuple[ipaddress.IPv4Address, bool] | None:
    """The IPv4 address an IPv6 one carries, and whether it is a real route to it."""
    high = value >> 32
    if high in (_MAPPED >> 32, _TRANSLATED >> 32) or (high == 0 and value > 1):
        return ipaddress.IPv4Address(value & _LOW32), False
    if high == _NAT64 >> 32:
        return ipaddress.IPv4Address(value & _LOW32), True
    if value >> 112 == 0x2002:
        return ipaddress.IPv4Address((value >> 80) & _LOW32), True
    return None


def _refusal_v6(address: ipaddress.IPv6Address) -> str | None:
    value = int(address)  # drops any zone id, which would defeat equality with the tables
    if value in _METADATA_V6:
        return "metadata"
    embedded = _embedded_v4(value)
    if embedded is not None:
        inner, routed = embedded
        reason = _refusal_v4(inner)
        if reason is None and not routed:
            return "ipv4_mapped"
        return reason
    reason = _lookup(value, _V6)
    if reason is not None:
        return reason
    plain = ipaddress.IPv6Address(value)
    if plain not in _GLOBAL_UNICAST or not plain.is_global:
        return "reserved"
    return None


def refusal(address: IPAddress) -> str | None:
    """None for a public unicast address; else why it is refused (a stable short reason)."""
    if isinstance(address, ipaddress.IPv4Address):
        return _refusal_v4(address)
    return _refusal_v6(address)


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD: Final = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}\Z")
_IPV6_CHARS: Final = re.compile(r"[0-9a-f:.]+\Z")
_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
# What a WHATWG URL parser or inet_aton would read as a number: decimal, octal, 0x-hex.
_NUMBER: Final = re.compile(r"[0-9]+\Z|0x[0-9a-f]*\Z")


def _parse_ipv6(text: str) -> ipaddress.IPv6Address:
    if "%" in text:
        raise ValueError("zone ids are not allowed in an IPv6 host")
    if not _IPV6_CHARS.match(text):
        raise ValueError("not a valid IPv6 address")
    tail = text.rpartition(":")[2]
    if "." in tail and not _DOTTED_QUAD.match(tail):
        raise ValueError("ambiguous IPv4 form inside an IPv6 address")
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        raise ValueError("not a valid IPv6 address") from None


def parse_host(host: str) -> IPAddress | None:
    """The IP address a host literal names, None for a DNS name; ValueError for ambiguous forms."""
    if not host.isascii():
        # Checked before lower(): "\u212a" (Kelvin sign) lower-cases to an ASCII "k".
        raise ValueError("not a host name: use the IDNA (xn--) form of non-ASCII names")
    text = host.lower()
    if text.startswith("[") or text.endswith("]"):
        if not (text.startswith("[") and text.endswith("]")) or ":" not in text:
            raise ValueError("brackets must enclose exactly one IPv6 address")
        return _parse_ipv6(text[1:-1])
    if ":" in text:
        return _parse_ipv6(text)
    if _DOTTED_QUAD.match(text):
        return ipaddress.IPv4Address(text)
    # A trailing dot is the DNS root; it is fine on a name, not on a number.
    labels = (text[:-1] if text.endswith(".") else text).split(".")
    if _NUMBER.match(labels[-1]):
        raise ValueError("ambiguous IPv4 form: use a canonical dotted quad like 192.0.2.1")
    if len(text) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError("not a host name: use letters, digits, hyphens and dots (IDNA xn-- form)")
    return None
