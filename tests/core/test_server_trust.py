"""How keyfob's clients verify the keyfob server: ``KEYFOB_CA_FILE`` alone when set, the
CA bundle otherwise, and for plain http a context that trusts nothing (no bundle loaded)."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import httpx
import pytest

from keyfob.crypto import self_signed
from keyfob.server_trust import UnusableCaFile, untrusted, verification


def test_a_plain_http_address_gets_a_context_that_trusts_no_certificate(tmp_path: Path):
    # Loading the bundle costs each command ~20 ms; should the client ever reach TLS
    # through this context, verification is on and fails, never skipped.
    for ca_file in (None, _certificate(tmp_path)):
        context = verification("http://127.0.0.1:8200", ca_file)
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
        assert context.cert_store_stats()["x509"] == 0


def test_https_uses_the_bundle_or_the_ca_file_alone(tmp_path: Path):
    assert verification("https://vault.example.com", None) is True  # httpx's CA bundle
    assert verification("https://vault.example.com", " ") is True
    context = verification("https://127.0.0.1:8443", _certificate(tmp_path))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509"] == 1  # that certificate, no public roots


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("missing.pem", None, "No such file or directory"),
        ("folder", "dir", "Is a directory"),
        ("notes.txt", "not a certificate\n", "no PEM certificate in it"),
    ],
)
def test_an_unusable_ca_file_is_named_with_the_reason(
    tmp_path: Path, name: str, content: str | None, reason: str
):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    with pytest.raises(UnusableCaFile) as caught:
        verification("https://127.0.0.1:8443", path)
    assert str(caught.value) == f"cannot use {path} as the CA file (KEYFOB_CA_FILE): {reason}"


def test_untrusted_finds_a_certificate_failure_under_httpx_wrapping():
    def wrapped(cause: BaseException) -> httpx.ConnectError:
        try:
            try:
                raise cause
            except OSError as exc:
                raise httpx.ConnectError(str(exc)) from exc
        except httpx.ConnectError as outer:
            return outer

    assert untrusted(wrapped(ssl.SSLCertVerificationError(1, "self-signed certificate")))
    assert not untrusted(wrapped(ConnectionRefusedError(111, "Connection refused")))
    assert not untrusted(wrapped(ssl.SSLError(1, "wrong version number")))


def _certificate(directory: Path) -> Path:
    now = datetime.datetime.now(datetime.UTC)
    cert, _ = self_signed(["127.0.0.1"], days=1, now=now)
    path = directory / "cert.pem"
    path.write_bytes(cert)
    return path
