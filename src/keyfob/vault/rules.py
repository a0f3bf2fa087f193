"""Request rules of a grant: allowed methods and path patterns.

Patterns are matched against the normalised request path: ``*`` matches within one
segment, ``**`` matches across segments, everything else is literal
(``/v1/chat/*``, ``/repos/acme/**``).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from functools import lru_cache

from keyfob import constraints
from keyfob.store.records import AgentRow

METHODS = frozenset(constraints.METHODS)
# \Z, not $: "$" also matches before a trailing newline.
_PATTERN_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()+,;=:@%*/-]{0,511}\Z")


def check_pattern(pattern: str) -> str:
    if not _PATTERN_RE.match(pattern) or "//" in pattern or "/../" in pattern + "/":
        raise ValueError(
            "path patterns start with '/', use '*' (one segment) or '**' (any depth), "
            "and contain no '//' or '..'"
        )
    return pattern


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def path_allowed(patterns: list[str] | None, path: str) -> bool:
    return patterns is None or any(_compile(p).match(path) for p in patterns)


def method_allowed(methods: list[str] | None, method: str) -> bool:
    return methods is None or method.upper() in methods


# -- an agent's source networks ------------------------------------------------------

MAX_NETWORKS = 64
_FINGERPRINT_RE = re.compile(r"[0-9a-f]{64}")


def check_networks(items: list[str]) -> str:
    """Normalised comma-separated CIDRs (``10.1.2.3`` → ``10.1.2.3/32``); ValueError if bad."""
    if not items or len(items) > MAX_NETWORKS:
        raise ValueError(f"give 1 to {MAX_NETWORKS} networks (CIDRs or addresses)")
    out = []
    for item in items:
        try:
            out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError:
            raise ValueError(
                "each network must be an IP address or a CIDR, like 10.0.0.0/8"
            ) from None
    return ",".join(dict.fromkeys(out))


@lru_cache(maxsize=1024)
def _networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n) for n in text.split(","))


def network_allowed(networks: str | None, client: str | None) -> bool:
    """May a request from ``client`` use an agent bound to ``networks``? (None: anywhere;
    an unknown client address is never inside a bound agent's networks.)"""
    if networks is None:
        return True
    if not client:
        return False
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(networks))


def certificate_matches(pinned: str | None, presented: str | None) -> bool:
    """Did the request come with the agent's pinned TLS client certificate (if any)?"""
    if pinned is None:
        return True
    return presented is not None and hmac.compare_digest(pinned, presented)


def agent_refusal(
    agent: AgentRow | None, client: str | None, client_cert: str | None = None
) -> str | None:
    """Why an agent token is refused now (``auth.failed`` reason), or None: unknown,
    disabled, presented from outside the agent's ``allowed_networks``, or without the
    agent's TLS client certificate."""
    if agent is None:
        return "unknown"
    if agent.disabled_at is not None:
        return "agent_disabled"
    if not network_allowed(agent.allowed_networks, client):
        return "network_not_allowed"
    if not certificate_matches(agent.client_cert_sha256, client_cert):
        return "certificate_required"
    return None


def check_fingerprint(value: str) -> str:
    """A SHA-256 certificate fingerprint as 64 lower-case hex digits (colons allowed)."""
    digits = value.replace(":", "").strip().lower()
    if not _FINGERPRINT_RE.fullmatch(digits):
        raise ValueError("a certificate fingerprint is the SHA-256 of its DER form: 64 hex digits")
    return digits
