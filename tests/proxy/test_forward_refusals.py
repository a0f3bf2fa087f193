"""The forward proxy's bad input: each refused with a clear reason and audited, and
nothing reaches a host the lease's sets do not name."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import CANARY
from tests.proxy.forwarding import (
    BADCERT_HOST,
    GIT_CANARY,
    GIT_HOST,
    OPENAI_HOST,
    OTHER_HOST,
    PLACEHOLDER,
    Forward,
    build,
)


@pytest.fixture(scope="module")
def fwd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forward]:
    yield from build(tmp_path_factory.mktemp("forward"))


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _problem(answer: bytes) -> dict[str, object]:
    body: dict[str, object] = json.loads(answer.partition(b"\r\n\r\n")[2])
    return body


def _intercepted(fwd: Forward, sock: socket.socket, host: str = OPENAI_HOST) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(fwd.bundle))
    return context.wrap_socket(sock, server_hostname=host)


def _exchange(tls: ssl.SSLSocket, request: bytes) -> bytes:
    tls.sendall(request)
    answer = b""
    while True:
        try:
            chunk = tls.recv(65536)
        except (ssl.SSLError, OSError):
            break
        if not chunk:
            break
        answer += chunk
        if b"\r\n\r\n" in answer:
            head, _, body = answer.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                None,
            )
            if length is not None and len(body) >= length:
                break
    return answer


def test_no_proxy_authorization_is_407_with_a_challenge(fwd: Forward) -> None:
    sock, answer = fwd.connect(f"{OPENAI_HOST}:443")
    sock.close()
    assert _status(answer) == 407
    assert b'proxy-authenticate: basic realm="keyfob"' in answer.lower()
    assert _problem(answer)["type"] == "urn:keyfob:problem:proxy-auth-required"
    failed = fwd.audit(action="auth.failed")
    assert failed[-1]["target"] == "route:forward-proxy"
    assert failed[-1]["details"]["reason"] == "missing"


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        ("Basic " + "a2V5Zm9iOmtmbF9ub3BlCg==", "malformed"),
        (None, "unknown"),  # a well-formed lease nobody minted
        ("Bearer x", "missing"),
    ],
)
def test_a_wrong_credential_is_407(fwd: Forward, auth: str | None, reason: str) -> None:
    if auth is None:
        auth = fwd.proxy_auth("kfl_" + "A" * 43)
    sock, answer = fwd.connect(f"{OPENAI_HOST}:443", auth)
    sock.close()
    assert _status(answer) == 407
    assert fwd.audit(action="auth.failed")[-1]["details"]["reason"] == reason


def test_a_revoked_credential_is_407_and_its_sets_leases_are_revoked(fwd: Forward) -> None:
    minted = fwd.mint([fwd.openai_set])
    assert minted.status_code == 201, minted.text
    revoked = fwd.operator.delete(f"/v1/leases/{minted.json()['id']}")
    assert revoked.status_code == 200, revoked.text
    sock, answer = fwd.connect(f"{OPENAI_HOST}:443", fwd.proxy_auth(minted.json()["token"]))
    sock.close()
    assert _status(answer) == 407
    assert fwd.audit(action="auth.failed")[-1]["details"]["reason"] == "revoked"
    leases = fwd.operator.get("/v1/leases", params={"all": "true"}).json()["items"]
    child = minted.json()["leases"][0]["id"]
    assert next(item for item in leases if item["id"] == child)["status"] == "revoked"


@pytest.mark.parametrize(
    "target", ["169.254.169.254:80", "127.0.0.1:443", "[::1]:443", "0x7f.1:443"]
)
def test_connect_to_an_ip_literal_is_refused(fwd: Forward, target: str) -> None:
    sock, answer = fwd.connect(target, fwd.proxy_auth())
    sock.close()
    assert _status(answer) == 403
    assert _problem(answer)["reason"] == "ip_literal"
    assert fwd.audit(action="forward.deny")[-1]["details"]["reason"] == "ip_literal"


def test_connect_to_a_name_of_a_private_address_is_refused(fwd: Forward) -> None:
    sock, answer = fwd.connect("localhost:443", fwd.proxy_auth())
    sock.close()
    assert _status(answer) == 403
    assert _problem(answer)["reason"] == "destination_refused"
    denied = fwd.audit(action="forward.deny")[-1]
    assert denied["target"] == "host:localhost:443"
    assert denied["details"]["address_class"] == "loopback"


def test_a_request_for_another_host_inside_the_tunnel_is_refused(fwd: Forward) -> None:
    fwd.upstream.clear()
    sock, answer = fwd.connect(f"{OPENAI_HOST}:443", fwd.proxy_auth())
    assert _status(answer) == 200
    with _intercepted(fwd, sock) as tls:
        answer = _exchange(tls, b"GET /v1/echo HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    assert _status(answer) == 421
    assert _problem(answer)["reason"] == "host_mismatch"
    assert fwd.upstream.seen == []
    assert fwd.audit(action="forward.deny")[-1]["details"]["reason"] == "host_mismatch"


@pytest.mark.parametrize(
    ("framing", "reasons"),
    [
        (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", {"smuggling"}),
        # h11 itself may refuse this one before keyfob's own check sees it.
        (
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            {"smuggling", "bad_request"},
        ),
    ],
)
def test_smuggling_inside_the_tunnel_is_refused(
    fwd: Forward, framing: bytes, reasons: set[str]
) -> None:
    fwd.upstream.clear()
    before = len(fwd.audit(action="forward.deny"))
    sock, answer = fwd.connect(f"{OPENAI_HOST}:443", fwd.proxy_auth())
    with _intercepted(fwd, sock) as tls:
        request = (
            b"POST /v1/echo HTTP/1.1\r\nHost: "
            + OPENAI_HOST.encode()
            + b"\r\n"
            + framing
            + b"\r\n0\r\n\r\n"
        )
        answer = _exchange(tls, request)
    assert _status(answer) == 400
    assert fwd.upstream.seen == []
    denied = fwd.audit(action="forward.deny")
    assert len(denied) == before + 1
    assert denied[-1]["details"]["reason"] in reasons


def test_credentials_the_client_sends_in_the_tunnel_are_dropped(fwd: Forward) -> None:
    """A lease, key or cookie of the client's own never reaches the upstream, nor
    displaces the set's lease."""
    fwd.upstream.clear()
    sock, _ = fwd.connect(f"{OPENAI_HOST}:443", fwd.proxy_auth())
    with _intercepted(fwd, sock) as tls:
        answer = _exchange(
            tls,
            f"GET /v1/echo HTTP/1.1\r\nHost: {OPENAI_HOST}\r\n"
            f"X-Keyfob-Lease: kfl_{'B' * 43}\r\nx-api-key: {PLACEHOLDER}\r\n"
            "Cookie: session=1\r\nConnection: close\r\n\r\n".encode(),
        )
    assert _status(answer) == 200, answer
    seen = fwd.upstream.seen[-1]
    assert seen.header("authorization") == f"Bearer {CANARY}"
    assert seen.header("x-api-key") is None
    assert seen.header("cookie") is None
    assert seen.header("x-keyfob-lease") is None


