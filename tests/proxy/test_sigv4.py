"""SigV4 signing: byte-identical to botocore's signer, and accepted by botocore as the endpoint.

Every signature a test takes from ``sign`` (through ``ours``) is checked byte for byte
against botocore signing the same request, so no test passes with nothing signed.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl, quote, quote_plus

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from keyfob.profiles import Profile
from keyfob.proxy import headers, inject
from keyfob.proxy.inject import Upstream
from keyfob.proxy.sigv4 import STREAMING_UNSIGNED_PAYLOAD_TRAILER, UNSIGNED_PAYLOAD, sign
from keyfob.secret import Secret
from tests.support.aws import SignatureRejected, verify_sigv4

NOW = datetime(2026, 3, 14, 15, 9, 26, 535000, tzinfo=UTC)
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLE//session+token/Q=="
S3_HOST = "examplebucket.s3.us-east-1.amazonaws.com"
API_HOST = "abc123.execute-api.eu-west-1.amazonaws.com"
ADDED = ("authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token")
# Headers a signer sets itself (botocore_signs gives botocore its own, from the request).
OWN = frozenset({"host", *ADDED})
# Headers every signature must cover when the request has them.
MUST_SIGN = frozenset({"content-type", "content-md5"})
PROPERTY = settings(deadline=None, max_examples=150)


def payload_hash_of(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def make_request(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``sign`` (an S3 GET by default), with ``overrides`` applied."""
    request: dict[str, Any] = {
        "method": "GET",
        "host": S3_HOST,
        "path": "/",
        "query": "",
        "headers": [],
        "payload_hash": payload_hash_of(b""),
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
        "session_token": None,
        "region": "us-east-1",
        "service": "s3",
        "now": NOW,
    }
    request.update(overrides)
    return request


def botocore_signs(
    request: dict[str, Any], *, body: bytes = b"", query_as: str = "url"
) -> dict[str, str]:
    """The headers botocore's own signer adds to ``request`` at its ``now``, by lower-case name.

    ``query_as="url"`` leaves the query in the URL, where botocore sorts it without
    re-encoding; ``"params"`` hands botocore the form-decoded pairs, which it encodes
    itself, as an endpoint canonicalises what it received.
    """
    url = f"https://{request['host']}{request['path'] or '/'}"
    params: list[tuple[str, str]] = []
    if query_as == "url" and request["query"]:
        url += "?" + request["query"]
    elif query_as == "params":
        params = parse_qsl(request["query"], keep_blank_values=True)
    signed = AWSRequest(method=request["method"], url=url, data=body, params=params)
    signed.headers["Host"] = request["host"]
    for name, value in request["headers"]:
        signed.headers[name] = value
    credentials = Credentials(KEY_ID, request["secret_access_key"], request["session_token"])
    signer: SigV4Auth
    if request["service"] == "s3":
        if request["payload_hash"] == UNSIGNED_PAYLOAD:
            signed.context["client_config"] = Config(s3={"payload_signing_enabled": False})
        elif request["payload_hash"] == STREAMING_UNSIGNED_PAYLOAD_TRAILER:
            trailer = {"in": "trailer", "name": "x-amz-checksum-crc32"}
            signed.context["checksum"] = {"request_algorithm": trailer}
        signer = S3SigV4Auth(credentials, "s3", request["region"])
    else:
        signed.headers["X-Amz-Content-SHA256"] = request["payload_hash"]
        signer = SigV4Auth(credentials, request["service"], request["region"])
    moment = request["now"].astimezone(UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=moment):
        signer.add_auth(signed)
    return {k.lower(): v for k, v in signed.headers.items() if k.lower() in ADDED}


def signed_names(authorization: str) -> frozenset[str]:
    match = re.search(r"SignedHeaders=([^,\s]+),", authorization)
    assert match is not None, "no SignedHeaders in the Authorization header"
    return frozenset(match[1].split(";"))


