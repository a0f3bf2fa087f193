"""Header hygiene: what of the agent's request may go upstream, and of the answer back.

Requests: framing is checked (one ``Content-Length``, never beside ``Transfer-Encoding``,
only ``chunked``), CR/LF/NUL and oversize headers are refused, upgrades are refused, and
every credential the agent sent (the lease included) is taken out, with hop-by-hop
headers and any header ``Connection`` names. The proxy then drops the agent's copies of
the profile's own headers and adds keyfob's, so nothing the agent names can remove it.

Nothing the agent sends may change the method, host or path its grant was checked
against: method-override, URL-rewrite and forwarding headers (``STEERING``) are dropped,
and headers that name another upstream resource (``x-amz-copy-source``) are refused
before the lease is used (``ForbiddenHeader``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from keyfob import tokens
from keyfob.errors import ForbiddenHeader, HeadersTooLarge, InvalidRequest, PayloadTooLarge
from keyfob.secret import SECRET, Masked

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "host",
    }
)
# Whatever credential an agent sends is dropped: exactly one, keyfob's, goes upstream.
CREDENTIALS = frozenset(
    {
        "authorization",
        "x-api-key",
        "api-key",
        "proxy-authorization",
        "cookie",
        "x-keyfob-lease",
    }
)
# Headers some upstreams (or the proxies and frameworks in front of them) honour to run
# another method, path or host than the request line's: the grant was checked against
# the request line, so none of these may reach the upstream.
STEERING = frozenset(
    {
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-method",
        "x-original-url",
        "x-original-uri",
        "x-rewrite-url",
        "x-envoy-original-path",
        "x-envoy-original-url",
        "x-forwarded-host",
        "x-forwarded-server",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-path",
        "x-forwarded-uri",
        "x-forwarded-scheme",
        "x-forwarded-ssl",
        "x-url-scheme",
        "x-original-host",
        "x-host",
        "forwarded",
        # WebDAV's COPY/MOVE target; those methods are not proxied, but an override could
        # make one out of a POST on an upstream that honours both.
        "destination",
    }
)
# Headers that make a storage API read or write a second object (a copy or rename source,
# a redirect target): the grant's path rules saw only the request's own path. Every
# x-amz-*source* header, and the copy/rename sources of the other object stores
# (x-ms-copy-source, x-goog-copy-source, x-oss-copy-source, …).
_FOREIGN_RESOURCE = frozenset({"x-amz-website-redirect-location"})


def _names_a_source(name: str) -> bool:
    return name.startswith("x-amz-") or "copy-source" in name or "rename-source" in name


# uvicorn writes its own Date.
_RESPONSE_DROP = HOP_BY_HOP | {"date"}
# Header names joined by newlines, each a token (RFC 9110 section 5.6.2).
_TOKENS = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:\n[!#$%&'*+.^_`|~0-9A-Za-z-]+)*\Z")
MAX_HEADERS = 200
# Names that need a look of their own; every other header is only checked and kept.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "upgrade", "host"})
# Never forwarded as the agent sent them (keyfob sets the length itself).
_REMOVED = HOP_BY_HOP | CREDENTIALS | STEERING | {"content-length"}
# What ``bytes.strip`` takes off a value that holds no CR, LF or NUL (``str.strip`` would
# take the NBSP and NEL of a Latin-1 value too).
_BLANK = " \t\x0b\x0c"


@dataclass(slots=True)
class Incoming(Masked):
    """The agent's request headers, checked: what may be forwarded, and what was taken out."""

    forward: list[tuple[str, str]] = field(metadata=SECRET)
    lease: str | None = field(metadata=SECRET)
    content_length: int | None
    chunked: bool
    amz_content_sha256: str | None


# Where a lease may come from, in order of precedence.
LEASE_HEADERS = ("x-keyfob-lease", "authorization", "x-api-key")


def _lease(name: str, value: str) -> str | None:
    if name != "authorization":
        return value.strip() or None
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip() or None
    if scheme == "AWS4-HMAC-SHA256":
        # SDKs that sign (boto3) carry the lease as their access key id.
        for part in rest.split(","):
            key, _, credential = part.strip().partition("=")
            if key == "Credential":
                return credential.split("/", 1)[0] or None
    return None


