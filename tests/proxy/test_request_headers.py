"""``read_request`` reads the headers all at once; it must decide exactly as reading them
one by one does. The reference below is that header-by-header reading (keyfob's until
issue 12's last round), kept as the oracle."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from keyfob import tokens
from keyfob.errors import ForbiddenHeader, HeadersTooLarge, InvalidRequest, PayloadTooLarge
from keyfob.proxy import headers
from keyfob.proxy.headers import (
    CREDENTIALS,
    HOP_BY_HOP,
    LEASE_HEADERS,
    MAX_HEADERS,
    STEERING,
    read_request,
)

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")


def _reference(raw: list[tuple[bytes, bytes]], *, max_bytes: int, max_body: int) -> tuple:
    total = 0
    pairs: list[tuple[str, str]] = []
    lengths: set[bytes] = set()
    encodings: list[bytes] = []
    nominated: set[str] = set()
    hosts = 0
    for name, value in raw:
        total += len(name) + len(value) + 4
        if not _TOKEN.match(name):
            raise InvalidRequest("name")
        if _BAD_VALUE.search(value):
            raise InvalidRequest("value")
        lower = name.lower()
        if lower == b"content-length":
            lengths.add(value.strip())
        elif lower == b"transfer-encoding":
            encodings.extend(v.strip().lower() for v in value.split(b","))
        elif lower == b"connection":
            nominated.update(v.strip().lower().decode("latin-1") for v in value.split(b","))
        elif lower == b"upgrade":
            raise InvalidRequest("upgrade")
        elif lower == b"host":
            hosts += 1
            if hosts > 1:
                raise InvalidRequest("hosts")
        pairs.append((lower.decode("latin-1"), value.decode("latin-1")))
    if total > max_bytes or len(pairs) > MAX_HEADERS:
        raise HeadersTooLarge("size")
    length = None
    if encodings:
        if lengths or encodings != [b"chunked"]:
            raise InvalidRequest("framing")
    elif lengths:
        (text,) = lengths if len(lengths) == 1 else (b"x",)
        if not text.isdigit() or len(text) > 18:
            raise InvalidRequest("length")
        length = int(text)
    if length is not None and length > max_body:
        raise PayloadTooLarge("body")
    found: dict[str, str] = {}
    amz_sha = None
    removed = HOP_BY_HOP | CREDENTIALS | STEERING | nominated
    forward = []
    for key, text in pairs:
        if ("source" in key and headers._names_a_source(key)) or key in headers._FOREIGN_RESOURCE:
            raise ForbiddenHeader("source")
        if key in LEASE_HEADERS and key not in found:
            found[key] = text
        if key == "x-amz-content-sha256":
            amz_sha = text.strip()
        if key not in removed and key != "content-length":
            forward.append((key, text))
    offered = [
        c for key in LEASE_HEADERS if key in found and (c := headers._lease(key, found[key]))
    ]
    lease = next((c for c in offered if tokens.looks_like(c, tokens.LEASE)), None)
    if lease is None and offered:
        lease = offered[0]
    if length is not None:
        forward.append(("content-length", str(length)))
    return forward, lease, length, bool(encodings), amz_sha


_NAMES = [
    b"Host",
    b"content-length",
    b"Content-Length",
    b"transfer-encoding",
    b"Connection",
    b"upgrade",
    b"authorization",
    b"X-Api-Key",
    b"x-keyfob-lease",
    b"x-amz-content-sha256",
    b"x-amz-copy-source",
    b"x-ms-copy-source",
    b"x-amz-website-redirect-location",
    b"x-forwarded-host",
    b"keep-alive",
    b"x-custom",
    b"accept",
    b"bad name",
    b"bad:name",
    b"",
    b"caf\xe9",
]
_VALUES = [
    b"",
    b"7",
    b" 12 ",
    b"\xb2",
    b"1\xa0",
    b"0x10",
    b"99999999999999999999",
    b"chunked",
    b" Chunked ",
    b"chunked\xa0",
    b"chunked\x85",
    b"gzip, chunked",
    b"keep-alive, x-custom",
    b"close,\x0bAccept",
    b"Bearer kfl_" + b"a" * 43,
    b"Bearer sk-placeholder",
    b"AWS4-HMAC-SHA256 Credential=kfl_abc/2026/us-east-1/s3/aws4_request, Signature=0",
    b"kfl_" + b"b" * 43,
    b"caf\xe9",
    b"a\rb",
    b"a\nb",
    b"a\x00b",
    b"UNSIGNED-PAYLOAD ",
]
_HEADERS = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(_NAMES), st.binary(max_size=6)),
        st.one_of(st.sampled_from(_VALUES), st.binary(max_size=8)),
    ),
    max_size=12,
)


def _outcome(read, raw: list[tuple[bytes, bytes]], max_bytes: int) -> object:
    try:
        result = read(raw, max_bytes=max_bytes, max_body=100)
    except (InvalidRequest, HeadersTooLarge, PayloadTooLarge, ForbiddenHeader) as refused:
        return type(refused)
    if isinstance(result, tuple):
        return result
    return (
        result.forward,
        result.lease,
        result.content_length,
        result.chunked,
        result.amz_content_sha256,
    )


@settings(max_examples=500, deadline=None)
@given(raw=_HEADERS, max_bytes=st.one_of(st.integers(0, 120), st.just(65536)))
@example(raw=[(b"Connection", b"close, X-Custom"), (b"x-custom", b"1")], max_bytes=65536)
@example(raw=[(b"ab", b"cd"), (b"e", b"")], max_bytes=13)
@example(raw=[(b"x-custom", b"a\nb")], max_bytes=65536)
@example(raw=[(b"x-custom\nx-other", b"1")], max_bytes=65536)
@example(raw=[(b"X-Amz-Website-Redirect-Location", b"/elsewhere")], max_bytes=65536)
@example(raw=[(b"x-amz-content-sha256", b"1"), (b"X-Amz-Content-Sha256", b"2")], max_bytes=65536)
@example(raw=[(b"ab", b"cd"), (b"e", b"")], max_bytes=12)
def test_reading_all_at_once_decides_as_reading_one_by_one(
    raw: list[tuple[bytes, bytes]], max_bytes: int
) -> None:
    assert _outcome(read_request, raw, max_bytes) == _outcome(_reference, raw, max_bytes)


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        (b"\xb2", True),  # a superscript two is a digit to str, not to HTTP
        (b"1\xa0", True),  # NBSP is blank to str.strip, not to HTTP
        (b" 12\t", False),
    ],
)
def test_content_length_is_read_as_ascii(value: bytes, refused: bool) -> None:
    raw = [(b"content-length", value)]
    if refused:
        with pytest.raises(InvalidRequest):
            read_request(raw, max_bytes=4096, max_body=100)
    else:
        assert read_request(raw, max_bytes=4096, max_body=100).content_length == 12


def test_a_chunked_coding_with_a_latin1_blank_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        read_request([(b"transfer-encoding", b"chunked\x85")], max_bytes=4096, max_body=100)
