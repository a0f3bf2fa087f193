"""Unmodified official SDKs and curl reach fake providers through keyfob with only a lease.

Against a live keyfob server and a loopback fake upstream: the ``openai`` SDK (a normal
call, and a streamed completion whose chunks must arrive as they are sent), the
``anthropic`` SDK (``x-api-key``), boto3 S3 (keyfob re-signs with SigV4 and the fake
checks the signature with botocore) and ``curl``. The upstream sees keyfob's credential,
exactly once, and never the lease; the agent, the server log and the audit export never
see a key; every call leaves a ``lease.use`` before and a ``proxy.request`` after.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import httpx
import pytest
from botocore.exceptions import ClientError

from tests.conftest import CANARY
from tests.proxy.factories import Proxied, audit, local_profile, proxied
from tests.support.server import LiveServer
from tests.support.upstream import AwsCredentials, FakeUpstream, Seen
from tests.test_leak import leaks

# openai and anthropic are imported in the tests that use them: every xdist worker collects
# this module, and importing the two SDKs costs ~3 s of CPU (thousands of pydantic models)
# that the workers which do not run these tests would pay for nothing.
OPENAI = {"kind": "bearer", "key": "OPENAI_API_KEY"}
ANTHROPIC = {"kind": "header", "name": "x-api-key", "template": "{ANTHROPIC_API_KEY}"}
# AWS's documentation example key id; the secrets are canaries, with '/' and '+' so their
# URL- and JSON-escaped forms differ from the raw one.
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+canary9d2b4f6a8c0e1f3a5b7"
SESSION_KEY_ID = "ASIAIOSFODNN7EXAMPLE"
SESSION_SECRET = "kX9pQ2mN4vB6zR8tY0wE+canary/3c5e7a9b1d2f4a6c8e0"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEcanarySessionToken0a2c4e6b8d1f3a5c7e9b"
WRONG_KEY_ID = "AKIAI44QH8DHBEXAMPLE"
WRONG_SECRET = "je7MtGbClwBF/2Zp9Utk+canary/wrong0b2d4f6a8c1e3a5b7d"
RIGHT_SECRET = "je7MtGbClwBF/2Zp9Utk+canary/right1c3e5a7b9d0f2a4c6e"
KEYS = [CANARY, AWS_SECRET, SESSION_SECRET, SESSION_TOKEN, WRONG_SECRET, RIGHT_SECRET]
CURL = "/usr/bin/curl"
needs_curl = pytest.mark.skipif(
    shutil.which(CURL) is None, reason=f"{CURL} is not installed; the curl tests need it"
)


@pytest.fixture(scope="module")
def saw() -> dict[str, bytes]:
    """Everything the agent side saw (bodies, headers, SDK objects), for the leak check."""
    return {}


@pytest.fixture(scope="module")
def leases() -> list[str]:
    """Every lease token minted here: none may reach the upstream, the log or the audit."""
    return []


@pytest.fixture(scope="module")
def generic(operator: httpx.Client, upstream: FakeUpstream) -> Proxied:
    """A bearer set (``API_KEY`` = the canary) on the fake upstream, for curl."""
    return proxied(operator, local_profile(upstream))


def _mint(p: Proxied, leases: list[str], scope: str = "request") -> str:
    token = p.lease(scope=scope)
    leases.append(token)
    return token


def _new(upstream: FakeUpstream, mark: int) -> list[Seen]:
    return upstream.seen[mark:]


def _headers(seen: Seen, name: str) -> list[str]:
    return [v for k, v in seen.headers if k.lower() == name.lower()]


def _no_lease_upstream(seen: list[Seen], lease: str) -> None:
    blobs = {f"{s.method} {s.path}": repr((s.path, s.query, s.headers, s.body)) for s in seen}
    assert leaks([lease], {k: v.encode() for k, v in blobs.items()}) == []


def _events(operator: httpx.Client, p: Proxied, action: str) -> list[dict[str, Any]]:
    return audit(operator, target=f"secret_set:{p.set_path}", action=action)


def _audited(
    operator: httpx.Client, p: Proxied, calls: int, *, status: int = 200
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each call's (lease.use, proxy.request) pair, waiting briefly for the outcome records."""
    deadline = time.monotonic() + 3
    outcomes = _events(operator, p, "proxy.request")
    while len(outcomes) < calls and time.monotonic() < deadline:
        time.sleep(0.01)
        outcomes = _events(operator, p, "proxy.request")
    uses = {e["request_id"]: e for e in _events(operator, p, "lease.use")}
    assert len(uses) == calls, uses
    assert len(outcomes) == calls, outcomes
    pairs = []
    for outcome in outcomes:
        use = uses[outcome["request_id"]]
        assert use["seq"] < outcome["seq"]
        assert use["outcome"] == "ok"
        assert outcome["details"]["status"] == status, outcome
        assert outcome["details"]["lease_id"] == use["details"]["lease_id"]
        pairs.append((use, outcome))
    return pairs


