"""Upstream TLS is verified: the certificate must chain to a trusted CA and name the host."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keyfob.app.bootstrap import init_vault
from keyfob.settings import Settings
from tests.conftest import CANARY
from tests.proxy.factories import BEARER, proxied
from tests.support.http import assert_problem
from tests.support.server import LiveServer, serve_in_thread
from tests.support.upstream import FakeUpstream


@dataclass
class Pki:
    ca_file: Path
    with_ip: ssl.SSLContext
    dns_only: ssl.SSLContext


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_pem(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _issue(
    directory: Path,
    name: str,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    sans: list[x509.GeneralName],
) -> ssl.SSLContext:
    """A server certificate for ``sans`` signed by ``ca``, as a server-side SSL context."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = _write_pem(directory / f"{name}.pem", cert, key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pem, pem.with_suffix(".key"))
    return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA, and two server certificates: DNS+IP names, and DNS only."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("keyfob test CA"))
        .issuer_name(_name("keyfob test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = _write_pem(directory / "ca.pem", ca, ca_key)
    localhost = x509.DNSName("localhost")
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    return Pki(
        ca_file,
        _issue(directory, "with-ip", ca, ca_key, [localhost, loopback]),
        _issue(directory, "dns-only", ca, ca_key, [localhost]),
    )


@pytest.fixture(scope="module")
def tls_upstream(pki: Pki) -> Iterator[FakeUpstream]:
    fake = FakeUpstream(tls=pki.with_ip).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def dns_only_upstream(pki: Pki) -> Iterator[FakeUpstream]:
    fake = FakeUpstream(tls=pki.dns_only).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def trusting(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    tls_upstream: FakeUpstream,
    dns_only_upstream: FakeUpstream,
) -> Iterator[httpx.Client]:
    """An operator client of a keyfob server that trusts the test CA.

    It asks for the upstreams so that it stops first: a TLS upstream stopped under an open
    keep-alive connection leaves that socket unclosed (a ResourceWarning, an error here)."""
    workdir = tmp_path_factory.mktemp("tls-server")
    settings = Settings(
        data_dir=workdir / "data", upstream_ca_file=pki.ca_file, proxy_connect_timeout=5
    )
    init = init_vault(settings)
    assert init.operator_token is not None
    token = init.operator_token.reveal()
    live: LiveServer = serve_in_thread(settings, token, workdir / "server.log")
    try:
        with httpx.Client(
            base_url=live.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client:
            yield client
    finally:
        live.stop()


def tls_profile(host: str, fake: FakeUpstream) -> dict[str, object]:
    return {
        "base_url": f"https://{host}:{fake.port}",
        "hosts": [host],
        "inject": BEARER,
        "allow_private_upstream": True,
    }


def through(operator: httpx.Client, host: str, fake: FakeUpstream) -> httpx.Response:
    target = proxied(operator, tls_profile(host, fake))
    return httpx.get(
        target.url("/echo/tls"), headers={"Authorization": f"Bearer {target.lease()}"}, timeout=30
    )


def test_trusted_certificate_for_the_host(
    trusting: httpx.Client, tls_upstream: FakeUpstream
) -> None:
    tls_upstream.clear()

    answer = through(trusting, "localhost", tls_upstream)

    assert answer.status_code == 200, answer.text
    assert answer.json()["path"] == "/echo/tls"
    (seen,) = tls_upstream.seen
    assert seen.header("authorization") == f"Bearer {CANARY}"
    assert CANARY not in answer.text


def test_certificate_without_the_ip_name_is_refused(
    trusting: httpx.Client, dns_only_upstream: FakeUpstream
) -> None:
    dns_only_upstream.clear()

    answer = through(trusting, "127.0.0.1", dns_only_upstream)

    assert assert_problem(answer, 502, "bad-gateway")["reason"] == "tls"
    assert dns_only_upstream.seen == []  # the credential never went over that connection
    assert CANARY not in answer.text


def test_certificate_from_an_untrusted_ca_is_refused(
    operator: httpx.Client, tls_upstream: FakeUpstream
) -> None:
    """The shared proxy test server has no extra CA: the test CA is just self-signed."""
    tls_upstream.clear()

    answer = through(operator, "localhost", tls_upstream)

    assert assert_problem(answer, 502, "bad-gateway")["reason"] == "tls"
    assert tls_upstream.seen == []
    assert CANARY not in answer.text


@pytest.mark.parametrize(
    "base_url", ["http://api.example.com", "http://api.example.com:443", "HTTP://api.example.com"]
)
def test_plain_http_needs_the_private_upstream_flag(operator: httpx.Client, base_url: str) -> None:
    body = {
        "provider": "generic",
        "environment": "test",
        "name": "plain",
        "entries": {"API_KEY": CANARY},
        "profile": {"base_url": base_url, "hosts": ["api.example.com"], "inject": BEARER},
    }

    refused = operator.post("/v1/secret-sets", json=body)

    assert_problem(refused, 422, "validation-failed")
    assert CANARY not in refused.text
    assert operator.get("/v1/secret-sets/generic/test/plain").status_code == 404
