"""Check a SigV4-signed request the way an AWS endpoint would, with botocore doing the maths."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from botocore.auth import SIGNED_HEADERS_BLACKLIST, S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_UNSIGNED = ("UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")


class SignatureRejected(AssertionError):
    """AWS would answer 403; the message says why and holds no secret key or session token."""


def verify_sigv4(
    method: str,
    url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    *,
    access_key_id: str,
    secret_access_key: str,
    session_token: str | None = None,
    region: str,
    service: str,
) -> None:
    """Raise ``SignatureRejected`` unless the request carries a valid SigV4 header signature.

    Returns None when an endpoint holding these credentials would accept the request;
    ``SignatureRejected`` is an ``AssertionError``, so a bare call fails a test with the
    reason and a fake upstream can turn it into a 403. ``url`` may be absolute or just
    path and query; header names may be in any case (pass repeated headers as pairs, e.g.
    httpx's ``multi_items()``). Only the headers named in SignedHeaders are given to
    botocore, with the X-Amz-Date the request carries as the signing time. The query is
    form-decoded (``+`` is a space) and re-encoded by botocore, as the endpoint does; a
    query that is not UTF-8 once decoded cannot be checked this way.
    """
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    received: dict[str, list[str]] = {}
    for name, value in pairs:
        received.setdefault(name.lower(), []).append(value)

    match = _AUTHORIZATION.fullmatch(_one(received, "authorization").strip())
    if match is None:
        raise SignatureRejected("authorization header is not AWS4-HMAC-SHA256 header auth")
    credential = match["credential"].rsplit("/", 4)
    if len(credential) != 5:
        raise SignatureRejected("credential is not key/date/region/service/aws4_request")
    key_id, date, scope_region, scope_service, terminator = credential
    if key_id != access_key_id:
        raise SignatureRejected(f"credential names access key {key_id!r}, not ours")
    if (scope_region, scope_service, terminator) != (region, service, "aws4_request"):
        raise SignatureRejected(f"credential scope {match['credential']!r} is for elsewhere")
    amz_date = _one(received, "x-amz-date")
    if not _AMZ_DATE.fullmatch(amz_date) or amz_date[:8] != date:
        raise SignatureRejected(f"x-amz-date {amz_date!r} does not fit the scope date {date!r}")

    signed = match["signed"].split(";")
    if signed != sorted(set(signed)) or any(name != name.lower() for name in signed):
        raise SignatureRejected(f"SignedHeaders {match['signed']!r} is not sorted lower-case")
    required = {"host", "x-amz-date"} | ({"x-amz-content-sha256"} if service == "s3" else set())
    if session_token is not None:
        required.add("x-amz-security-token")
    if missing := sorted(required - set(signed)):
        raise SignatureRejected(f"SignedHeaders lacks {missing}")
    if unsignable := sorted(set(signed) & set(SIGNED_HEADERS_BLACKLIST)):
        raise SignatureRejected(f"botocore never signs {unsignable}; cannot verify")
    if absent := sorted(set(signed) - set(received) - {"host"}):
        raise SignatureRejected(f"signed headers {absent} are not in the request")
    if session_token is None and "x-amz-security-token" in received:
        raise SignatureRejected("x-amz-security-token sent to an endpoint expecting none")
    if session_token is not None and not hmac.compare_digest(
        _one(received, "x-amz-security-token"), session_token
    ):
        raise SignatureRejected("x-amz-security-token is not the session token")

    if "x-amz-content-sha256" in received:
        claimed = _one(received, "x-amz-content-sha256")
        if _HEX_SHA256.fullmatch(claimed):
            if claimed != hashlib.sha256(body).hexdigest():
                raise SignatureRejected("x-amz-content-sha256 does not match the body")
        elif claimed not in _UNSIGNED:
            raise SignatureRejected(f"x-amz-content-sha256 {claimed!r} is not understood")

    parts = urlsplit(url)
    request = AWSRequest(
        method=method.upper(),
        url=urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", "")),
        data=body,
        params=parse_qsl(parts.query, keep_blank_values=True),
    )
    for name, value in pairs:
        if name.lower() in signed:
            request.headers[name] = value
    if "host" not in received:
        request.headers["host"] = parts.netloc
    request.context["timestamp"] = amz_date
    signer_class = S3SigV4Auth if service == "s3" else SigV4Auth
    signer = signer_class(
        Credentials(access_key_id, secret_access_key, session_token), service, region
    )
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, match["signature"]):
        if session_token:
            canonical = canonical.replace(session_token, "<session-token>")
        raise SignatureRejected(
            f"signature mismatch; the canonical request botocore signed was:\n{canonical}"
        )


def _one(received: Mapping[str, list[str]], name: str) -> str:
    values = received.get(name, [])
    if len(values) != 1:
        raise SignatureRejected(f"expected exactly one {name} header, got {len(values)}")
    return values[0]