def test_a_path_outside_the_sets_base_url_is_refused(fwd: Forward) -> None:
    fwd.upstream.clear()
    sock, _ = fwd.connect(f"{GIT_HOST}:443", fwd.proxy_auth())
    with _intercepted(fwd, sock, GIT_HOST) as tls:
        answer = _exchange(
            tls, f"GET /elsewhere/info/refs HTTP/1.1\r\nHost: {GIT_HOST}\r\n\r\n".encode()
        )
    assert _status(answer) == 400
    assert _problem(answer)["reason"] == "outside_base_path"
    assert fwd.upstream.seen == []


def test_a_client_that_does_not_trust_the_ca_fails_the_handshake_audited(fwd: Forward) -> None:
    fwd.upstream.clear()
    sock, answer = fwd.connect(f"{OPENAI_HOST}:443", fwd.proxy_auth())
    assert _status(answer) == 200
    context = ssl.create_default_context(cafile=str(fwd.pki.ca_file))  # not keyfob's CA
    with pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(sock, server_hostname=OPENAI_HOST)
    sock.close()
    # The server records the failure when its side of the handshake gives up.
    failed = fwd.audit_until(action="forward.tls_failed")
    assert failed[-1]["target"] == f"host:{OPENAI_HOST}:443"
    assert fwd.upstream.seen == []


