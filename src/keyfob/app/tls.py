"""HTTPS on keyfob's own listener: one ``SSLContext``, its certificate reloaded in place.

uvicorn takes the context from ``ssl_context_factory``; SIGHUP calls ``reload``, which
loads the files into a scratch context first (so a bad pair never reaches the live
one), then into the live context: new handshakes get the new certificate, connections
already open keep theirs.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from pathlib import Path
from typing import Any

from keyfob.errors import ConfigurationError
from keyfob.tls_scope import EXTENSION, FIELD

log = logging.getLogger("keyfob.tls")


def _context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(context, cert, key)
    if client_ca is not None:
        # Optional: operators, the dashboard and unbound agents need no certificate; an
        # agent bound to one (client_cert_sha256) is refused without it.
        context.verify_mode = ssl.CERT_OPTIONAL
        try:
            context.load_verify_locations(cafile=str(client_ca))
        except (OSError, ssl.SSLError):
            raise ConfigurationError(
                f"cannot read the TLS client CA file {client_ca} as PEM certificates"
            ) from None
    return context


def _load(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    for what, path in (("certificate", cert), ("key", key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the TLS {what} file {path}: {exc.strerror or exc}"
            ) from None
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigurationError(
                f"the TLS key {key} does not belong to the certificate {cert}"
            ) from None
        raise ConfigurationError(
            f"the TLS certificate {cert} or key {key} is not a PEM certificate and "
            "unencrypted private key"
        ) from None


class ServerTls:
    """The listener's TLS context; ``reload`` swaps its certificate in place."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert = cert
        self.key = key
        self.context = _context(cert, key, client_ca)

    def reload(self) -> None:
        """Load the files again; a bad pair raises and leaves the live certificate as it was."""
        _context(self.cert, self.key)
        _load(self.context, self.cert, self.key)

    def on_sighup(self, *_: Any) -> None:
        """Signal handler: reload, and log (never raise) what went wrong."""
        try:
            self.reload()
        except ConfigurationError as exc:
            log.error("TLS reload failed, still serving the previous certificate: %s", exc.detail)
        else:
            log.info("TLS certificate reloaded from %s", self.cert)

    def factory(self, *_: Any) -> ssl.SSLContext:
        """uvicorn's ``ssl_context_factory``: the one live context."""
        return self.context


def _fingerprint(transport: Any) -> str | None:
    ssl_object = transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return hashlib.sha256(der).hexdigest() if der else None


def cert_protocol() -> type:
    """uvicorn's httptools protocol, telling each request's scope the client certificate
    (``keyfob.tls_scope``): one hash per connection, at the handshake."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class CertProtocol(HttpToolsProtocol):
        client_cert: str | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.client_cert = _fingerprint(transport)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self.client_cert is not None:
                self.scope["extensions"] = {EXTENSION: {FIELD: self.client_cert}}

    return CertProtocol