def ours(request: dict[str, Any], *, body: bytes = b"") -> dict[str, str]:
    """What ``sign`` adds, checked byte for byte against botocore signing the same request.

    botocore is given the request's headers that keyfob signed (an endpoint checks only
    those) plus MUST_SIGN; a request keyfob did not sign has no Authorization and fails.
    """
    added = sign(**request)
    names = [name for name, _ in added]
    assert len(names) == len(set(names)), names
    result = dict(added)
    covered = signed_names(result["authorization"]) | MUST_SIGN
    kept = [(n, v) for n, v in request["headers"] if n.lower() in covered - OWN]
    assert result == botocore_signs({**request, "headers": kept}, body=body, query_as="params")
    return result


# -- known answers: AWS's S3 documentation examples, independent of botocore ----------------


@pytest.mark.parametrize(
    ("query", "signature"),
    [
        ("lifecycle", "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        (
            "max-keys=2&prefix=J",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
    ],
)
def test_matches_the_aws_documentation_examples(query: str, signature: str):
    request = make_request(
        host="examplebucket.s3.amazonaws.com", query=query, now=datetime(2013, 5, 24, tzinfo=UTC)
    )
    assert ours(request) == {
        "authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1"
        "/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
        f"Signature={signature}",
        "x-amz-date": "20130524T000000Z",
        "x-amz-content-sha256": payload_hash_of(b""),
    }


# -- byte-identical to botocore ----------------------------------------------------------------

S3_PATHS = [
    "",
    "/",
    "/bucket/key.txt",
    "/bucket/my%20key.txt",
    "/bucket/%E2%9C%93%20done.txt",
    "/bucket/caf\u00e9/\u2713.txt",
    "/bucket/a%2Fb/c+d",
    "/bucket/./a/../b//c",
    "/bucket/~user/(1)!*'",
]
API_PATHS = [
    "",
    "/",
    "/prod/items/my%20item",
    "/prod/a/./b/../c//d/",
    "/prod/../../x",
    "/prod/%E2%9C%93/caf\u00e9",
    "/prod/a%2Fb/~x/(1)",
]
# Queries as an SDK sends them, already in canonical encoding.
CANONICAL_QUERIES = [
    "",
    "uploads",
    "list-type=2&prefix=a%2Fb",
    "b=2&a=1&a=0&a=",
    "delete&x-id=DeleteObjects",
    "prefix=my%20dir%2B1&marker=%E2%9C%93",
    "Action=GetCallerIdentity&Version=2011-06-15",
    "versionId&uploadId=x.y_z~",
]
HEADERS = [
    ("Content-Type", "text/plain;   charset=utf-8 "),
    ("X-Amz-Meta-Note", "  two   spaces\tand a tab "),
    ("x-amz-meta-note", "second value"),
    ("Content-MD5", "1B2M2Y8AsgTpgAZPpe/9Ag=="),
    ("x-amz-checksum-crc32", "AAAAAA=="),
]


@pytest.mark.parametrize("token", [None, TOKEN])
@pytest.mark.parametrize("query", CANONICAL_QUERIES)
@pytest.mark.parametrize(
    ("service", "host", "path"),
    [("s3", S3_HOST, p) for p in S3_PATHS]
    + [("execute-api", API_HOST, p) for p in API_PATHS]
    + [("sts", "sts.amazonaws.com", "/")],
)
def test_matches_botocore(service: str, host: str, path: str, query: str, token: str | None):
    request = make_request(
        service=service,
        host=host,
        path=path,
        query=query,
        headers=HEADERS,
        session_token=token,
        region="eu-west-1",
    )
    expected = botocore_signs(request)
    assert ours(request) == expected
    assert botocore_signs(request, query_as="params") == expected


@pytest.mark.parametrize(
    "query",
    [
        "prefix=a+b",  # "+" is a space to the endpoint: signed as %20
        "prefix=a%2bb",  # lower-case escape: signed as %2B
        "prefix=a/b&delimiter=/",  # "/" left raw in a value: signed as %2F
        "q=%7Euser&x=caf\u00e9&y=(1)!*'",
        "a&&b=",
        "=empty-name",
    ],
)
@pytest.mark.parametrize("service", ["s3", "sts"])
def test_loosely_encoded_query_is_signed_as_the_endpoint_reads_it(query: str, service: str):
    request = make_request(service=service, query=query)
    assert ours(request) == botocore_signs(request, query_as="params")


def test_a_plus_in_the_query_is_a_space():
    plus = ours(make_request(query="prefix=a+b"))
    assert plus == ours(make_request(query="prefix=a%20b"))
    assert plus != ours(make_request(query="prefix=a%2Bb"))


@pytest.mark.parametrize("service", ["s3", "sts"])
@pytest.mark.parametrize("body", [b"", b"hello", bytes(range(256))])
@pytest.mark.parametrize("method", ["PUT", "POST", "delete"])
def test_body_hash_matches_botocore(method: str, body: bytes, service: str):
    request = make_request(
        method=method, service=service, payload_hash=payload_hash_of(body), headers=HEADERS
    )
    assert ours(request, body=body) == botocore_signs(request, body=body)


@pytest.mark.parametrize("service", ["s3", "sts"])
@pytest.mark.parametrize("marker", [UNSIGNED_PAYLOAD, STREAMING_UNSIGNED_PAYLOAD_TRAILER])
def test_unsigned_payload_markers_match_botocore(marker: str, service: str):
    request = make_request(method="PUT", service=service, payload_hash=marker, headers=HEADERS)
    added = ours(request)
    assert added["x-amz-content-sha256"] == marker
    assert added == botocore_signs(request, body=b"not hashed")


def test_host_with_port_is_signed_as_given():
    request = make_request(host="127.0.0.1:9000", path="/bucket/key")
    assert ours(request) == botocore_signs(request)
    assert ours(request) != ours(make_request(host="127.0.0.1", path="/bucket/key"))


# -- property: random paths, queries and header values --------------------------------------

# Every ASCII punctuation mark (reserved, sub-delimiters, "%", "+"), a space, some non-ASCII.
ALPHABET = string.ascii_letters + string.digits + string.punctuation + " \u00e9\u2713\u65e5\u00a0"
TEXT = st.text(alphabet=st.sampled_from(ALPHABET), max_size=10)
PATH_ENCODERS: list[Callable[[str], str]] = [
    lambda s: quote(s, safe=""),
    lambda s: quote(s, safe="~"),
    lambda s: quote(s, safe="!$&'()*+,;=:@~"),  # sub-delimiters are legal raw in a path
]
QUERY_ENCODERS: dict[str, Callable[[str], str]] = {
    "canonical": lambda s: quote(s, safe="-_.~"),
    "form": quote_plus,
    "loose": lambda s: quote(s, safe="/:@!$'()*,;?"),
    "lower-hex": lambda s: re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), quote(s, safe="")),
}