def test_other_hosts_are_tunnelled_untouched_and_audited(fwd: Forward) -> None:
    fwd.upstream.clear()
    sock, answer = fwd.connect(f"{OTHER_HOST}:443", fwd.proxy_auth())
    assert _status(answer) == 200
    # The upstream's own certificate comes through: keyfob does not intercept.
    context = ssl.create_default_context(cafile=str(fwd.pki.ca_file))
    with context.wrap_socket(sock, server_hostname=OTHER_HOST) as tls:
        answer = _exchange(
            tls,
            f"GET /echo HTTP/1.1\r\nHost: {OTHER_HOST}\r\nAuthorization: Bearer {PLACEHOLDER}"
            "\r\nConnection: close\r\n\r\n".encode(),
        )
    assert _status(answer) == 200
    assert fwd.upstream.seen[-1].header("authorization") == f"Bearer {PLACEHOLDER}"
    # The close record follows the upstream's hang-up, on the server's own time.
    records = fwd.audit_until(
        lambda found: bool(found) and found[-1]["details"]["stage"] == "close",
        action="forward.tunnel",
        target=f"host:{OTHER_HOST}:443",
    )
    assert [r["details"]["stage"] for r in records[-2:]] == ["open", "close"]
    assert records[-1]["details"]["bytes_up"] > 0
    assert records[-1]["details"]["bytes_down"] > 0


def test_egress_deny_refuses_other_hosts(fwd: Forward) -> None:
    fwd.upstream.clear()
    changed = fwd.operator.post(f"/v1/agents/{fwd.agent_name}/egress", json={"egress": "deny"})
    assert changed.status_code == 200, changed.text
    try:
        sock, answer = fwd.connect(f"{OTHER_HOST}:443", fwd.proxy_auth())
        sock.close()
        # The sets' own hosts are still intercepted.
        sock, granted = fwd.connect(f"{OPENAI_HOST}:443", fwd.proxy_auth())
        sock.close()
    finally:
        fwd.operator.post(f"/v1/agents/{fwd.agent_name}/egress", json={"egress": "tunnel"})
    assert _status(answer) == 403
    assert _problem(answer)["reason"] == "egress_denied"
    assert _status(granted) == 200
    assert fwd.upstream.seen == []
    assert fwd.audit(action="forward.deny")[-1]["details"]["reason"] == "egress_denied"


def test_an_unknown_egress_policy_is_refused(fwd: Forward) -> None:
    answer = fwd.operator.post(f"/v1/agents/{fwd.agent_name}/egress", json={"egress": "open"})
    assert answer.status_code == 422


def test_a_multi_set_lease_over_overlapping_hosts_is_refused(fwd: Forward) -> None:
    provider, environment, name = fwd.openai_set.split("/")
    twin = f"{provider}/{environment}/{name}twin"
    profile = fwd.operator.get(f"/v1/secret-sets/{fwd.openai_set}").json()["profile"]
    created = fwd.operator.post(
        "/v1/secret-sets",
        json={
            "provider": provider,
            "environment": environment,
            "name": f"{name}twin",
            "entries": {"OPENAI_API_KEY": "other"},
            "profile": profile,
        },
    )
    assert created.status_code == 201, created.text
    granted = fwd.operator.post(
        "/v1/grants",
        json={"agent": fwd.agent_name, "secret_set": twin, "scopes": ["workflow"]},
    )
    assert granted.status_code == 201, granted.text
    before = len(fwd.audit(action="lease.mint"))
    answer = fwd.mint([fwd.openai_set, twin])
    assert answer.status_code == 409
    assert answer.json()["reason"] == "hosts_overlap"
    assert len(fwd.audit(action="lease.mint")) == before


