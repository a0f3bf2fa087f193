"""HTTPS on keyfob's listener: ``init --self-signed``, real clients (httpx, curl), a
certificate reloaded on SIGHUP without dropping an open connection, and clear errors for a
bad pair at start-up and at reload."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyfob import sdk
from keyfob.app.tls import ServerTls
from keyfob.crypto import self_signed
from keyfob.errors import ConfigurationError
from keyfob.mcp.config import McpConfig
from keyfob.secret import Secret
from tests.conftest import CANARY
from tests.proxy.factories import local_profile
from tests.support import zygote
from tests.support.cli import invoke
from tests.support.hashing import hashing_env
from tests.support.server import free_port
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.slow  # servers or commands in child processes, seconds each

HOSTS = ["localhost", "127.0.0.1"]


def env(data_dir: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KEYFOB_")}
    return {**base, **hashing_env(), "KEYFOB_DATA_DIR": str(data_dir), **extra}


def keyfob(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return zygote.run_module("keyfob.cli", args, env=environ, timeout=120, text=True)


def pair(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = self_signed(HOSTS, days=1, now=datetime.datetime.now(datetime.UTC))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.cert").write_bytes(cert)
    (directory / f"{name}.key").write_bytes(key)
    return directory / f"{name}.cert", directory / f"{name}.key"


def install(source: tuple[Path, Path], target: tuple[Path, Path]) -> None:
    """Replace the served files the way certbot does: new files renamed into place."""
    for src, dst in zip(source, target, strict=True):
        tmp = dst.with_suffix(".new")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def fingerprint(pem: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.read_text())).hexdigest()


def trusting(*certs: Path) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for cert in certs:
        context.load_verify_locations(cafile=str(cert))
    return context


def connect(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def get_healthz(sock: ssl.SSLSocket) -> bytes:
    """One keep-alive HTTP/1.1 request on ``sock``; the response body."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        body += sock.recv(4096)
    return body


def served_fingerprint(port: int, context: ssl.SSLContext) -> str:
    with connect(port, context) as sock:
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        return hashlib.sha256(der).hexdigest()


def curl(port: int, cacert: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            str(cacert),
            f"https://127.0.0.1:{port}/healthz",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def start(
    tmp_path: Path, **extra: str
) -> tuple[subprocess.Popen[bytes], int, Path, Path, Path, str]:
    """``keyfob init --self-signed``, then ``keyfob serve`` over HTTPS with that pair."""
    data = tmp_path / "data"
    made = keyfob("init", "--self-signed", "--json", environ=env(data))
    assert made.returncode == 0, made.stderr
    init = json.loads(made.stdout)
    cert, key = Path(init["tls"]["cert"]), Path(init["tls"]["key"])
    assert cert.stat().st_mode & 0o777 == 0o600
    assert key.stat().st_mode & 0o777 == 0o600
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "keyfob.cli", "serve", "--port", str(port)],
            env=env(data, KEYFOB_TLS_CERT=str(cert), KEYFOB_TLS_KEY=str(key), **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    context = trusting(cert)  # once: a new context per try costs more than the try
    while True:
        if process.poll() is not None:
            raise AssertionError(log.read_text())
        try:
            httpx.get(f"https://127.0.0.1:{port}/healthz", verify=context, timeout=2)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                stop(process)
                raise AssertionError(log.read_text()) from None
            time.sleep(0.1)
    return process, port, cert, key, log, init["operator_token"]


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path, Path, Path]]:
    process, port, cert, key, log, _ = start(tmp_path)
    try:
        yield process, port, cert, key, log
    finally:
        stop(process)