@st.composite
def paths(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.one_of(TEXT, st.sampled_from([".", "..", ""])), max_size=5))
    encode = draw(st.sampled_from(PATH_ENCODERS))
    return "/" + "/".join(s if s in (".", "..") else encode(s) for s in segments)


@st.composite
def queries(draw: st.DrawFn) -> tuple[str, bool]:
    """A raw query string and whether it is in canonical encoding throughout."""
    style = draw(st.sampled_from(sorted(QUERY_ENCODERS)))
    encode = QUERY_ENCODERS[style]
    pairs = draw(st.lists(st.tuples(TEXT, st.none() | TEXT), max_size=5))
    parts = [encode(n) if v is None else f"{encode(n)}={encode(v)}" for n, v in pairs]
    # botocore keeps an empty "&&" segment as "="; an SDK never sends one.
    return "&".join(parts), style == "canonical" and all(parts)


header_names = st.one_of(
    st.sampled_from(["Content-Type", "content-md5", "X-Amz-Acl"]),
    st.from_regex(r"[xX]-[aA][mM][zZ]-[mM][eE][tT][aA]-[a-zA-Z0-9]{1,6}", fullmatch=True),
)
header_values = st.text(alphabet=st.sampled_from([*string.printable[:95], "\t"]), max_size=20)


