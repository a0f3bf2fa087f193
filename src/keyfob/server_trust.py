"""How keyfob's own clients (the CLI and the SDK) verify the server they talk to.

An ``https://`` address is verified against httpx's CA bundle (certifi), or, with
``KEYFOB_CA_FILE``, against that file alone: the certificate ``keyfob init
--self-signed`` wrote, or a private CA's (as ``curl --cacert`` and ``VAULT_CACERT``). A
plain ``http://`` address gets a context that trusts no CA, so loading the bundle
(~20 ms per process) is skipped and a TLS handshake through it would fail rather than
go unverified. Standard library only: the SDK and the CLI import it without the server.
"""

from __future__ import annotations

import os
import ssl
from urllib.parse import urlsplit

CA_FILE_VARIABLE = "KEYFOB_CA_FILE"


class UnusableCaFile(ValueError):
    """``KEYFOB_CA_FILE`` names a file that cannot be read as PEM certificates."""


def verification(addr: str, ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext | bool:
    """What a client of ``addr`` verifies the server with (httpx's ``verify``)."""
    if urlsplit(addr).scheme == "http":
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file is None or not os.fspath(ca_file).strip():
        return True
    path = os.fspath(ca_file).strip()
    reason: str | None
    try:
        return ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        empty = exc.reason == "NO_CERTIFICATE_OR_CRL_FOUND"
        reason = "no PEM certificate in it" if empty else exc.reason
    except OSError as exc:
        reason = exc.strerror
    raise UnusableCaFile(
        f"cannot use {path} as the CA file ({CA_FILE_VARIABLE}): {reason or 'unreadable'}"
    )


def untrusted(exc: BaseException) -> bool:
    """Whether a failed connection was the server's certificate not verifying."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False
