"""Injection: a set's keys go into the upstream request where its profile says, only there.

The agent chooses none of it: not the host (the profile's base URL), not the header or
parameter (the profile's injection kind), not the format. Values are substituted only
into the one header or parameter the profile names, never into a body.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

import yarl

from keyfob import paths
from keyfob.errors import BadGateway, InvalidRequest
from keyfob.profiles import Profile
from keyfob.profiles.model import REFRESHED, AwsSigV4, Basic, Bearer, Header, Query
from keyfob.proxy import sigv4
from keyfob.secret import SECRET, Masked, Secret

_PLACEHOLDER = re.compile(r"\{([A-Z_][A-Z0-9_]*)\}")
_UNSAFE = re.compile(r"[\x00\r\n]")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
UNSIGNED = frozenset({"UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"})
# SigV4 headers keyfob computes; the agent's copies never go upstream.
_AWS_OWN = frozenset({"x-amz-date", "x-amz-security-token", "x-amz-content-sha256"})
_REFRESHED_OWN = frozenset({"authorization"})


@dataclass(slots=True)
class Upstream(Masked):
    """The request keyfob sends, assembled from parsed parts."""

    method: str
    scheme: str
    host: str
    port: int
    path: str
    # Once injected, headers or query hold the credential.
    query: str = field(metadata=SECRET)
    headers: list[tuple[str, str]] = field(default_factory=list, metadata=SECRET)

    @property
    def authority(self) -> str:
        """The Host header: host, port when not the scheme's default, IPv6 in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def url(self) -> yarl.URL:
        return yarl.URL.build(
            scheme=self.scheme,
            authority=self.authority,
            path=self.path,
            query_string=self.query,
            encoded=True,
        )


def own_headers(profile: Profile) -> frozenset[str]:
    """Request headers the profile's injection writes, so the agent's copies are dropped."""
    inject = profile.inject
    if isinstance(inject, Header):
        return frozenset({inject.name.lower()})
    if isinstance(inject, AwsSigV4):
        return _AWS_OWN
    if isinstance(inject, REFRESHED):
        return _REFRESHED_OWN
    return frozenset()


def forwarded(profile: Profile, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The agent's headers that go upstream: not the profile's own, and for SigV4 no
    ``x-amz-*`` header keyfob would not sign (so every one that goes is signed)."""
    own = own_headers(profile)
    if isinstance(profile.inject, AwsSigV4):
        return [
            (n, v)
            for n, v in pairs
            if n not in own and (not n.startswith("x-amz-") or sigv4.signed_amz(n))
        ]
    return [(n, v) for n, v in pairs if n not in own]


@functools.lru_cache(maxsize=1024)
def _base(base_url: str) -> tuple[str, str, int, str]:
    """A base URL's scheme, lower-case host, port and path: parsed once per URL, not once
    per request (the text is the key, so a changed profile parses its own)."""
    base = urlsplit(base_url)
    port = base.port or (443 if base.scheme == "https" else 80)
    return base.scheme, (base.hostname or "").lower(), port, base.path


def target(profile: Profile, method: str, path: str, query: str) -> Upstream:
    """Where the request goes: the profile's base URL joined with the normalised path."""
    scheme, host, port, base_path = _base(profile.base_url)
    if host not in profile.hosts:
        # The profile validator makes this impossible; a row edited in the database must not
        # redirect credentials either.
        raise BadGateway("the secret set's upstream is not one of its allowed hosts")
    if scheme != "https" and not profile.allow_private_upstream:
        raise BadGateway("the secret set's upstream is not HTTPS")
    if isinstance(profile.inject, Query):
        query = paths.without_param(query, profile.inject.param)
    return Upstream(method, scheme, host, port, paths.join(base_path, path), query)


def payload_hash(agent_value: str | None) -> str | None:
    """The body hash to sign: the one the agent's SDK declared, if it is usable."""
    if agent_value is None:
        return None
    if _SHA256.match(agent_value) or agent_value in UNSIGNED:
        return agent_value
    if agent_value.startswith("STREAMING-"):
        raise InvalidRequest(
            "signed streaming uploads need the secret key; let the SDK send an unsigned "
            "or hashed payload"
        )
    raise InvalidRequest("x-amz-content-sha256 is not a SHA-256 hex digest")


def inject(
    upstream: Upstream,
    profile: Profile,
    values: Mapping[str, Secret[str]],
    *,
    body_hash: str,
    now: datetime,
    access: Secret[str] | None = None,
) -> None:
    """Add the credential to ``upstream`` as the profile says (the last step before sending);
    ``body_hash`` is what SigV4 signs, ignored by every other kind; ``access`` is the token
    keyfob minted for a refreshed kind (always the last header, so a retry can swap it)."""
    spec = profile.inject
    if isinstance(spec, REFRESHED):
        if access is None:
            raise BadGateway("no access token was minted for this secret set")
        token = access.reveal()
        if _UNSAFE.search(token):
            raise BadGateway("the minted access token cannot be sent in a header")
        upstream.headers.append(("authorization", "Bearer " + token))
    elif isinstance(spec, Bearer):
        upstream.headers.append(("authorization", "Bearer " + _value(values, spec.key)))
    elif isinstance(spec, Header):
        upstream.headers.append((spec.name, _fill(spec.template, values)))
    elif isinstance(spec, Basic):
        pair = f"{_fill(spec.username, values)}:{_fill(spec.password, values)}"
        token = base64.b64encode(pair.encode()).decode()
        upstream.headers.append(("authorization", "Basic " + token))
    elif isinstance(spec, Query):
        upstream.query = paths.with_param(upstream.query, spec.param, _value(values, spec.key))
    else:
        upstream.headers.extend(
            sigv4.sign(
                method=upstream.method,
                host=upstream.authority,
                path=upstream.path,
                query=upstream.query,
                headers=upstream.headers,
                payload_hash=body_hash,
                access_key_id=_value(values, spec.access_key_id),
                secret_access_key=_value(values, spec.secret_access_key),
                session_token=_value(values, spec.session_token) if spec.session_token else None,
                region=spec.region,
                service=spec.service,
                now=now,
            )
        )


def basic_pairs(profile: Profile, values: Mapping[str, Secret[str]]) -> list[tuple[str, str]]:
    """The (user, password) a basic profile sends, so the scrubber knows their encoded form."""
    spec = profile.inject
    if isinstance(spec, Basic):
        return [(_fill(spec.username, values), _fill(spec.password, values))]
    return []


def _value(values: Mapping[str, Secret[str]], key: str) -> str:
    secret = values.get(key)
    if secret is None:
        raise BadGateway("the secret set lacks a key its injection profile names")
    value = secret.reveal()
    if _UNSAFE.search(value):
        raise BadGateway("a secret value holds a line break and cannot be sent in a header")
    return value


def _fill(template: str, values: Mapping[str, Secret[str]]) -> str:
    return _PLACEHOLDER.sub(lambda m: _value(values, m.group(1)), template)