def test_https_with_a_certificate_reloaded_on_sighup(
    served: tuple[subprocess.Popen[bytes], int, Path, Path, Path], tmp_path: Path
) -> None:
    process, port, cert, key, log = served
    first = tmp_path / "first.cert"
    shutil.copyfile(cert, first)
    assert "https://127.0.0.1" in log.read_text()

    # Real clients: httpx and curl, each trusting only the self-signed certificate.
    answer = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trusting(first))
    assert answer.json() == {"status": "ok"}
    assert json.loads(curl(port, first).stdout) == {"status": "ok"}

    second = pair(tmp_path, "second")
    kept_open = connect(port, trusting(first))
    assert get_healthz(kept_open) == b'{"status":"ok"}'

    install(second, (cert, key))
    os.kill(process.pid, signal.SIGHUP)
    # One trust anchor per context: the two certificates share a subject name, and
    # OpenSSL looks an issuer up by name.
    new = trusting(second[0])
    deadline = time.monotonic() + 10
    while True:
        try:
            assert served_fingerprint(port, new) == fingerprint(second[0])
            break
        except ssl.SSLError:
            assert time.monotonic() < deadline, f"not reloaded:\n{log.read_text()}"
            time.sleep(0.1)
    # New connections get the new certificate; curl trusting only the old one fails.
    assert json.loads(curl(port, second[0]).stdout) == {"status": "ok"}
    assert curl(port, first).returncode != 0
    # The connection opened before the reload was not dropped: same certificate, answers.
    assert get_healthz(kept_open) == b'{"status":"ok"}'
    old = kept_open.getpeercert(binary_form=True)
    assert old is not None
    assert hashlib.sha256(old).hexdigest() == fingerprint(first)
    kept_open.close()

    # A bad pair on reload: logged, and the live certificate stays.
    third, fourth = pair(tmp_path, "third"), pair(tmp_path, "fourth")
    install((third[0], fourth[1]), (cert, key))
    os.kill(process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "TLS reload failed" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    assert "does not belong to the certificate" in log.read_text()
    assert served_fingerprint(port, new) == fingerprint(second[0])
    assert process.poll() is None


def test_a_bad_pair_stops_start_up_with_a_clear_error(tmp_path: Path) -> None:
    one, other = pair(tmp_path, "one"), pair(tmp_path, "other")
    with pytest.raises(ConfigurationError, match="does not belong to the certificate"):
        ServerTls(one[0], other[1])
    with pytest.raises(ConfigurationError, match="cannot read the TLS key file"):
        ServerTls(one[0], tmp_path / "missing.key")
    with pytest.raises(ConfigurationError, match="cannot read the TLS certificate file"):
        ServerTls(tmp_path / "missing.cert", one[1])
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigurationError, match="not a PEM certificate"):
        ServerTls(garbage, one[1])
    # keyfob serve says so and exits 1 before it listens.
    data = tmp_path / "data"
    assert keyfob("init", environ=env(data)).returncode == 0
    port = free_port()
    failed = keyfob(
        "serve",
        "--port",
        str(port),
        environ=env(data, KEYFOB_TLS_CERT=str(one[0]), KEYFOB_TLS_KEY=str(other[1])),
    )
    assert failed.returncode == 1
    assert "does not belong to the certificate" in failed.stderr
    assert "Traceback" not in failed.stderr
    half = keyfob("serve", "--port", str(port), environ=env(data, KEYFOB_TLS_CERT=str(one[0])))
    assert half.returncode == 1
    assert "KEYFOB_TLS_CERT and KEYFOB_TLS_KEY go together" in half.stderr


