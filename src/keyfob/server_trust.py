"""How keyfob's own clients (the CLI and the SDK) verify the server they talk to, and
which certificate they show it.

An ``https://`` address is verified against httpx's CA bundle (certifi), or, with
``KEYFOB_CA_FILE``, against that file alone: the certificate ``keyfob init
--self-signed`` wrote, or a private CA's (as ``curl --cacert`` and ``VAULT_CACERT``).
``KEYFOB_CLIENT_CERT`` (and ``KEYFOB_CLIENT_KEY`` when the key is in its own file) is
the certificate an agent bound to one (``client_cert_sha256``) presents, as ``curl
--cert/--key`` and ``VAULT_CLIENT_CERT``/``VAULT_CLIENT_KEY``. A plain ``http://``
address gets a context that trusts no CA, so loading the bundle (~20 ms per process)
is skipped and a TLS handshake through it would fail rather than go unverified.
Standard library only (certifi when a client certificate needs the bundle): the SDK
and the CLI import it without the server. Files are named in errors, with the variable
or the SDK argument that named them; their contents never are.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

CA_FILE_VARIABLE = "KEYFOB_CA_FILE"
CLIENT_CERT_VARIABLE = "KEYFOB_CLIENT_CERT"
CLIENT_KEY_VARIABLE = "KEYFOB_CLIENT_KEY"
VARIABLES = (CA_FILE_VARIABLE, CLIENT_CERT_VARIABLE, CLIENT_KEY_VARIABLE)
ARGUMENTS = ("ca_file=", "client_cert=", "client_key=")
FilePath = str | os.PathLike[str]


class UnusableTlsFile(ValueError):
    """A CA file or client certificate that cannot be used, named with the reason."""


@dataclass(frozen=True)
class ServerTrust:
    """The files a client of one keyfob verifies it with and presents to it."""

    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    # What errors call each file (CA, certificate, key): its variable or SDK argument.
    names: tuple[str, str, str] = field(default=VARIABLES, compare=False, repr=False)

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] = os.environ,
        *,
        ca_file: FilePath | None = None,
        client_cert: FilePath | None = None,
        client_key: FilePath | None = None,
    ) -> ServerTrust:
        """``KEYFOB_CA_FILE``, ``KEYFOB_CLIENT_CERT``, ``KEYFOB_CLIENT_KEY`` (unset or
        blank: none), where no argument names the file instead (the SDK's ``ca_file=``,
        ``client_cert=``, ``client_key=``). A certificate and its key are taken together:
        a ``client_cert`` argument is paired with the ``client_key`` argument only."""

        def variable(name: str) -> Path | None:
            value = environ.get(name, "").strip()
            return Path(value) if value else None

        names = list(VARIABLES)
        ca = variable(CA_FILE_VARIABLE)
        if ca_file is not None:
            ca, names[0] = Path(ca_file), ARGUMENTS[0]
        cert, key = variable(CLIENT_CERT_VARIABLE), variable(CLIENT_KEY_VARIABLE)
        if client_cert is not None or client_key is not None:
            cert = Path(client_cert) if client_cert is not None else None
            key = Path(client_key) if client_key is not None else None
            names[1:] = ARGUMENTS[1:]
        return cls(ca, cert, key, (names[0], names[1], names[2]))

    def verification(self, addr: str) -> ssl.SSLContext | bool:
        """What a client of ``addr`` passes as httpx's ``verify``."""
        if urlsplit(addr).scheme == "http":
            return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ca_name, cert_name, key_name = self.names
        if self.client_key is not None and self.client_cert is None:
            raise UnusableTlsFile(f"{key_name} is set without {cert_name}")
        if self.ca_file is None and self.client_cert is None:
            return True
        context = _trusting(self.ca_file, ca_name)
        if self.client_cert is not None:
            _present(context, self.client_cert, self.client_key, cert_name, key_name)
        return context


def _trusting(ca_file: Path | None, name: str) -> ssl.SSLContext:
    if ca_file is None:
        import certifi  # httpx's own default bundle, which ``verify=True`` would load

        return ssl.create_default_context(cafile=certifi.where())
    reason: str | None
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except ssl.SSLError as exc:
        empty = exc.reason == "NO_CERTIFICATE_OR_CRL_FOUND"
        reason = "no PEM certificate in it" if empty else exc.reason
    except OSError as exc:
        reason = exc.strerror
    raise UnusableTlsFile(f"cannot use {ca_file} as the CA file ({name}): {reason or 'unreadable'}")


def _present(
    context: ssl.SSLContext, cert: Path, key: Path | None, cert_name: str, key_name: str
) -> None:
    reason: str | None
    try:
        # An encrypted key would make OpenSSL prompt on the terminal; refuse it instead.
        context.load_cert_chain(str(cert), str(key) if key else None, password=lambda: b"")
        return
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            reason = "the key does not belong to the certificate"
        else:
            reason = "not a PEM certificate with an unencrypted private key"
    except OSError as exc:
        reason = exc.strerror
    files = f"{cert} and {key}" if key else str(cert)
    names = f"{cert_name}, {key_name}" if key else cert_name
    raise UnusableTlsFile(
        f"cannot use {files} as the client certificate ({names}): {reason or 'unreadable'}"
    )


# OpenSSL's codes for a chain that ends at no trusted CA (X509_V_ERR_*): unable to get
# the issuer (2, 20), self-signed leaf (18) or root (19), leaf signature unverifiable (21).
UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21})


def certificate_problem(exc: BaseException) -> str | None:
    """Why the server's certificate did not verify, and what to set when it is an issuer
    this client does not know; None when the failure was something else."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or str(cause)
            if cause.verify_code not in UNKNOWN_ISSUER:
                return str(reason)  # an expired certificate, another host name: no CA helps
            return (
                f"{reason}; set {CA_FILE_VARIABLE} to the CA certificate that signed it "
                "(after `keyfob init --self-signed`: <data dir>/tls/cert.pem)"
            )
        cause = cause.__cause__ or cause.__context__
    return None