def test_a_multi_set_lease_needs_workflow_scope(fwd: Forward) -> None:
    answer = fwd.mint([fwd.openai_set], scope="request")
    assert answer.status_code == 422


def test_the_canary_is_in_no_log_audit_or_output(fwd: Forward) -> None:
    """After the clients and refusals above: keyfob's log and the audit export hold
    neither the set's values nor the proxy credential."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import httpx; print(httpx.get('https://api.openai.com/v1/echo').text)",
        ],
        env=fwd.child_env(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    output = (done.stdout + done.stderr).decode()
    exported = fwd.operator.get("/v1/audit/export").text
    log = fwd.server.log_text()
    for secret in (CANARY, GIT_CANARY, fwd.credential):
        assert secret not in output
        assert secret not in exported
        assert secret not in log
    # The child holds the proxy credential (that is its job) and nothing else of value.
    for value in (CANARY, GIT_CANARY):
        assert value not in json.dumps(fwd.child_env())
    assert "Bearer " + CANARY == fwd.upstream.seen[-1].header("authorization")


def test_an_expired_credential_is_407(fwd: Forward) -> None:
    minted = fwd.mint([fwd.openai_set], ttl=1)
    assert minted.status_code == 201, minted.text
    time.sleep(1.1)  # the live server's clock is the real one
    sock, answer = fwd.connect(f"{OPENAI_HOST}:443", fwd.proxy_auth(minted.json()["token"]))
    sock.close()
    assert _status(answer) == 407
    assert fwd.audit(action="auth.failed")[-1]["details"]["reason"] == "expired"


def test_an_upstream_with_a_bad_certificate_is_refused_and_audited(fwd: Forward) -> None:
    name = f"badcert/test/{fwd.agent_name}"
    provider, environment, set_name = name.split("/")
    created = fwd.operator.post(
        "/v1/secret-sets",
        json={
            "provider": provider,
            "environment": environment,
            "name": set_name,
            "entries": {"TOKEN": CANARY},
            "profile": {
                "base_url": f"https://{BADCERT_HOST}",
                "hosts": [BADCERT_HOST],
                "inject": {"kind": "bearer", "key": "TOKEN"},
            },
        },
    )
    assert created.status_code == 201, created.text
    granted = fwd.operator.post(
        "/v1/grants",
        json={"agent": fwd.agent_name, "secret_set": name, "scopes": ["workflow"]},
    )
    assert granted.status_code == 201, granted.text
    minted = fwd.mint([name])
    assert minted.status_code == 201, minted.text
    fwd.upstream.clear()
    sock, answer = fwd.connect(f"{BADCERT_HOST}:443", fwd.proxy_auth(minted.json()["token"]))
    assert _status(answer) == 200
    with _intercepted(fwd, sock, BADCERT_HOST) as tls:
        answer = _exchange(tls, f"GET /x HTTP/1.1\r\nHost: {BADCERT_HOST}\r\n\r\n".encode())
    assert _status(answer) == 502, answer
    problem = _problem(answer)
    assert (problem["type"], problem["reason"]) == ("urn:keyfob:problem:bad-gateway", "tls")
    assert fwd.upstream.seen == []  # the handshake failed: no request was sent
    # The outcome record rides the next grouped commit.
    [record] = fwd.audit_until(target=f"secret_set:{name}", action="proxy.request")
    assert (record["outcome"], record["details"]["error"]) == ("error", "tls")
    assert record["details"]["bytes_up"] == 0
    assert CANARY.encode() not in answer
