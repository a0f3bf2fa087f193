"""Protocol hygiene on the proxy: hop-by-hop headers, size limits, upstream failures and
timeouts, streaming both ways, and the audit pair every proxied request leaves."""

from __future__ import annotations

import http.client
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from keyfob.app.bootstrap import init_vault
from keyfob.settings import Settings
from tests.conftest import CANARY
from tests.proxy.factories import Proxied, audit, local_profile, proxied, unique
from tests.support import loopback
from tests.support.http import assert_problem
from tests.support.server import LiveServer, free_port, serve_in_thread, start_server
from tests.support.upstream import FakeUpstream, Listener
from tests.test_leak import leaks

QUERY_SECRET = "s3cr3tvalue"
MAX_BODY = 2048
MAX_HEADERS = 4096
# The outcome is timed until the proxy has sent the last byte, a little after the agent
# has it; the slack only keeps that ordering from failing a test (it is no speed limit).
DURATION_SLACK_MS = 1000


def bearer(lease: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {lease}"}


def raw_request(
    url: str, method: str, headers: list[tuple[str, str]]
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send exactly these headers (http.client adds only Host and Accept-Encoding)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        answer = conn.getresponse()
        return answer.status, answer.getheaders(), answer.read()
    finally:
        conn.close()


def proxy_record(operator: httpx.Client, request_id: str, wait: float = 5) -> dict[str, Any]:
    """The ``proxy.request`` record of ``request_id`` (written just after the response)."""
    deadline = time.monotonic() + wait
    while True:
        found = [
            e for e in audit(operator, action="proxy.request") if e["request_id"] == request_id
        ]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, found
            return found[0]
        time.sleep(0.05)


@pytest.fixture(scope="module")
def p(operator: httpx.Client, upstream: FakeUpstream) -> Proxied:
    """A bearer set on the fake upstream, scrubbing on (the default)."""
    return proxied(operator, local_profile(upstream))


@pytest.fixture(scope="module")
def lease(p: Proxied) -> str:
    return p.lease(max_uses=1000)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A keyfob server with small proxy body and header limits."""
    workdir = tmp_path_factory.mktemp("proxy-limited")
    settings = Settings(
        data_dir=workdir / "data",
        proxy_max_body_bytes=MAX_BODY,
        proxy_max_header_bytes=MAX_HEADERS,
    )
    init = init_vault(settings)
    assert init.operator_token is not None
    live = serve_in_thread(settings, init.operator_token.reveal(), workdir / "server.log")
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def limited_op(limited: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=limited.url, headers=bearer(limited.operator_token), timeout=30
    ) as client:
        yield client


@pytest.fixture(scope="module")
def small(limited_op: httpx.Client, upstream: FakeUpstream) -> tuple[Proxied, str]:
    """A set on the limited server and a lease for it."""
    target = proxied(limited_op, local_profile(upstream))
    return target, target.lease(max_uses=1000)


# -- hop-by-hop headers --------------------------------------------------------------------


def test_hop_by_hop_request_headers_stay_behind(
    p: Proxied, lease: str, upstream: FakeUpstream
) -> None:
    marker = unique("hop")
    hop = [
        ("Connection", "x-drop-me, authorization, keep-alive"),
        ("x-drop-me", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Proxy-Connection", "keep-alive"),
        ("x-kept", "yes"),
    ]

    status, _, _ = raw_request(p.url(f"/echo/{marker}"), "GET", [*hop, *bearer(lease).items()])

    assert status == 200
    (seen,) = [s for s in upstream.seen if marker in s.path]
    names = {k.lower() for k, _ in seen.headers}
    assert not names & {"x-drop-me", "keep-alive", "te", "trailer", "proxy-connection"}, names
    assert "x-drop-me" not in (seen.header("connection") or "")
    assert seen.header("x-kept") == "yes"
    # Naming Authorization in Connection cannot remove the injected credential.
    assert [v for k, v in seen.headers if k.lower() == "authorization"] == [f"Bearer {CANARY}"]


def test_hop_by_hop_response_headers_stay_behind(p: Proxied, lease: str) -> None:
    asked = [
        "keep-alive:timeout=5",
        "x-hop:1",
        "connection:x-hop",
        "proxy-connection:keep-alive",
        "trailer:x-checksum",
        "upgrade:h2c",
        "te:trailers",
        "x-fine:yes",
    ]
    query = "&".join(f"set={a}" for a in asked)

    status, got, body = raw_request(p.url(f"/headers?{query}"), "GET", list(bearer(lease).items()))

    assert status == 200, body
    names = {k.lower() for k, _ in got}
    assert not names & {"keep-alive", "x-hop", "proxy-connection", "trailer", "upgrade", "te"}
    assert "x-hop" not in dict((k.lower(), v) for k, v in got).get("connection", "")
    assert ("x-fine", "yes") in [(k.lower(), v) for k, v in got]


# -- size limits ---------------------------------------------------------------------------


def test_body_over_the_limit_with_content_length(
    small: tuple[Proxied, str], upstream: FakeUpstream, limited_op: httpx.Client
) -> None:
    target, token = small
    marker = unique("big")

    refused = loopback.post(
        target.url(f"/echo/{marker}"), content=b"x" * 4096, headers=bearer(token), timeout=30
    )
    fits = loopback.post(
        target.url(f"/echo/{marker}"), content=b"y" * 1024, headers=bearer(token), timeout=30
    )

    body = assert_problem(refused, 413, "payload-too-large")
    assert fits.status_code == 200, fits.text
    assert [len(s.body) for s in upstream.seen if marker in s.path] == [1024]
    # The declared length is refused before the lease is even used.
    assert [e for e in audit(limited_op) if e["request_id"] == body["request_id"]] == []


def test_body_over_the_limit_chunked(
    small: tuple[Proxied, str], upstream: FakeUpstream, limited_op: httpx.Client
) -> None:
    target, token = small
    marker = unique("bigchunked")

    def pieces() -> Iterator[bytes]:
        for _ in range(8):
            yield b"z" * 512
            time.sleep(0.02)  # separate reads on the server, so the limit trips mid-stream

    refused = loopback.post(
        target.url(f"/echo/{marker}"), content=pieces(), headers=bearer(token), timeout=30
    )

    body = assert_problem(refused, 413, "payload-too-large")
    assert CANARY not in refused.text
    # Without a length the size is known only while streaming: the upstream request was
    # already under way and is aborted, so the upstream never gets a whole request.
    assert upstream.count(marker) == 0
    outcome = proxy_record(limited_op, body["request_id"])
    assert outcome["details"]["error"] == "payload-too-large"
    assert outcome["details"]["status"] is None
    assert outcome["details"]["bytes_up"] > MAX_BODY


def test_headers_over_the_limit(small: tuple[Proxied, str], upstream: FakeUpstream) -> None:
    target, token = small
    marker = unique("bighead")

    refused = loopback.get(
        target.url(f"/echo/{marker}"),
        headers={**bearer(token), "x-padding": "p" * (MAX_HEADERS + 100)},
        timeout=30,
    )
    many = loopback.get(
        target.url(f"/echo/{marker}"),
        headers=[*bearer(token).items(), *[(f"x-h{i}", "1") for i in range(250)]],
        timeout=30,
    )

    assert_problem(refused, 431, "headers-too-large")
    assert_problem(many, 431, "headers-too-large")
    assert upstream.count(marker) == 0


# -- upstream failures ---------------------------------------------------------------------


def test_unreachable_upstream_is_502_without_detail(operator: httpx.Client) -> None:
    port = free_port()  # nothing listens there
    profile = {
        "base_url": f"http://127.0.0.1:{port}",
        "hosts": ["127.0.0.1"],
        "inject": {"kind": "bearer", "key": "API_KEY"},
        "allow_private_upstream": True,
    }
    target = proxied(operator, profile)

    answer = loopback.get(target.url("/v1/models"), headers=bearer(target.lease()), timeout=30)

    body = assert_problem(answer, 502, "bad-gateway")
    assert body["reason"] == "connect"
    assert str(port) not in answer.text
    assert "refused" not in answer.text.lower()
    assert CANARY not in answer.text
    assert set(body) <= {"type", "title", "status", "detail", "reason", "request_id"}


def test_slow_upstream_is_504(p: Proxied, lease: str) -> None:
    started = time.monotonic()
    answer = loopback.get(p.url("/slow?delay=5"), headers=bearer(lease), timeout=30)

    body = assert_problem(answer, 504, "gateway-timeout")
    assert body["reason"] == "timeout"
    assert time.monotonic() - started < 4.5  # the read timeout (2 s), not the upstream's 5 s


def test_stalled_stream_is_cut_after_the_read_timeout(p: Proxied, lease: str) -> None:
    started = time.monotonic()
    with loopback.stream(
        "GET", p.url("/stall?delay=8"), headers=bearer(lease), timeout=30
    ) as answer:
        assert answer.status_code == 200
        chunks = answer.iter_raw()
        assert next(chunks) == b"data: first\n\n"
        # A cut connection, not a clean end: a truncated stream must not pass for whole.
        with pytest.raises(httpx.RemoteProtocolError):
            b"".join(chunks)

    # Cut by keyfob's 2 s read timeout, well before the upstream's 8 s stall ends.
    assert time.monotonic() - started < 6


# -- streaming -----------------------------------------------------------------------------


def test_sse_is_unbuffered_and_never_compressed(
    p: Proxied, lease: str, upstream: FakeUpstream
) -> None:
    marker = unique("sse")
    headers = {**bearer(lease), "Accept-Encoding": "gzip, br"}

    with loopback.stream("GET", p.url(f"/{marker}/sse?events=3"), headers=headers) as answer:
        raw = b"".join(answer.iter_raw())

    assert answer.status_code == 200
    assert answer.headers["x-accel-buffering"] == "no"
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert "content-encoding" not in answer.headers
    assert raw.count(b"data: ") == 3
    assert CANARY.encode() not in raw
    (seen,) = [s for s in upstream.seen if marker in s.path]
    assert [v for k, v in seen.headers if k.lower() == "accept-encoding"] == ["identity"]


def test_chunked_upload_arrives_intact(
    p: Proxied, lease: str, upstream: FakeUpstream, operator: httpx.Client
) -> None:
    marker = unique("upload")
    payload = bytes(range(256)) * 4096  # 1 MiB

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(payload), 64 * 1024):
            yield payload[start : start + 64 * 1024]

    answer = loopback.post(
        p.url(f"/echo/{marker}"), content=pieces(), headers=bearer(lease), timeout=60
    )

    assert answer.status_code == 200, answer.text[:500]
    (seen,) = [s for s in upstream.seen if marker in s.path]
    assert seen.body == payload
    record = proxy_record(operator, answer.headers["x-keyfob-request-id"])
    assert record["details"]["bytes_up"] == len(payload)


def test_head(p: Proxied, lease: str, upstream: FakeUpstream) -> None:
    marker = unique("head")

    answer = loopback.head(p.url(f"/echo/{marker}"), headers=bearer(lease), timeout=30)

    assert answer.status_code == 200
    assert answer.content == b""
    assert [s.method for s in upstream.seen if marker in s.path] == ["HEAD"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_returned_not_followed(
    p: Proxied, lease: str, listener: Listener, status: int
) -> None:
    to = f"{listener.url}/steal"

    answer = loopback.get(
        p.url("/redirect"), params={"to": to, "status": status}, headers=bearer(lease), timeout=30
    )

    assert answer.status_code == status
    assert answer.headers["location"] == to
    assert CANARY not in str(answer.headers)
    assert listener.connections == 0


def test_agent_hanging_up_mid_stream_stops_the_upstream_read(
    p: Proxied, lease: str, operator: httpx.Client
) -> None:
    with loopback.stream(
        "GET", p.url("/sse?events=100&delay=0.05"), headers=bearer(lease), timeout=30
    ) as answer:
        rid = answer.headers["x-keyfob-request-id"]
        first = next(answer.iter_raw())
    assert first.startswith(b"id: 0")

    record = proxy_record(operator, rid, wait=8)

    assert record["details"]["error"] == "client_disconnected", record
    # Well short of the 100 events x 0.05 s the whole stream would take.
    assert record["details"]["duration_ms"] < 4000


# -- audit ---------------------------------------------------------------------------------


def test_each_request_leaves_a_use_then_an_outcome(
    p: Proxied, lease: str, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    marker = unique("pair")
    body = b'{"hello": "upstream"}'

    sent = time.monotonic()
    answer = loopback.post(
        p.url(f"/echo/{marker}?token={QUERY_SECRET}&model=m1"),
        content=body,
        headers={**bearer(lease), "content-type": "application/json"},
        timeout=30,
    )
    wall_ms = (time.monotonic() - sent) * 1000

    assert answer.status_code == 200, answer.text
    assert CANARY not in answer.text  # the echoed Authorization is scrubbed
    rid = answer.headers["x-keyfob-request-id"]
    outcome = proxy_record(operator, rid)
    (use,) = [e for e in audit(operator, action="lease.use") if e["request_id"] == rid]
    assert use["seq"] < outcome["seq"]
    assert use["details"]["keys"] == ["API_KEY"]
    assert use["details"]["method"] == "POST"
    assert use["details"]["host"] == f"{upstream.host}:{upstream.port}"
    assert use["details"]["path"] == f"/echo/{marker}"
    assert use["details"]["query"] == ["token", "model"]
    assert use["target"] == f"secret_set:{p.set_path}"
    details = outcome["details"]
    assert details["status"] == 200
    assert details["bytes_up"] == len(body)
    assert details["bytes_down"] == len(answer.content)
    assert 0 < details["duration_ms"] <= wall_ms + DURATION_SLACK_MS
    assert details["scrubbed"] >= 1
    assert details["error"] is None
    assert outcome["outcome"] == "ok"

    export = operator.get("/v1/audit/export")
    assert export.status_code == 200
    assert leaks([QUERY_SECRET, CANARY], {"audit export": export.content}) == []


@pytest.mark.parametrize(
    "path",
    ["/slow?delay=0.3", "/sse?events=3&delay=0.1"],
    ids=["headers-after-300ms", "body-over-300ms"],
)
def test_outcome_duration_spans_the_upstream_exchange(
    p: Proxied, lease: str, operator: httpx.Client, path: str
) -> None:
    # The upstream takes at least 300 ms (to its headers, or to its last event); the
    # duration must count all of it, in milliseconds, and no more than the agent waited.
    sent = time.monotonic()
    answer = loopback.get(p.url(path), headers=bearer(lease), timeout=30)
    wall_ms = (time.monotonic() - sent) * 1000

    assert answer.status_code == 200, answer.text
    duration = proxy_record(operator, answer.headers["x-keyfob-request-id"])["details"]
    assert 300 <= duration["duration_ms"] <= wall_ms + DURATION_SLACK_MS, (duration, wall_ms)


@pytest.mark.slow
def test_acknowledged_request_survives_kill_9(tmp_path: Path, upstream: FakeUpstream) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    init = init_vault(settings)
    assert init.operator_token is not None
    token = init.operator_token.reveal()
    live = start_server(settings, token, tmp_path / "one.log")
    try:
        with httpx.Client(base_url=live.url, headers=bearer(token), timeout=30) as op:
            target = proxied(op, local_profile(upstream))
            answer = loopback.get(
                target.url("/echo/crash"), headers=bearer(target.lease()), timeout=30
            )
            assert answer.status_code == 200
            live.process.send_signal(signal.SIGKILL)
            live.process.wait(timeout=10)
    finally:
        live.stop()
    rid = answer.headers["x-keyfob-request-id"]

    again = start_server(settings, token, tmp_path / "two.log")
    try:
        with httpx.Client(base_url=again.url, headers=bearer(token), timeout=30) as op:
            uses = [e for e in audit(op, action="lease.use") if e["request_id"] == rid]
            verify = op.get("/v1/audit/verify").json()
    finally:
        again.stop()
    assert len(uses) == 1
    assert uses[0]["details"]["path"] == "/echo/crash"
    assert verify["ok"] is True, verify


def test_audit_chain_verifies_after_all_of_it(
    operator: httpx.Client, small: tuple[Proxied, str], limited: LiveServer
) -> None:
    verify = operator.get("/v1/audit/verify")
    assert verify.status_code == 200
    assert verify.json()["ok"] is True, verify.json()
    with httpx.Client(base_url=limited.url, headers=bearer(limited.operator_token)) as op:
        other = op.get("/v1/audit/verify").json()
    assert other["ok"] is True, other