@PROPERTY
@given(
    service=st.sampled_from(["s3", "execute-api", "sts"]),
    method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD"]),
    path=paths(),
    query=queries(),
    headers=st.lists(st.tuples(header_names, header_values), max_size=6),
    token=st.none() | st.just(TOKEN),
    body=st.binary(max_size=64),
)
def test_property_matches_botocore(
    service: str,
    method: str,
    path: str,
    query: tuple[str, bool],
    headers: list[tuple[str, str]],
    token: str | None,
    body: bytes,
):
    raw_query, canonical = query
    request = make_request(
        service=service,
        method=method,
        path=path,
        query=raw_query,
        headers=headers,
        session_token=token,
        payload_hash=payload_hash_of(body),
    )
    added = ours(request, body=body)
    assert added == botocore_signs(request, body=body, query_as="params")
    if canonical:
        assert added == botocore_signs(request, body=body)
    url = f"https://{S3_HOST}{path}?{raw_query}"
    verify_sigv4(
        method,
        url,
        [*headers, ("Host", S3_HOST), *added.items()],
        body,
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        session_token=token,
        region="us-east-1",
        service=service,
    )
    assert SECRET not in repr(added)


# -- what the caller sends cannot steer the signature ------------------------------------------


def test_agent_supplied_auth_headers_are_ignored():
    clean = make_request(session_token=TOKEN, headers=HEADERS)
    planted = make_request(
        session_token=TOKEN,
        headers=[
            ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAEVIL/20000101/x/s3/aws4_request"),
            ("X-Amz-Date", "19990101T000000Z"),
            ("x-amz-security-token", "agent-token"),
            ("X-AMZ-CONTENT-SHA256", "0" * 64),
            ("Host", "evil.example"),
            *HEADERS,
        ],
    )
    assert ours(planted) == ours(clean)
    assert ours(planted)["x-amz-security-token"] == TOKEN


def test_agent_token_is_ignored_without_a_session_token():
    planted = make_request(headers=[("X-Amz-Security-Token", "agent-token")])
    added = ours(planted)
    assert added == ours(make_request())
    assert "x-amz-security-token" not in added
    assert "x-amz-security-token" not in added["authorization"]


def test_headers_outside_the_signed_set_do_not_change_the_signature():
    noisy = make_request(
        headers=[("Accept", "*/*"), ("User-Agent", "agent/1.0"), ("Content-Length", "0")]
    )
    assert ours(noisy) == ours(make_request())


def test_signed_headers_are_listed():
    authorization = ours(make_request(session_token=TOKEN, headers=HEADERS))["authorization"]
    assert (
        "SignedHeaders=content-md5;content-type;host;x-amz-checksum-crc32;x-amz-content-sha256;"
        "x-amz-date;x-amz-meta-note;x-amz-security-token," in authorization
    )


def test_time_is_converted_to_utc_and_truncated_to_seconds():
    elsewhere = NOW.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert ours(make_request(now=elsewhere)) == ours(make_request())
    assert ours(make_request())["x-amz-date"] == "20260314T150926Z"


# -- a signature at all, and the right one -------------------------------------------------------


@pytest.mark.parametrize("service", ["s3", "sts"])
def test_a_request_is_signed_and_the_signature_depends_on_the_secret(service: str):
    request = make_request(method="PUT", service=service, headers=HEADERS, session_token=TOKEN)

    added = ours(request)
    other = ours({**request, "secret_access_key": SECRET[::-1]})

    scope = f"{KEY_ID}/20260314/us-east-1/{service}/aws4_request"
    assert added["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={scope}, ")
    assert signed_names(added["authorization"]) >= {"host", "content-type", *ADDED[1:]}
    unsigned, _, signature = added["authorization"].partition("Signature=")
    assert re.fullmatch(r"[0-9a-f]{64}", signature)
    assert other["authorization"] != added["authorization"]
    assert other["authorization"].startswith(unsigned)


AWS_PROFILE = Profile.model_validate(
    {
        "base_url": f"https://{S3_HOST}",
        "hosts": [S3_HOST],
        "inject": {
            "kind": "aws_sigv4",
            "region": "us-east-1",
            "service": "s3",
            "session_token": "AWS_SESSION_TOKEN",
        },
    }
)
# What boto3 sends to keyfob: signed with the lease as its access key id, which keyfob drops.
AGENT_HEADERS = [
    ("Authorization", "AWS4-HMAC-SHA256 Credential=kfl_lease/20260314/us-east-1/s3/aws4_request"),
    ("X-Amz-Date", "20260314T150000Z"),
    ("X-Amz-Content-SHA256", payload_hash_of(b"hello, world")),
    ("Content-Type", "text/plain"),
    ("Content-Length", "12"),
    ("x-amz-meta-owner", " agent  7 "),
    ("User-Agent", "Boto3/1.0"),
]