def _check_use(use: dict[str, Any], upstream: FakeUpstream, method: str, path: str) -> None:
    details = use["details"]
    assert details["method"] == method
    assert details["host"] == f"{upstream.host}:{upstream.port}"
    assert details["path"] == path


# -- openai --------------------------------------------------------------------------------


def _openai_set(operator: httpx.Client, upstream: FakeUpstream) -> Proxied:
    return proxied(
        operator,
        local_profile(upstream, inject=OPENAI),
        {"OPENAI_API_KEY": CANARY},
        provider="openai",
    )


def test_openai_chat_completion_with_a_request_lease(
    operator: httpx.Client,
    upstream: FakeUpstream,
    saw: dict[str, bytes],
    leases: list[str],
) -> None:
    """A normal completion works; upstream gets the key as a bearer token, never the lease."""
    import openai
    p = _openai_set(operator, upstream)
    lease = _mint(p, leases)
    mark = len(upstream.seen)
    with openai.OpenAI(base_url=p.url("/v1"), api_key=lease, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-fake", messages=[{"role": "user", "content": "hi"}]
        )
        answer = raw.parse()
        saw["openai response"] = f"{raw.headers!r}\n".encode() + raw.http_response.content
        saw["openai completion"] = f"{answer!r}\n{answer}\n{answer.model_dump_json()}".encode()
        assert answer.choices[0].message.content == "hello from upstream"

        # A request lease is single use: the SDK's next call is refused, upstream untouched.
        with pytest.raises(openai.PermissionDeniedError) as refused:
            client.chat.completions.create(
                model="gpt-fake", messages=[{"role": "user", "content": "again"}]
            )
    saw["openai refusal"] = f"{refused.value!r}\n{refused.value.response.text}".encode()
    assert refused.value.body is not None
    assert "exhausted" in refused.value.response.text

    (seen,) = _new(upstream, mark)
    assert seen.method == "POST"
    assert seen.path == "/v1/chat/completions"
    assert _headers(seen, "authorization") == [f"Bearer {CANARY}"]
    _no_lease_upstream([seen], lease)

    ((use, _),) = _audited(operator, p, 1)
    _check_use(use, upstream, "POST", "/v1/chat/completions")
    assert use["details"]["keys"] == ["OPENAI_API_KEY"]
    (deny,) = _events(operator, p, "lease.deny")
    assert deny["details"]["reason"] == "exhausted"


