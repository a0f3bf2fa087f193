"""The merged CA bundle for forward-proxy clients: the system's (or certifi's) roots plus
keyfob's CA. Standard library only, so the CLI and ``keyfob run`` write it without
importing the server."""

from __future__ import annotations

from pathlib import Path

SYSTEM_ROOTS = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


def merged_bundle(ca_pem: str, label: str = "keyfob forward proxy CA") -> str:
    """The system's (or certifi's) roots plus keyfob's CA: clients that replace rather than
    extend their roots with a bundle (rustls among them) still reach every other host."""
    roots = ""
    for candidate in (*SYSTEM_ROOTS, _certifi()):
        if candidate and Path(candidate).is_file():
            roots = Path(candidate).read_text()
            break
    if roots and not roots.endswith("\n"):
        roots += "\n"
    return roots + f"# {label}\n" + ca_pem


def _certifi() -> str | None:
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return None
    return str(certifi.where())
