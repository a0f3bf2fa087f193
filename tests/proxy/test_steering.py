"""Nothing the agent sends can change the method, host or path its grant was checked against.

Against a live keyfob server and the echo upstream: method-override, URL-rewrite and
forwarding headers never reach the upstream (for every injection kind); under SigV4 only
a known list of ``x-amz-*`` headers is forwarded, each one signed, and headers that name
a second object (``x-amz-copy-source``…) are refused before the lease is used. Each test
fails on the commit before issue 10 item 4 (there every one of these headers was
forwarded, and every ``x-amz-*`` header signed).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import httpx
import pytest
from botocore.exceptions import ClientError

from keyfob.errors import ForbiddenHeader
from keyfob.proxy import headers as proxy_headers
from keyfob.proxy import sigv4
from tests.conftest import CANARY
from tests.proxy.factories import BEARER, Proxied, audit, local_profile, proxied, unique
from tests.support import loopback
from tests.support.http import assert_problem
from tests.support.upstream import AwsCredentials, FakeUpstream, Seen

ACCESS_KEY = "AKIASTEERING7F3A9C1E"
KINDS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "bearer": (BEARER, {"API_KEY": CANARY}),
    "header": (
        {"kind": "header", "name": "x-api-key", "template": "{API_KEY}"},
        {"API_KEY": CANARY},
    ),
    "basic": (
        {"kind": "basic", "username": "{API_USER}", "password": "{API_KEY}"},
        {"API_USER": "steer-user", "API_KEY": CANARY},
    ),
    "query": ({"kind": "query", "param": "key", "key": "API_KEY"}, {"API_KEY": CANARY}),
    "aws_sigv4": (
        {"kind": "aws_sigv4", "region": "us-east-1", "service": "s3"},
        {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": CANARY},
    ),
}
# Each would make an upstream that honours it run another method, path or host.
STEERING = [
    ("X-HTTP-Method-Override", "DELETE"),
    ("X-HTTP-Method", "DELETE"),
    ("X-Method-Override", "PUT"),
    ("X-Original-Method", "DELETE"),
    ("X-Original-URL", "/admin/keys"),
    ("X-Original-URI", "/admin/keys"),
    ("X-Rewrite-URL", "/admin/keys"),
    ("X-Envoy-Original-Path", "/admin/keys"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Server", "evil.example"),
    ("X-Forwarded-Proto", "http"),
    ("X-Forwarded-Port", "8080"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Forwarded-Uri", "/admin/keys"),
    ("X-Host", "evil.example"),
    ("X-Original-Host", "evil.example"),
    ("Forwarded", "for=203.0.113.9;host=evil.example;proto=http"),
    ("Destination", "/admin/keys"),
]
# Under SigV4 these name a second object the grant's path rules never saw.
FOREIGN = [
    ("x-amz-copy-source", "/other-bucket/secret.txt"),
    ("X-Amz-Copy-Source-Range", "bytes=0-9"),
    ("x-amz-copy-source-version-id", "v1"),
    ("x-amz-rename-source", "/other-bucket/secret.txt"),
    ("x-amz-source-expected-bucket-owner", "111122223333"),
    ("x-amz-website-redirect-location", "/other-bucket/secret.txt"),
    # The same on other object stores.
    ("x-ms-copy-source", "https://acct.blob.core.windows.net/other/secret.txt"),
    ("x-goog-copy-source", "/other-bucket/secret.txt"),
]


@pytest.fixture(scope="module")
def sets(operator: httpx.Client, upstream: FakeUpstream) -> dict[str, Proxied]:
    """A set of each injection kind on the echo upstream, its grant limited to ``/echo``."""
    rules = {"paths": ["/echo/*"], "methods": ["GET", "POST"]}
    return {
        kind: proxied(operator, local_profile(upstream, inject=spec), entries, grant=rules)
        for kind, (spec, entries) in KINDS.items()
    }


def _seen(upstream: FakeUpstream, marker: str) -> Seen:
    (seen,) = [s for s in upstream.seen if marker in s.path]
    return seen


def _names(seen: Seen) -> set[str]:
    return {name.lower() for name, _ in seen.headers}


def _signed(seen: Seen) -> list[str]:
    (authorization,) = [v for k, v in seen.headers if k.lower() == "authorization"]
    part = authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0]
    return part.split(";")


def test_the_steering_list_is_the_documented_one() -> None:
    """Every header this test sends is in headers.STEERING (one list, in docs/proxy.md)."""
    assert {name.lower() for name, _ in STEERING} <= proxy_headers.STEERING


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_method_path_and_host_overrides_never_reach_the_upstream(
    sets: dict[str, Proxied], upstream: FakeUpstream, kind: str
) -> None:
    """The upstream gets the method, path and host the grant was checked against, and none
    of the override headers; under SigV4 none of them is signed either."""
    p = sets[kind]
    marker = unique("steer")
    answer = loopback.post(
        p.url(f"/echo/{marker}"),
        headers=[("X-Keyfob-Lease", p.lease()), ("X-Kept", "yes"), *STEERING],
        content=b"{}",
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    seen = _seen(upstream, marker)
    assert (seen.method, seen.path) == ("POST", f"/echo/{marker}")
    assert seen.header("host") == f"{upstream.host}:{upstream.port}"
    assert _names(seen) & {name.lower() for name, _ in STEERING} == set()
    assert seen.header("x-kept") == "yes"
    if kind == "aws_sigv4":
        assert set(_signed(seen)) & proxy_headers.STEERING == set()


@pytest.mark.parametrize(("name", "value"), FOREIGN)
@pytest.mark.parametrize("kind", ["aws_sigv4", "bearer"])
def test_a_header_naming_another_object_is_refused_before_the_lease_is_used(
    sets: dict[str, Proxied],
    operator: httpx.Client,
    upstream: FakeUpstream,
    kind: str,
    name: str,
    value: str,
) -> None:
    """400 ``forbidden-header``: nothing goes upstream, and the single-use lease still works."""
    p = sets[kind]
    lease = p.lease(scope="request")
    before = len(upstream.seen)
    marker = unique("copy")
    answer = loopback.post(
        p.url(f"/echo/{marker}"),
        headers={"X-Keyfob-Lease": lease, name: value},
        content=b"",
        timeout=10,
    )
    problem = assert_problem(answer, 400, "forbidden-header")
    assert name.lower() in problem["detail"]
    assert len(upstream.seen) == before
    assert [r for r in audit(operator, action="lease.use") if marker in str(r)] == []
    again = loopback.get(p.url(f"/echo/{marker}"), headers={"X-Keyfob-Lease": lease}, timeout=10)
    assert again.status_code == 200, again.text


def test_sigv4_forwards_and_signs_only_known_amz_headers(
    sets: dict[str, Proxied], upstream: FakeUpstream
) -> None:
    """Known ``x-amz-*`` headers are signed and sent; unknown ones are dropped, never sent
    unsigned (S3 would refuse that) nor signed (keyfob does not vouch for them)."""
    p = sets["aws_sigv4"]
    marker = unique("amz")
    sent = {
        "x-amz-meta-owner": "team-a",
        "x-amz-acl": "private",
        "x-amz-storage-class": "STANDARD",
        "x-amz-server-side-encryption": "AES256",
        "x-amz-checksum-crc32": "AAAAAA==",
        "x-amz-tagging": "a=b",
        "x-amz-unknown-future-header": "x",
        "x-amz-bucket-region": "eu-west-1",
    }
    answer = loopback.post(
        p.url(f"/echo/{marker}"),
        headers={"X-Keyfob-Lease": p.lease(), **sent},
        content=b"{}",
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    seen = _seen(upstream, marker)
    amz = {n for n in _names(seen) if n.startswith("x-amz-")}
    assert amz == {
        "x-amz-meta-owner",
        "x-amz-acl",
        "x-amz-storage-class",
        "x-amz-server-side-encryption",
        "x-amz-checksum-crc32",
        "x-amz-tagging",
        "x-amz-date",
        "x-amz-content-sha256",
    }
    assert set(_signed(seen)) == amz | {"host"}
    assert not sigv4.signed_amz("x-amz-unknown-future-header")


def test_sign_ignores_an_unknown_amz_header_handed_to_it() -> None:
    """Defence in depth: ``sigv4.sign`` itself never signs an unlisted ``x-amz-*`` header."""
    from datetime import UTC, datetime

    added = sigv4.sign(
        method="GET",
        host="s3.amazonaws.com",
        path="/bucket/key",
        query="",
        headers=[("x-amz-copy-source", "/other/key"), ("x-amz-meta-a", "b")],
        payload_hash=sigv4.UNSIGNED_PAYLOAD,
        access_key_id=ACCESS_KEY,
        secret_access_key="not-a-real-secret-key",
        session_token=None,
        region="us-east-1",
        service="s3",
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )
    authorization = dict(added)["authorization"]
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-meta-a," in authorization


# -- boto3 ---------------------------------------------------------------------------------

SECRET = "wJalrXUtnFEMI/K7MDENG+steering9d2b4f6a8c0e1f3a5b7"


@pytest.fixture
def s3_set(operator: httpx.Client, upstream: FakeUpstream) -> Iterator[Proxied]:
    """An S3 set whose grant allows only ``/granted/*``; the fake S3 knows its keys."""
    before = list(upstream.aws)
    upstream.aws.append(AwsCredentials(ACCESS_KEY, SECRET))
    profile = {
        "base_url": upstream.url + "/s3",
        "hosts": ["127.0.0.1"],
        "inject": {"kind": "aws_sigv4", "region": "us-east-1", "service": "s3"},
        "allow_private_upstream": True,
    }
    entries = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    yield proxied(operator, profile, entries, provider="aws", grant={"paths": ["/granted/*"]})
    upstream.aws[:] = before


def _client(p: Proxied) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=p.url(""),
        aws_access_key_id=p.lease(),
        aws_secret_access_key="not-the-secret",
        region_name="us-east-1",
        config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def test_boto3_copy_object_from_outside_the_grant_is_refused(
    s3_set: Proxied, upstream: FakeUpstream
) -> None:
    """A grant for ``/granted/*`` cannot copy ``/private/secret`` into its own bucket; a
    plain put with metadata, a storage class and encryption still works."""
    upstream.objects["private/secret.txt"] = b"not yours"
    s3 = _client(s3_set)
    try:
        put = s3.put_object(
            Bucket="granted",
            Key="mine.txt",
            Body=b"hello",
            Metadata={"owner": "a"},
            StorageClass="STANDARD",
            ServerSideEncryption="AES256",
        )
        assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
        before = len(upstream.seen)
        with pytest.raises(ClientError) as refused:
            s3.copy_object(Bucket="granted", Key="stolen.txt", CopySource="private/secret.txt")
    finally:
        s3.close()
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert len(upstream.seen) == before
    assert "granted/stolen.txt" not in upstream.objects


@pytest.mark.parametrize(
    "name",
    [
        f"x-amz-copy-source-{CANARY}",
        "x-ms-copy-source-kfl_Zq3vX9mK2pL7nR4tY8wB1cD5fG0hJ6sA",
        "x-goog-copy-source-" + "a" * 40,
    ],
)
def test_a_forbidden_header_name_holding_a_credential_is_not_echoed(name: str) -> None:
    """The problem detail names ordinary headers, never a name that carries a token."""
    raw = [(b"x-keyfob-lease", b"kfl_lease"), (name.encode(), b"/other/object")]
    with pytest.raises(ForbiddenHeader) as refused:
        proxy_headers.read_request(raw, max_bytes=65536, max_body=1024)
    detail = refused.value.render().decode()
    assert name.split("-", 3)[-1] not in detail
    assert "copy or rename source" in detail


def test_a_forbidden_header_with_an_ordinary_name_is_named() -> None:
    name = "x-amz-copy-source-server-side-encryption-customer-algorithm"
    with pytest.raises(ForbiddenHeader) as refused:
        proxy_headers.read_request([(name.encode(), b"AES256")], max_bytes=65536, max_body=1024)
    assert name in refused.value.render().decode()