def test_openai_stream_arrives_as_it_is_sent(
    operator: httpx.Client,
    upstream: FakeUpstream,
    saw: dict[str, bytes],
    leases: list[str],
) -> None:
    """Six chunks 150 ms apart reach the SDK one by one, not all at the end."""
    import openai
    p = _openai_set(operator, upstream)
    lease = _mint(p, leases)
    mark = len(upstream.seen)
    arrived: list[float] = []
    sent: list[float] = []
    text = []
    with openai.OpenAI(base_url=p.url("/v1"), api_key=lease, max_retries=0) as client:
        stream = client.chat.completions.create(
            model="gpt-fake",
            messages=[{"role": "user", "content": "count"}],
            stream=True,
            extra_body={"chunks": 6, "delay": 0.15},
        )
        with stream:
            assert stream.response.headers["content-type"].startswith("text/event-stream")
            assert stream.response.headers["x-accel-buffering"] == "no"
            saw["openai stream headers"] = f"{stream.response.headers!r}".encode()
            for chunk in stream:
                arrived.append(time.monotonic())
                # The fake stamps each chunk with its (same-process) monotonic send time.
                sent.append(float((chunk.model_extra or {})["sent_at"]))
                text.append(chunk.choices[0].delta.content or "")
                saw[f"openai chunk {len(arrived)}"] = f"{chunk!r}".encode()
                if len(arrived) == 1:
                    # Mid-stream: the use is already committed; the outcome is not.
                    assert len(_events(operator, p, "lease.use")) == 1
                    assert _events(operator, p, "proxy.request") == []

    assert "".join(text) == "tok0 tok1 tok2 tok3 tok4 tok5 "
    assert len(arrived) == 6
    # Each chunk is at the agent before the upstream has sent the one after next: a proxy
    # that buffered would hold them until the end. (Not "before the next one": on a busy
    # 2-core machine one scheduler stall can outlast the 150 ms between two chunks.)
    late = [a - s for a, s in zip(arrived, sent, strict=True)]
    for i in range(4):
        assert arrived[i] < sent[i + 2], (i, late)
    assert arrived[0] < sent[-1] - 0.3
    gaps = [b - a for a, b in itertools.pairwise(arrived)]
    assert sum(gaps) > 0.5, gaps  # the upstream spread them over 5 x 150 ms

    (seen,) = _new(upstream, mark)
    assert _headers(seen, "authorization") == [f"Bearer {CANARY}"]
    _no_lease_upstream([seen], lease)
    ((use, outcome),) = _audited(operator, p, 1)
    _check_use(use, upstream, "POST", "/v1/chat/completions")
    assert outcome["details"]["bytes_down"] > 6 * 100


def test_openai_workflow_lease_serves_several_calls(
    operator: httpx.Client,
    upstream: FakeUpstream,
    saw: dict[str, bytes],
    leases: list[str],
) -> None:
    """One workflow lease carries an SDK client through several calls, each audited."""
    import openai
    p = _openai_set(operator, upstream)
    lease = _mint(p, leases, scope="workflow")
    mark = len(upstream.seen)
    with openai.OpenAI(base_url=p.url("/v1"), api_key=lease, max_retries=0) as client:
        for i in range(3):
            answer = client.chat.completions.create(
                model="gpt-fake", messages=[{"role": "user", "content": f"call {i}"}]
            )
            saw[f"openai workflow {i}"] = f"{answer!r}".encode()
            assert answer.choices[0].message.content == "hello from upstream"
    seen = _new(upstream, mark)
    assert [_headers(s, "authorization") for s in seen] == [[f"Bearer {CANARY}"]] * 3
    _no_lease_upstream(seen, lease)
    pairs = _audited(operator, p, 3)
    assert len({use["details"]["lease_id"] for use, _ in pairs}) == 1


# -- anthropic -----------------------------------------------------------------------------


def test_anthropic_messages_with_x_api_key(
    operator: httpx.Client,
    upstream: FakeUpstream,
    saw: dict[str, bytes],
    leases: list[str],
) -> None:
    """The SDK's x-api-key carries the lease in; exactly one x-api-key, the key, goes out."""
    import anthropic
    p = proxied(
        operator,
        local_profile(upstream, inject=ANTHROPIC),
        {"ANTHROPIC_API_KEY": CANARY},
        provider="anthropic",
    )
    lease = _mint(p, leases)
    mark = len(upstream.seen)
    with anthropic.Anthropic(base_url=p.url(""), api_key=lease, max_retries=0) as client:
        raw = client.messages.with_raw_response.create(
            model="claude-fake",
            max_tokens=16,
            messages=[{"role": "user", "content": "hi"}],
        )
        message = raw.parse()
    saw["anthropic response"] = f"{raw.headers!r}\n".encode() + raw.http_response.content
    saw["anthropic message"] = f"{message!r}\n{message}\n{message.model_dump_json()}".encode()
    assert message.content[0].type == "text"
    assert message.content[0].text == "hello from upstream"

    (seen,) = _new(upstream, mark)
    assert seen.path == "/v1/messages"
    assert _headers(seen, "x-api-key") == [CANARY]
    assert _headers(seen, "authorization") == []
    assert _headers(seen, "anthropic-version")  # the SDK's own headers still go through
    _no_lease_upstream([seen], lease)
    ((use, _),) = _audited(operator, p, 1)
    _check_use(use, upstream, "POST", "/v1/messages")
    assert use["details"]["keys"] == ["ANTHROPIC_API_KEY"]