def proxy_sends(body: bytes, secret: str) -> Upstream:
    """The upstream request keyfob's proxy builds for the agent's PUT (as its _forward does)."""
    raw = [(n.encode(), v.encode()) for n, v in AGENT_HEADERS]
    incoming = headers.read_request(raw, max_bytes=16384, max_body=1 << 20)
    upstream = inject.target(AWS_PROFILE, "PUT", "/bucket/my%20key.txt", "x-id=PutObject")
    own = inject.own_headers(AWS_PROFILE)
    forward = [(n, v) for n, v in incoming.forward if n not in own]
    upstream.headers = [("host", upstream.authority), *forward]
    values = {
        "AWS_ACCESS_KEY_ID": Secret(KEY_ID),
        "AWS_SECRET_ACCESS_KEY": Secret(secret),
        "AWS_SESSION_TOKEN": Secret(TOKEN),
    }
    inject.inject(upstream, AWS_PROFILE, values, body_hash=payload_hash_of(body), now=NOW)
    return upstream


def botocore_authorization(upstream: Upstream, body: bytes, secret: str) -> str:
    """botocore's Authorization for the request as the proxy sends it, at NOW."""
    sent = [v for n, v in upstream.headers if n.lower() == "authorization"]
    covered = (signed_names(sent[0]) if sent else frozenset()) | MUST_SIGN | {"host"}
    request = AWSRequest(method=upstream.method, url=str(upstream.url()), data=body)
    for name, value in upstream.headers:
        if name.lower() in covered:
            request.headers[name] = value
    signer = S3SigV4Auth(Credentials(KEY_ID, secret, TOKEN), "s3", "us-east-1")
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        signer.add_auth(request)
    return str(request.headers["Authorization"])


def test_the_request_the_proxy_sends_is_signed_as_botocore_signs_it():
    body = b"hello, world"

    upstream = proxy_sends(body, SECRET)

    sent = [v for n, v in upstream.headers if n.lower() == "authorization"]
    assert len(sent) == 1, "the proxy sent no signature (or the agent's as well)"
    assert sent[0] == botocore_authorization(upstream, body, SECRET)
    assert "kfl_lease" not in str(upstream.headers)
    other = proxy_sends(body, SECRET[::-1])
    assert botocore_authorization(other, body, SECRET[::-1]) in dict(other.headers).values()
    assert dict(other.headers)["authorization"] != sent[0]


# -- secrets stay secret -----------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, TOKEN])
@pytest.mark.parametrize("service", ["s3", "sts"])
def test_the_secret_key_is_in_no_returned_header(service: str, token: str | None):
    added = ours(make_request(service=service, session_token=token, headers=HEADERS))
    for name, value in added.items():
        assert SECRET not in value, name
        assert SECRET.split("/")[0] not in value, name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"now": NOW.replace(tzinfo=None)}, "timezone-aware"),
        ({"payload_hash": "abc"}, "payload_hash"),
        ({"path": "bucket/key"}, "path"),
        ({"host": " "}, "host"),
        ({"region": "us-east-1/x"}, "region"),
        ({"access_key_id": "AKIA\nX-Evil: 1"}, "access_key_id"),
        ({"secret_access_key": SECRET + "\u2713"}, "secret_access_key"),
        ({"session_token": TOKEN + "\r\nX-Evil: 1"}, "session_token"),
    ],
)
def test_bad_input_is_refused_without_echoing_a_secret(overrides: dict[str, Any], message: str):
    request = make_request(**{"session_token": TOKEN, **overrides})
    with pytest.raises(ValueError, match=message) as caught:
        sign(**request)
    shown = str(caught.value) + repr(caught.value.args)
    assert SECRET not in shown
    assert TOKEN not in shown


# -- the verifier a fake upstream uses ------------------------------------------------------


