"""Upstream TLS is verified: the certificate must chain to a trusted CA and name the host."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from keyfob.app.bootstrap import init_vault
from keyfob.proxy.egress import Egress
from keyfob.settings import Settings
from tests.conftest import CANARY
from tests.proxy.factories import BEARER, proxied
from tests.support import loopback
from tests.support.certs import TestCa
from tests.support.http import assert_problem
from tests.support.server import LiveServer, serve_in_thread
from tests.support.upstream import FakeUpstream


@dataclass
class Pki:
    ca_file: Path
    with_ip: ssl.SSLContext
    dns_only: ssl.SSLContext


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA, and two server certificates: DNS+IP names, and DNS only."""
    ca = TestCa(tmp_path_factory.mktemp("pki"))
    return Pki(
        ca.ca_file,
        ca.server("with-ip", ["localhost", "127.0.0.1"]),
        ca.server("dns-only", ["localhost"]),
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
    return loopback.get(
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


async def test_the_trust_store_is_loaded_at_the_first_https_request(
    pki: Pki, tls_upstream: FakeUpstream
) -> None:
    """The upstream TLS context (system store plus ``KEYFOB_UPSTREAM_CA_FILE``) is made
    just before the first HTTPS request, not with the session: a server whose upstreams
    are plain HTTP never loads the store. That context verifies: the CA file is in it."""
    plain = FakeUpstream().start()
    egress = Egress(pki.ca_file)
    try:
        session = egress.session(allow_private=True)
        async with session.get(f"{plain.url}/echo/plain") as answer:
            assert answer.status == 200
        assert egress._tls is None
        async with session.get(f"https://localhost:{tls_upstream.port}/echo/tls") as answer:
            assert answer.status == 200
        assert egress._tls is not None
        assert egress._tls.verify_mode == ssl.CERT_REQUIRED
        assert egress._tls.check_hostname
    finally:
        await egress.close()
        plain.stop()
