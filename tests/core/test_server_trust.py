"""How keyfob's clients verify the keyfob server: ``KEYFOB_CA_FILE`` alone when set, the
CA bundle otherwise, and for plain http a context that trusts nothing (no bundle loaded);
and the client certificate they present (``KEYFOB_CLIENT_CERT``/``KEYFOB_CLIENT_KEY``);
the SDK's ``ca_file=``, ``client_cert=`` and ``client_key=`` in their place."""

from __future__ import annotations

import datetime
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from keyfob.crypto import self_signed
from keyfob.server_trust import ServerTrust, UnusableTlsFile, certificate_problem

HTTPS = "https://127.0.0.1:8443"


def verification(addr: str, ca_file: Path | str | None) -> ssl.SSLContext | bool:
    return ServerTrust(Path(ca_file) if ca_file else None).verification(addr)


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
    assert ServerTrust.from_environ({"KEYFOB_CA_FILE": " "}) == ServerTrust()
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
    with pytest.raises(UnusableTlsFile) as caught:
        verification("https://127.0.0.1:8443", path)
    assert str(caught.value) == f"cannot use {path} as the CA file (KEYFOB_CA_FILE): {reason}"


def test_a_certificate_failure_is_found_under_httpx_wrapping_with_advice_where_it_helps():
    def failure(code: int, message: str) -> ssl.SSLCertVerificationError:
        error = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
        error.verify_code, error.verify_message = code, message
        return error

    def wrapped(cause: BaseException) -> httpx.ConnectError:
        try:
            try:
                raise cause
            except OSError as exc:
                raise httpx.ConnectError(str(exc)) from exc
        except httpx.ConnectError as outer:
            return outer

    advice = (
        "; set KEYFOB_CA_FILE to the CA certificate that signed it "
        "(after `keyfob init --self-signed`: <data dir>/tls/cert.pem)"
    )
    for code, message in ((18, "self-signed certificate"), (20, "unable to get local issuer")):
        assert certificate_problem(wrapped(failure(code, message))) == message + advice
    # No CA file helps with an expired certificate or one for another name.
    expired = failure(10, "certificate has expired")
    assert certificate_problem(wrapped(expired)) == "certificate has expired"
    assert certificate_problem(wrapped(ConnectionRefusedError(111, "refused"))) is None
    assert certificate_problem(wrapped(ssl.SSLError(1, "wrong version number"))) is None
    looped = httpx.ConnectError("looped")
    looped.__context__ = httpx.ConnectError("back")
    looped.__context__.__context__ = looped
    assert certificate_problem(looped) is None


def test_from_environ_reads_the_three_variables(tmp_path: Path):
    environ = {
        "KEYFOB_CA_FILE": "/etc/keyfob/ca.pem",
        "KEYFOB_CLIENT_CERT": " /etc/keyfob/agent.pem ",
        "KEYFOB_CLIENT_KEY": "/etc/keyfob/agent.key",
    }
    assert ServerTrust.from_environ(environ) == ServerTrust(
        Path("/etc/keyfob/ca.pem"), Path("/etc/keyfob/agent.pem"), Path("/etc/keyfob/agent.key")
    )