def read_request(raw: Iterable[tuple[bytes, bytes]], *, max_bytes: int, max_body: int) -> Incoming:
    """Check the agent's headers, find the lease, keep what may be forwarded."""
    raw = list(raw)
    count = len(raw)
    if not count:
        return Incoming([], None, None, False, None)
    # Checked, lowered and decoded all at once rather than header by header (a quarter
    # less time for an SDK's sixteen headers): names and values each joined by newlines,
    # which no name holds and a value must not.
    names, values = zip(*raw, strict=True)
    joined = b"\n".join(names)
    if joined.count(b"\n") != count - 1 or not _TOKENS.match(joined):
        raise InvalidRequest("a header name holds a character that is not allowed")
    text = b"\n".join(values)
    if text.count(b"\n") != count - 1 or b"\r" in text or b"\x00" in text:
        raise InvalidRequest("a header value holds CR, LF or NUL")
    lowered = joined.lower().decode("latin-1")
    keys = lowered.split("\n")
    texts = text.decode("latin-1").split("\n")
    lengths: set[str] = set()
    encodings: list[str] = []
    nominated: set[str] = set()
    if not _FRAMING.isdisjoint(keys):
        hosts = 0
        for key, value in zip(keys, texts, strict=True):
            if key not in _FRAMING:
                continue
            if key == "content-length":
                lengths.add(value.strip(_BLANK))
            elif key == "transfer-encoding":
                encodings.extend(v.strip(_BLANK).lower() for v in value.split(","))
            elif key == "connection":
                nominated.update(v.strip(_BLANK).lower() for v in value.split(","))
            elif key == "upgrade":
                raise InvalidRequest("protocol upgrades (WebSocket, h2c) are not proxied")
            else:
                hosts += 1
                if hosts > 1:
                    raise InvalidRequest("more than one Host header")
    if len(joined) + len(text) + 2 * count + 2 > max_bytes or count > MAX_HEADERS:
        raise HeadersTooLarge("the request headers are too large")
    length = _content_length(lengths, encodings)
    if length is not None and length > max_body:
        raise PayloadTooLarge("the request body is too large for the proxy")
    if "source" in lowered or not _FOREIGN_RESOURCE.isdisjoint(keys):
        for key in keys:
            if ("source" in key and _names_a_source(key)) or key in _FOREIGN_RESOURCE:
                raise ForbiddenHeader(
                    f"the header {_shown(key)} names another resource and is not proxied"
                )
    forward = [
        (key, value)
        for key, value in zip(keys, texts, strict=True)
        if key not in _REMOVED and key not in nominated
    ]
    # The first of each lease header counts; the last x-amz-content-sha256.
    found = {key: texts[keys.index(key)] for key in LEASE_HEADERS if key in keys}
    amz_sha = None
    if "x-amz-content-sha256" in keys:
        amz_sha = texts[len(keys) - 1 - keys[::-1].index("x-amz-content-sha256")].strip()
    offered = [c for key in LEASE_HEADERS if key in found and (c := _lease(key, found[key]))]
    # The first that has a lease's shape wins: an SDK's own placeholder key in another
    # header must not hide it.
    lease = next((c for c in offered if tokens.looks_like(c, tokens.LEASE)), None)
    if lease is None and offered:
        lease = offered[0]
    if length is not None:
        forward.append(("content-length", str(length)))
    return Incoming(forward, lease, length, bool(encodings), amz_sha)


# A header name the agent chose is echoed only if it reads as words: a name carrying a
# token or key (``x-amz-copy-source-kfl_…``) must not come back in the problem detail.
_WORDS = re.compile(r"[a-z]{1,24}(?:-[a-z]{1,24}){0,11}\Z")


def _shown(name: str) -> str:
    return name if _WORDS.match(name) else "(a copy or rename source)"


def _content_length(lengths: set[str], encodings: list[str]) -> int | None:
    if encodings:
        if lengths:
            raise InvalidRequest("Content-Length and Transfer-Encoding may not both be sent")
        if encodings != ["chunked"]:
            raise InvalidRequest("the only transfer coding accepted is chunked")
        return None
    if not lengths:
        return None
    if len(lengths) > 1:
        raise InvalidRequest("conflicting Content-Length headers")
    (text,) = lengths
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise InvalidRequest("Content-Length is not a number")
    return int(text)


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's headers without hop-by-hop ones (and those ``Connection`` names)."""
    pairs = [(name.lower(), value) for name, value in raw]
    nominated = {
        v.strip().lower().decode("latin-1")
        for name, value in pairs
        if name == b"connection"
        for v in value.split(b",")
    }
    return [
        (name, value)
        for name, value in pairs
        if name.decode("latin-1") not in _RESPONSE_DROP and name.decode("latin-1") not in nominated
    ]