def signed_put(**overrides: Any) -> tuple[str, list[tuple[str, str]], bytes, dict[str, Any]]:
    """A signed S3 PUT as it arrives upstream: url, headers (odd case), body, credentials."""
    body = overrides.pop("body", b"hello, world")
    request = make_request(
        method="PUT",
        path="/bucket/my%20key.txt",
        query="x-id=PutObject&tagging",
        headers=[("CONTENT-TYPE", "text/plain"), ("x-AMZ-meta-owner", " agent  7 ")],
        payload_hash=payload_hash_of(body),
        session_token=TOKEN,
        **overrides,
    )
    arrived = [("HOST", S3_HOST), ("Accept", "*/*"), *request["headers"]]
    arrived += [(name.title(), value) for name, value in sign(**request)]
    url = f"https://{S3_HOST}{request['path']}?{request['query']}"
    credentials = {
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
        "session_token": TOKEN,
        "region": "us-east-1",
        "service": "s3",
    }
    return url, arrived, body, credentials


def test_verifier_accepts_a_signed_request():
    url, headers, body, credentials = signed_put()
    verify_sigv4("PUT", url, headers, body, **credentials)
    verify_sigv4("PUT", url, dict(headers), body, **credentials)
    verify_sigv4("PUT", url, [*headers, ("X-Unsigned", "anything")], body, **credentials)
    shouted = [(name.upper(), value) for name, value in headers]
    verify_sigv4("PUT", url.removeprefix(f"https://{S3_HOST}"), shouted, body, **credentials)


def test_verifier_accepts_a_non_s3_request():
    request = make_request(
        service="execute-api", host=API_HOST, path="/prod/a/../my%20item", query="b=2&a=1"
    )
    added = sign(**request)
    url = f"https://{API_HOST}{request['path']}?{request['query']}"
    verify_sigv4(
        "GET",
        url,
        [("host", API_HOST), *added],
        b"",
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        region="us-east-1",
        service="execute-api",
    )


def replace_header(
    headers: Sequence[tuple[str, str]], name: str, value: str
) -> list[tuple[str, str]]:
    return [(n, value if n.lower() == name else v) for n, v in headers]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda u, h, b, c: (u.replace("my%20key", "other"), h, b, c), "signature mismatch"),
        (lambda u, h, b, c: (u.replace("tagging", "acl"), h, b, c), "signature mismatch"),
        (
            lambda u, h, b, c: (u, replace_header(h, "x-amz-meta-owner", "root"), b, c),
            "signature mismatch",
        ),
        (
            lambda u, h, b, c: (u, replace_header(h, "content-type", "text/html"), b, c),
            "signature mismatch",
        ),
        (lambda u, h, b, c: (u, h, b + b"!", c), "does not match the body"),
        (
            lambda u, h, b, c: (u, h, b, {**c, "secret_access_key": SECRET[::-1]}),
            "signature mismatch",
        ),
        (lambda u, h, b, c: (u, h, b, {**c, "session_token": "other"}), "session token"),
        (lambda u, h, b, c: (u, h, b, {**c, "session_token": None}), "expecting none"),
        (lambda u, h, b, c: (u, h, b, {**c, "access_key_id": "AKIAOTHER"}), "access key"),
        (lambda u, h, b, c: (u, h, b, {**c, "region": "eu-west-1"}), "scope"),
        (
            lambda u, h, b, c: (u, replace_header(h, "x-amz-date", "20260314T150927Z"), b, c),
            "signature mismatch",
        ),
        (
            lambda u, h, b, c: (u, [x for x in h if x[0].lower() != "x-amz-meta-owner"], b, c),
            "not in the request",
        ),
        (
            lambda u, h, b, c: (u, [x for x in h if x[0].lower() != "authorization"], b, c),
            "authorization",
        ),
    ],
)
def test_verifier_rejects_a_tampered_request(tamper: Any, reason: str):
    url, headers, body, credentials = tamper(*signed_put())
    with pytest.raises(SignatureRejected, match=reason) as caught:
        verify_sigv4("PUT", url, headers, body, **credentials)
    assert SECRET not in str(caught.value)
    assert TOKEN not in str(caught.value)