def issue_ca(directory: Path) -> tuple[Path, Any, Any]:
    """A CA for agents' client certificates: its PEM path, key and certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyfob test agents CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / "agents-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def issue_client(directory: Path, ca_key: Any, ca_cert: Any, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_an_agent_bound_to_a_client_certificate_needs_that_certificate(tmp_path: Path) -> None:
    ca_path, ca_key, ca_cert = issue_ca(tmp_path)
    right = issue_client(tmp_path, ca_key, ca_cert, "agent-right")
    wrong = issue_client(tmp_path, ca_key, ca_cert, "agent-wrong")
    upstream = FakeUpstream().start()
    process, port, server_cert, _, log, operator_token = start(
        tmp_path, KEYFOB_TLS_CLIENT_CA=str(ca_path)
    )
    base = f"https://127.0.0.1:{port}"

    def agent_tls(client: tuple[Path, Path] | None) -> ssl.SSLContext:
        context = trusting(server_cert)
        if client is not None:
            context.load_cert_chain(*client)
        return context

    try:
        with httpx.Client(
            base_url=base,
            verify=trusting(server_cert),
            headers={"Authorization": f"Bearer {operator_token}"},
        ) as operator:
            set_path = "generic/test/mtls"
            created = operator.post(
                "/v1/secret-sets",
                json={
                    "provider": "generic",
                    "environment": "test",
                    "name": "mtls",
                    "entries": {"API_KEY": CANARY},
                    "profile": local_profile(upstream),
                },
            )
            assert created.status_code == 201, created.text
            agent = operator.post(
                "/v1/agents",
                json={"name": "pinned", "client_cert_sha256": fingerprint(right[0])},
            )
            assert agent.status_code == 201, agent.text
            assert agent.json()["client_cert_sha256"] == fingerprint(right[0])
            token = agent.json()["token"]
            granted = operator.post(
                "/v1/grants",
                json={"agent": "pinned", "secret_set": set_path, "scopes": ["workflow"]},
            )
            assert granted.status_code == 201, granted.text

            def mint(client: tuple[Path, Path] | None) -> httpx.Response:
                return httpx.post(
                    f"{base}/v1/leases",
                    json={"secret_set": set_path, "scope": "workflow"},
                    headers={"Authorization": f"Bearer {token}"},
                    verify=agent_tls(client),
                )

            # The right token without a certificate, or with another trusted one: refused.
            assert mint(None).status_code == 401
            assert mint(wrong).status_code == 401
            minted = mint(right)
            assert minted.status_code == 201, minted.text
            lease = {"Authorization": f"Bearer {minted.json()['token']}"}
            url = f"{base}/proxy/{set_path}/echo"
            refused = httpx.get(url, headers=lease, verify=agent_tls(wrong))
            assert refused.status_code == 403
            assert refused.json()["reason"] == "certificate_required"
            assert httpx.get(url, headers=lease, verify=agent_tls(None)).status_code == 403
            assert httpx.get(url, headers=lease, verify=agent_tls(right)).status_code == 200
            # curl, as an agent would: the wrong certificate is refused, the right one works.
            for client, status in ((wrong, "403"), (right, "200")):
                answer = subprocess.run(
                    [
                        "curl",
                        "-sS",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "--max-time",
                        "10",
                        "--cacert",
                        str(server_cert),
                        "--cert",
                        str(client[0]),
                        "--key",
                        str(client[1]),
                        "-H",
                        f"Authorization: {lease['Authorization']}",
                        url,
                    ],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
                assert answer.stdout == status, answer.stderr
            failed = operator.get("/v1/audit", params={"action": "auth.failed"}).json()["items"]
            reasons = [e["details"]["reason"] for e in failed]
            assert reasons.count("certificate_required") == 2
            denies = operator.get("/v1/audit", params={"action": "lease.deny"}).json()["items"]
            assert [e["details"]["reason"] for e in denies] == ["certificate_required"] * 3
            # The operator needed no certificate, and no fingerprint is a secret; the
            # canary never came back.
            assert CANARY not in log.read_text()
    finally:
        stop(process)
        upstream.stop()


def test_the_cli_and_the_sdk_trust_a_self_signed_keyfob_through_keyfob_ca_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = FakeUpstream().start()
    process, port, cert, _, _, operator_token = start(tmp_path)
    addr = f"https://127.0.0.1:{port}"
    monkeypatch.delenv("KEYFOB_CA_FILE", raising=False)
    monkeypatch.setenv("KEYFOB_ADDR", addr)
    try:
        cli_env = {"KEYFOB_TOKEN": operator_token}
        # Without KEYFOB_CA_FILE the certificate is not trusted, and the error says what to set.
        refused = invoke(["token", "list", "--json"], env=cli_env)
        assert refused.exit_code == 1
        assert refused.stderr == (
            f"error: cannot verify the TLS certificate of keyfob at {addr}: self-signed "
            "certificate; set KEYFOB_CA_FILE to the CA certificate that signed it (after "
            "`keyfob init --self-signed`: <data dir>/tls/cert.pem)\n"
        )
        listed = invoke(["token", "list", "--json"], env={**cli_env, "KEYFOB_CA_FILE": str(cert)})
        assert listed.exit_code == 0, listed.stderr
        assert json.loads(listed.stdout)["items"]
        missing = tmp_path / "missing.pem"
        unusable = invoke(["token", "list"], env={**cli_env, "KEYFOB_CA_FILE": str(missing)})
        assert unusable.exit_code == 1
        assert unusable.stderr == (
            f"error: cannot use {missing} as the CA file (KEYFOB_CA_FILE): "
            "No such file or directory\n"
        )

        # The SDK reads the same variable: the operator and agent clients, and the proxy
        # route's client, which talks to the same server.
        with (
            sdk.OperatorClient(token=operator_token) as untrusting,
            pytest.raises(sdk.Unreachable, match=r"TLS .*: self-signed certificate; set KEYFOB_CA"),
        ):
            untrusting.sets()
        # Or its clients' ca_file= argument, which the clients made from them keep: the
        # proxy route's, and the asyncio twin that LeaseAuth makes of a sync agent.
        with sdk.OperatorClient(token=operator_token, ca_file=cert) as operator:
            operator.create_set(
                "generic/test/tls", {"API_KEY": CANARY}, profile=local_profile(upstream)
            )
            agent_token = operator.create_agent("tls-agent")["token"].reveal()
            operator.grant("tls-agent", "generic/test/tls", scopes=["request", "workflow"])
        with (
            sdk.AgentClient(token=agent_token, ca_file=str(cert)) as agent,
            sdk.http_client("generic/test/tls", agent=agent) as client,
        ):
            assert client.get("/echo").status_code == 200
            twin = sdk.LeaseAuth("generic/test/tls", agent=agent)

            async def through_the_twin() -> int:
                async with httpx.AsyncClient(auth=twin, verify=agent.verify) as aclient:
                    answer = await aclient.get(agent.proxy_url("generic/test/tls") + "/echo")
                await twin.async_agent.aclose()
                return answer.status_code

            assert asyncio.run(through_the_twin()) == 200
        monkeypatch.setenv("KEYFOB_CA_FILE", str(cert))
        with sdk.http_client("generic/test/tls", token=agent_token) as client:
            answer = client.get("/echo")
        assert answer.status_code == 200, answer.text
        assert upstream.seen[-1].header("authorization") == f"Bearer {CANARY}"
        # keyfob run: CMD calls the proxy route itself, trusting the CA through the
        # bundle variables its environment gets (httpx reads SSL_CERT_FILE).
        status = tmp_path / "status"
        child = (
            "import httpx, os, sys; "
            "url = os.environ['KEYFOB_PROXY_URL_GENERIC_TEST_TLS'] + '/echo'; "
            "lease = os.environ['KEYFOB_LEASE_GENERIC_TEST_TLS']; "
            "answer = httpx.get(url, headers={'X-Keyfob-Lease': lease}); "
            "open(sys.argv[1], 'w').write(str(answer.status_code))"
        )
        ran = invoke(
            ["run", "--set", "generic/test/tls", "--", sys.executable, "-c", child, str(status)],
            env={"KEYFOB_TOKEN": agent_token},
        )
        assert ran.exit_code == 0, ran.output
        assert status.read_text() == "200"
        monkeypatch.setenv("KEYFOB_CA_FILE", str(missing))
        with pytest.raises(sdk.InvalidRequest, match=r"cannot use .* as the CA file \(KEYFOB_CA"):
            sdk.AgentClient(token=agent_token)
        with pytest.raises(sdk.InvalidRequest, match=r"cannot use .* as the CA file \(ca_file="):
            sdk.AgentClient(token=agent_token, ca_file=missing)
        with sdk.AgentClient(token=agent_token, ca_file=cert) as agent:  # wins over the variable
            assert [g.secret_set for g in agent.grants()] == ["generic/test/tls"]
    finally:
        stop(process)
        upstream.stop()


async def mcp_echo(addr: str, agent_token: str, set_path: str) -> int:
    from keyfob.mcp.server import KeyfobTools  # the mcp SDK: ~1 s to import, so only here

    tools = KeyfobTools(McpConfig(addr, Secret(agent_token)))
    try:
        answer = await tools.http_request(set_path, "GET", "echo", None, None)
    finally:
        await tools.aclose()
    status: int = answer["status"]
    return status


def test_an_agent_bound_to_a_certificate_presents_it_through_keyfob_client_cert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca_path, ca_key, ca_cert = issue_ca(tmp_path)
    cert, key = issue_client(tmp_path, ca_key, ca_cert, "agent-bound")
    upstream = FakeUpstream().start()
    process, port, server_cert, _, _, operator_token = start(
        tmp_path, KEYFOB_TLS_CLIENT_CA=str(ca_path)
    )
    for name in ("KEYFOB_CLIENT_CERT", "KEYFOB_CLIENT_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KEYFOB_ADDR", f"https://127.0.0.1:{port}")
    monkeypatch.setenv("KEYFOB_CA_FILE", str(server_cert))
    set_path = "generic/test/bound"
    try:
        with sdk.OperatorClient(token=operator_token) as operator:
            operator.create_set(set_path, {"API_KEY": CANARY}, profile=local_profile(upstream))
            agent_token = operator.create_agent("bound")["token"].reveal()
            bound = httpx.patch(
                f"https://127.0.0.1:{port}/v1/agents/bound",
                json={"client_cert_sha256": fingerprint(cert)},
                headers={"Authorization": f"Bearer {operator_token}"},
                verify=trusting(server_cert),
            )
            assert bound.json()["client_cert_sha256"] == fingerprint(cert)
            operator.grant("bound", set_path)
        # Without the certificate the agent's token is refused.
        with (
            sdk.AgentClient(token=agent_token) as bare,
            pytest.raises(sdk.AuthenticationFailed),
        ):
            bare.mint_lease(set_path)
        refused = invoke(["lease", "mint", "--set", set_path], env={"KEYFOB_TOKEN": agent_token})
        assert refused.exit_code == 1
        # With it as the clients' arguments (the variables unset), the SDK mints and calls
        # through the proxy route.
        with (
            sdk.AgentClient(token=agent_token, client_cert=cert, client_key=key) as agent,
            sdk.http_client(set_path, agent=agent) as client,
        ):
            assert client.get("/echo").status_code == 200
        # With it in the variables (key in its own file), the SDK mints and calls through
        # the proxy route, and the CLI mints.
        monkeypatch.setenv("KEYFOB_CLIENT_CERT", str(cert))
        monkeypatch.setenv("KEYFOB_CLIENT_KEY", str(key))
        with sdk.http_client(set_path, token=agent_token) as client:
            answer = client.get("/echo")
        assert answer.status_code == 200, answer.text
        assert upstream.seen[-1].header("authorization") == f"Bearer {CANARY}"
        minted = invoke(
            ["lease", "mint", "--set", set_path, "--json"], env={"KEYFOB_TOKEN": agent_token}
        )
        assert minted.exit_code == 0, minted.stderr
        assert json.loads(minted.stdout)["token"].startswith("kfl_")
        assert CANARY not in minted.output
        # keyfob mcp's tools: minting and the proxied request both present it.
        assert asyncio.run(mcp_echo(f"https://127.0.0.1:{port}", agent_token, set_path)) == 200
    finally:
        stop(process)
        upstream.stop()
