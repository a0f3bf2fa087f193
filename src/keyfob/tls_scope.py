"""The TLS client certificate of a request, as keyfob's listener puts it in the scope.

``app.tls.CertProtocol`` adds ``scope["extensions"]["tls"]["client_cert_sha256"]`` (the
SHA-256 of the certificate's DER form, hex) when a client presented a certificate that
chains to ``KEYFOB_TLS_CLIENT_CA``; nothing else may set it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EXTENSION = "tls"
FIELD = "client_cert_sha256"


def client_certificate(scope: Mapping[str, Any]) -> str | None:
    """The request's client certificate fingerprint, or None."""
    extensions = scope.get("extensions")
    if not extensions:
        return None
    tls = extensions.get(EXTENSION)
    if not tls:
        return None
    value = tls.get(FIELD)
    return value if isinstance(value, str) else None