# -- boto3 S3 ------------------------------------------------------------------------------


def _s3_set(
    operator: httpx.Client, upstream: FakeUpstream, entries: dict[str, str], **inject: str
) -> Proxied:
    profile = {
        "base_url": upstream.url + "/s3",
        "hosts": ["127.0.0.1"],
        "inject": {"kind": "aws_sigv4", "region": "us-east-1", "service": "s3", **inject},
        "allow_private_upstream": True,
    }
    return proxied(operator, profile, entries, provider="aws")


def _s3(p: Proxied, lease: str, **extra: str) -> Any:
    """The agent's client: the lease where the access key id goes, a dummy secret."""
    return boto3.client(
        "s3",
        endpoint_url=p.url(""),
        aws_access_key_id=lease,
        aws_secret_access_key="not-the-secret",
        region_name="us-east-1",
        config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        **extra,
    )


@pytest.fixture
def aws(upstream: FakeUpstream) -> Iterator[list[AwsCredentials]]:
    """Credentials the fake S3 accepts for one test (removed afterwards)."""
    before = list(upstream.aws)
    yield upstream.aws
    upstream.aws[:] = before


def test_boto3_s3_round_trip_signed_by_keyfob(
    operator: httpx.Client,
    upstream: FakeUpstream,
    aws: list[AwsCredentials],
    saw: dict[str, bytes],
    leases: list[str],
) -> None:
    """put/get/list work; every request upstream passed botocore's own SigV4 check."""
    aws.append(AwsCredentials(ACCESS_KEY_ID, AWS_SECRET))
    p = _s3_set(
        operator,
        upstream,
        {"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET},
    )
    lease = _mint(p, leases, scope="workflow")
    bucket = "sdk-bucket"
    body = b"object bytes through keyfob\n" * 100
    mark = len(upstream.seen)
    s3 = _s3(p, lease)
    try:
        put = s3.put_object(Bucket=bucket, Key="dir/hello.txt", Body=body)
        got = s3.get_object(Bucket=bucket, Key="dir/hello.txt")
        content = got["Body"].read()
        listed = s3.list_objects_v2(Bucket=bucket)
    finally:
        s3.close()
    saw["s3 answers"] = f"{put!r}\n{got!r}\n{content!r}\n{listed!r}".encode()
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert content == body
    assert [(o["Key"], o["Size"]) for o in listed["Contents"]] == [("dir/hello.txt", len(body))]

    seen = _new(upstream, mark)
    assert [(s.method, s.path) for s in seen] == [
        ("PUT", f"/s3/{bucket}/dir/hello.txt"),
        ("GET", f"/s3/{bucket}/dir/hello.txt"),
        ("GET", f"/s3/{bucket}"),
    ]
    for s in seen:
        (authorization,) = _headers(s, "authorization")
        assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/")
        assert _headers(s, "x-amz-security-token") == []
    # botocore over plain http hashes the body (no aws-chunked, no unsigned payload);
    # keyfob signs the hash botocore declared, and the fake checked it against the body.
    put_seen = seen[0]
    assert _headers(put_seen, "x-amz-content-sha256") == [hashlib.sha256(body).hexdigest()]
    assert "aws-chunked" not in (put_seen.header("content-encoding") or "")
    assert put_seen.body == body
    _no_lease_upstream(seen, lease)

    pairs = _audited(operator, p, 3)
    expected = [
        ("PUT", f"/{bucket}/dir/hello.txt"),
        ("GET", f"/{bucket}/dir/hello.txt"),
        ("GET", f"/{bucket}"),
    ]
    for (use, _), (method, path) in zip(pairs, expected, strict=True):
        _check_use(use, upstream, method, path)
        assert use["details"]["keys"] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    assert "list-type" in pairs[2][0]["details"]["query"]


def test_boto3_s3_with_a_session_token(
    operator: httpx.Client,
    upstream: FakeUpstream,
    aws: list[AwsCredentials],
    saw: dict[str, bytes],
    leases: list[str],
) -> None:
    """The set's session token is signed in; the agent's own (dummy) token never goes out."""
    aws.append(AwsCredentials(SESSION_KEY_ID, SESSION_SECRET, SESSION_TOKEN))
    p = _s3_set(
        operator,
        upstream,
        {
            "AWS_ACCESS_KEY_ID": SESSION_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SESSION_SECRET,
            "AWS_SESSION_TOKEN": SESSION_TOKEN,
        },
        session_token="AWS_SESSION_TOKEN",
    )
    lease = _mint(p, leases, scope="workflow")
    mark = len(upstream.seen)
    s3 = _s3(p, lease, aws_session_token="agent-dummy-token")
    try:
        put = s3.put_object(Bucket="tok-bucket", Key="k", Body=b"with a session token")
        got = s3.get_object(Bucket="tok-bucket", Key="k")["Body"].read()
    finally:
        s3.close()
    saw["s3 session"] = f"{put!r}\n{got!r}".encode()
    assert got == b"with a session token"
    seen = _new(upstream, mark)
    assert len(seen) == 2
    for s in seen:
        assert _headers(s, "x-amz-security-token") == [SESSION_TOKEN]
        assert "agent-dummy-token" not in repr(s.headers)
    _no_lease_upstream(seen, lease)
    pairs = _audited(operator, p, 2)
    assert pairs[0][0]["details"]["keys"] == [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ]


def test_boto3_s3_wrong_secret_gets_the_upstream_403(
    operator: httpx.Client,
    upstream: FakeUpstream,
    aws: list[AwsCredentials],
    saw: dict[str, bytes],
    leases: list[str],
) -> None:
    """With a wrong secret in the set, the upstream's check fails: verification is real."""
    aws.append(AwsCredentials(WRONG_KEY_ID, RIGHT_SECRET))
    p = _s3_set(
        operator,
        upstream,
        {"AWS_ACCESS_KEY_ID": WRONG_KEY_ID, "AWS_SECRET_ACCESS_KEY": WRONG_SECRET},
    )
    lease = _mint(p, leases)
    mark = len(upstream.seen)
    s3 = _s3(p, lease)
    try:
        with pytest.raises(ClientError) as refused:
            s3.put_object(Bucket="bad-bucket", Key="k", Body=b"never stored")
    finally:
        s3.close()
    saw["s3 refused"] = f"{refused.value!r}\n{refused.value.response!r}".encode()
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    (seen,) = _new(upstream, mark)  # the upstream itself refused it
    assert seen.path == "/s3/bad-bucket/k"
    assert "bad-bucket/k" not in upstream.objects
    _audited(operator, p, 1, status=403)


# -- curl ----------------------------------------------------------------------------------


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    # --noproxy: an environment proxy must not sit between curl and the loopback server.
    return subprocess.run(
        [CURL, "--silent", "--show-error", "--noproxy", "*", "--max-time", "10", *args],
        capture_output=True,
        timeout=15,
        check=False,
    )


def _masked_bearer() -> str:
    return "Bearer " + "*" * len(CANARY)


@needs_curl
def test_curl_get_with_bearer_lease(
    generic: Proxied, upstream: FakeUpstream, saw: dict[str, bytes], leases: list[str]
) -> None:
    """curl's GET reaches the upstream with the key; the echo comes back masked."""
    lease = _mint(generic, leases)
    mark = len(upstream.seen)
    done = _curl("-i", "-H", f"Authorization: Bearer {lease}", generic.url("/echo/get?a=1"))
    saw["curl get"] = done.stdout + done.stderr
    assert done.returncode == 0, done.stderr
    assert b"HTTP/1.1 200" in done.stdout
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    fields = [line.split(": ", 1) for line in head.decode().split("\r\n")[1:]]
    assert [v for k, v in fields if k.lower() == "x-echo-authorization"] == [_masked_bearer()]
    echoed = httpx.Response(200, content=body).json()
    assert echoed["method"] == "GET"
    assert echoed["query"] == "a=1"
    (seen,) = _new(upstream, mark)
    assert _headers(seen, "authorization") == [f"Bearer {CANARY}"]
    _no_lease_upstream([seen], lease)


@needs_curl
def test_curl_post_with_bearer_lease(
    generic: Proxied, upstream: FakeUpstream, saw: dict[str, bytes], leases: list[str]
) -> None:
    """curl's POST body goes upstream unchanged."""
    lease = _mint(generic, leases)
    mark = len(upstream.seen)
    done = _curl(
        "-H",
        f"Authorization: Bearer {lease}",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        '{"hello": "upstream"}',
        generic.url("/echo/post"),
    )
    saw["curl post"] = done.stdout + done.stderr
    assert done.returncode == 0, done.stderr
    echoed = httpx.Response(200, content=done.stdout).json()
    assert echoed["method"] == "POST"
    assert echoed["body"] == '{"hello": "upstream"}'
    (seen,) = _new(upstream, mark)
    assert seen.body == b'{"hello": "upstream"}'
    assert _headers(seen, "authorization") == [f"Bearer {CANARY}"]
    _no_lease_upstream([seen], lease)


@needs_curl
def test_curl_with_x_keyfob_lease(
    generic: Proxied, upstream: FakeUpstream, saw: dict[str, bytes], leases: list[str]
) -> None:
    """The X-Keyfob-Lease header works too, and is not forwarded."""
    lease = _mint(generic, leases)
    mark = len(upstream.seen)
    done = _curl("-H", f"X-Keyfob-Lease: {lease}", generic.url("/echo/lease-header"))
    saw["curl x-keyfob-lease"] = done.stdout + done.stderr
    assert done.returncode == 0, done.stderr
    assert httpx.Response(200, content=done.stdout).json()["path"] == "/echo/lease-header"
    (seen,) = _new(upstream, mark)
    assert _headers(seen, "authorization") == [f"Bearer {CANARY}"]
    assert _headers(seen, "x-keyfob-lease") == []
    _no_lease_upstream([seen], lease)


@needs_curl
def test_curl_no_buffer_prints_sse_events(
    generic: Proxied, upstream: FakeUpstream, saw: dict[str, bytes], leases: list[str]
) -> None:
    """``curl -N`` on an SSE route prints every event, the echoed key masked."""
    lease = _mint(generic, leases)
    done = _curl(
        "-N", "-H", f"Authorization: Bearer {lease}", generic.url("/sse?events=4&delay=0.05")
    )
    saw["curl sse"] = done.stdout + done.stderr
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert [line for line in lines if line.startswith("id: ")] == [f"id: {i}" for i in range(4)]
    data = [httpx.Response(200, content=line[6:]).json() for line in lines if line[:6] == "data: "]
    assert [d["i"] for d in data] == [0, 1, 2, 3]
    assert {d["auth"] for d in data} == {_masked_bearer()}


# -- what nobody saw -----------------------------------------------------------------------


def test_no_key_anywhere_and_every_call_audited(
    operator: httpx.Client, server: LiveServer, saw: dict[str, bytes], leases: list[str]
) -> None:
    """After the SDK runs, no key is in what the agent saw, the server log or the audit."""
    # Module order: this runs after the tests above have filled ``saw``.
    assert saw, "run the whole module: this test checks what the others saw"
    deadline = time.monotonic() + 3
    export = operator.get("/v1/audit/export")
    while time.monotonic() < deadline:
        # Outcome records are committed a few milliseconds after the response.
        lines = [line for line in export.text.splitlines() if line]
        outcomes = sum('"action":"proxy.request"' in line for line in lines)
        if outcomes >= len(leases):
            break
        time.sleep(0.01)
        export = operator.get("/v1/audit/export")
    assert export.status_code == 200
    places = {
        **saw,
        "server log": server.log_text().encode(),
        "audit export": export.content,
    }
    assert leaks(KEYS, places) == []
    # Lease tokens are stored as keyed digests: the log and the audit hold none.
    assert leaks(leases, {"server log": places["server log"], "audit": export.content}) == []
