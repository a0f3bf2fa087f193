"""AWS Signature Version 4: the headers that sign one upstream request (header form only).

Pure and stdlib-only. Verified against botocore 1.44: ``tests/proxy/test_sigv4.py``
checks that the Authorization header is byte-identical to ``SigV4Auth`` / ``S3SigV4Auth``
for the same request and time, and ``tests/support/aws.py`` re-checks signatures the
way an endpoint would, with botocore. The secret key and session token never appear
in an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final
from urllib.parse import quote, unquote_to_bytes

ALGORITHM: Final = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
STREAMING_UNSIGNED_PAYLOAD_TRAILER: Final = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
_MARKERS: Final = (UNSIGNED_PAYLOAD, STREAMING_UNSIGNED_PAYLOAD_TRAILER)

# Set by sign() itself: an agent's copy must never reach the canonical request.
_OWN: Final = frozenset(
    {"authorization", "host", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"}
)
_ALSO_SIGNED: Final = frozenset({"content-type", "content-md5"})
# The x-amz-* headers keyfob signs, and so the only ones it forwards: what S3, DynamoDB and
# STS clients (botocore's service models) send on ordinary calls. Any other x-amz-* header
# is dropped (S3 refuses unsigned ones anyway); those naming a second resource
# (x-amz-copy-source…) never get here (``headers.read_request`` refuses them).
SIGNED_AMZ: Final = frozenset(
    {
        "x-amz-acl",
        "x-amz-target",
        "x-amz-api-version",
        "x-amz-storage-class",
        "x-amz-tagging",
        "x-amz-tagging-directive",
        "x-amz-metadata-directive",
        "x-amz-sdk-checksum-algorithm",
        "x-amz-decoded-content-length",
        "x-amz-trailer",
        "x-amz-expected-bucket-owner",
        "x-amz-request-payer",
        "x-amz-mfa",
        "x-amz-bypass-governance-retention",
        "x-amz-bucket-object-lock-enabled",
        "x-amz-bucket-object-lock-token",
        "x-amz-object-ownership",
        "x-amz-object-attributes",
        "x-amz-optional-object-attributes",
        "x-amz-max-parts",
        "x-amz-part-number-marker",
        "x-amz-client-token",
        "x-amz-write-offset-bytes",
        "x-amz-confirm-remove-self-bucket-access",
        "x-amz-skip-destination-validation",
        "x-amz-if-match-size",
        "x-amz-if-match-last-modified-time",
        "x-amz-if-match-initiated-time",
        "x-amz-mp-object-size",
        "x-amz-object-size",
        "x-amz-user-agent",
    }
)
SIGNED_AMZ_PREFIXES: Final = (
    "x-amz-meta-",
    "x-amz-checksum-",
    "x-amz-server-side-encryption",
    "x-amz-grant-",
    "x-amz-object-lock-",
)
_HEX_SHA256: Final = re.compile(r"[0-9a-f]{64}")
_SCOPE_PART: Final = re.compile(r"[A-Za-z0-9_.-]+")
# Credentials end up in a header line: printable ASCII only, so nothing can split it.
_PRINTABLE: Final = re.compile(r"[\x21-\x7e]+")


def sign(
    *,
    method: str,
    host: str,
    path: str,
    query: str,
    headers: Sequence[tuple[str, str]],
    payload_hash: str,
    access_key_id: str,
    secret_access_key: str,
    session_token: str | None,
    region: str,
    service: str,
    now: datetime,
) -> list[tuple[str, str]]:
    """Headers to add to the request: authorization, x-amz-date, x-amz-content-sha256 and,
    with a session token, x-amz-security-token."""
    # Messages name the argument, never its value.
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    if not host.strip():
        raise ValueError("host must not be empty")
    if path and not path.startswith("/"):
        raise ValueError("path must be empty or start with '/'")
    if payload_hash not in _MARKERS and not _HEX_SHA256.fullmatch(payload_hash):
        raise ValueError("payload_hash must be a lower-case hex sha256 or an unsigned marker")
    if not _PRINTABLE.fullmatch(access_key_id) or any(c in access_key_id for c in "/,="):
        raise ValueError("access_key_id is not a valid access key id")
    if not _PRINTABLE.fullmatch(secret_access_key):
        raise ValueError("secret_access_key must be printable ASCII")
    if session_token and not _PRINTABLE.fullmatch(session_token):
        raise ValueError("session_token must be printable ASCII")
    if not _SCOPE_PART.fullmatch(region) or not _SCOPE_PART.fullmatch(service):
        raise ValueError("region and service must be letters, digits, '-', '_' or '.'")

    amz_date = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    added = [("x-amz-date", amz_date), ("x-amz-content-sha256", payload_hash)]
    if session_token:
        added.append(("x-amz-security-token", session_token))

    chosen = [(name.lower(), value) for name, value in headers if _is_signed(name.lower())]
    canonical_headers, signed_headers = _canonical_headers([("host", host), *added, *chosen])
    canonical_request = "\n".join(
        [
            method.upper(),
            _canonical_uri(path, service),
            _canonical_query(query),
            canonical_headers,
            signed_headers,
            payload_hash,
        ]
    )
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = f"AWS4{secret_access_key}".encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"{ALGORITHM} Credential={access_key_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return [("authorization", authorization), *added]


def signed_amz(name: str) -> bool:
    """Whether keyfob signs (and forwards) the agent's ``x-amz-*`` header ``name`` (lower case)."""
    return name in SIGNED_AMZ or name.startswith(SIGNED_AMZ_PREFIXES)


def _is_signed(name: str) -> bool:
    return name in _ALSO_SIGNED or (name not in _OWN and signed_amz(name))


def _canonical_headers(pairs: list[tuple[str, str]]) -> tuple[str, str]:
    """The canonical header block (each line ending in a newline) and the signed-header list."""
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        # str.split() with no argument, as botocore does: trims and collapses every
        # whitespace run, not just spaces.
        values.setdefault(name, []).append(" ".join(value.split()))
    names = sorted(values)
    block = "".join(f"{name}:{','.join(values[name])}\n" for name in names)
    return block, ";".join(names)


def _canonical_uri(path: str, service: str) -> str:
    if service == "s3":
        # S3 signs the path as sent: no dot-segment removal, no second encoding.
        return path or "/"
    # Everyone else: remove dot segments and empty segments, then encode once more, so
    # "%20" is signed as "%2520" (botocore's SigV4Auth, and what the services expect).
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    trailing = "/" if segments and path.endswith("/") else ""
    return quote("/" + "/".join(segments) + trailing, safe="/~")


def _canonical_query(query: str) -> str:
    pairs = []
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((_reencode(name), _reencode(value)))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _reencode(text: str) -> str:
    # The endpoint form-decodes the query ("+" is a space, as in parse_qsl) and
    # re-encodes what it decoded; decoding to bytes keeps non-UTF-8 escapes intact.
    return quote(unquote_to_bytes(text.replace("+", " ")), safe="-_.~")