def test_the_sdk_arguments_win_over_the_variables_and_errors_name_them(tmp_path: Path):
    """``ca_file=``, ``client_cert=``, ``client_key=`` (the SDK clients' arguments) name
    the files instead of the variables; a certificate argument brings its key with it."""
    ca, (cert, key) = _certificate(tmp_path), _pair(tmp_path, "agent")
    missing = tmp_path / "missing.pem"
    environ = {
        "KEYFOB_CA_FILE": str(missing),
        "KEYFOB_CLIENT_CERT": str(missing),
        "KEYFOB_CLIENT_KEY": str(missing),
    }
    chosen = ServerTrust.from_environ(environ, ca_file=str(ca), client_cert=cert, client_key=key)
    assert chosen == ServerTrust(ca, cert, key)
    assert isinstance(chosen.verification(HTTPS), ssl.SSLContext)
    # The certificate argument alone: the key is in its file, not in KEYFOB_CLIENT_KEY.
    both = tmp_path / "both.pem"
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    alone = ServerTrust.from_environ(environ, ca_file=ca, client_cert=both)
    assert alone == ServerTrust(ca, both, None)
    assert isinstance(alone.verification(HTTPS), ssl.SSLContext)
    # Each file an error names, it names by where it came from.
    for trust, message in (
        (
            ServerTrust.from_environ(environ, ca_file=missing),
            f"cannot use {missing} as the CA file (ca_file=): No such file or directory",
        ),
        (
            ServerTrust.from_environ(environ),
            f"cannot use {missing} as the CA file (KEYFOB_CA_FILE): No such file or directory",
        ),
        (
            ServerTrust.from_environ(environ, ca_file=ca, client_cert=missing, client_key=key),
            f"cannot use {missing} and {key} as the client certificate "
            "(client_cert=, client_key=): No such file or directory",
        ),
        (
            ServerTrust.from_environ(environ, ca_file=ca),
            f"cannot use {missing} and {missing} as the client certificate "
            "(KEYFOB_CLIENT_CERT, KEYFOB_CLIENT_KEY): No such file or directory",
        ),
        (
            ServerTrust.from_environ(environ, client_key=key),
            "client_key= is set without client_cert=",
        ),
    ):
        with pytest.raises(UnusableTlsFile) as caught:
            trust.verification(HTTPS)
        assert str(caught.value) == message


def test_a_client_certificate_is_loaded_with_the_bundle_or_the_ca_file(tmp_path: Path):
    cert, key = _pair(tmp_path, "agent")
    for trust in (
        ServerTrust(client_cert=cert, client_key=key),
        ServerTrust(_certificate(tmp_path), cert, key),
    ):
        context = trust.verification(HTTPS)
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED
        roots = context.cert_store_stats()["x509"]
        assert roots == 1 if trust.ca_file else roots > 100  # certifi's bundle
    # Certificate and key in one file, as curl --cert takes them.
    both = tmp_path / "both.pem"
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    assert isinstance(ServerTrust(client_cert=both).verification(HTTPS), ssl.SSLContext)
    # Plain http: no TLS, nothing loaded.
    plain = ServerTrust(client_cert=tmp_path / "missing.pem").verification("http://127.0.0.1:1")
    assert isinstance(plain, ssl.SSLContext)


def test_an_unusable_client_certificate_is_named_with_the_reason(tmp_path: Path):
    cert, key = _pair(tmp_path, "agent")
    _, other_key = _pair(tmp_path, "other")
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(key),
            "-aes256",
            "-passout",
            "pass:pw",
            "-out",
            str(encrypted),
        ],
        check=True,
        capture_output=True,
    )
    missing = tmp_path / "missing.pem"
    names = "KEYFOB_CLIENT_CERT, KEYFOB_CLIENT_KEY"
    for trust, message in (
        (
            ServerTrust(client_cert=cert, client_key=other_key),
            f"cannot use {cert} and {other_key} as the client certificate ({names}): "
            "the key does not belong to the certificate",
        ),
        (
            ServerTrust(client_cert=cert, client_key=encrypted),
            f"cannot use {cert} and {encrypted} as the client certificate ({names}): "
            "not a PEM certificate with an unencrypted private key",
        ),
        (
            ServerTrust(client_cert=cert),
            f"cannot use {cert} as the client certificate (KEYFOB_CLIENT_CERT): "
            "not a PEM certificate with an unencrypted private key",
        ),
        (
            ServerTrust(client_cert=missing, client_key=key),
            f"cannot use {missing} and {key} as the client certificate ({names}): "
            "No such file or directory",
        ),
        (ServerTrust(client_key=key), "KEYFOB_CLIENT_KEY is set without KEYFOB_CLIENT_CERT"),
    ):
        with pytest.raises(UnusableTlsFile) as caught:
            trust.verification(HTTPS)
        assert str(caught.value) == message
        assert "PRIVATE KEY" not in str(caught.value)


def _certificate(directory: Path) -> Path:
    return _pair(directory, "cert")[0]


def _pair(directory: Path, name: str) -> tuple[Path, Path]:
    now = datetime.datetime.now(datetime.UTC)
    cert, key = self_signed(["127.0.0.1"], days=1, now=now)
    (directory / f"{name}.pem").write_bytes(cert)
    (directory / f"{name}.key").write_bytes(key)
    return directory / f"{name}.pem", directory / f"{name}.key"
