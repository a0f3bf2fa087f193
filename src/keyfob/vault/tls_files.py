"""``keyfob init --self-signed``: a certificate and key pair written as private files."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from keyfob.crypto import self_signed
from keyfob.errors import Conflict

DAYS = 365


def write_self_signed(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (0600) under ``directory``; never overwrites."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    for path in (cert_path, key_path):
        if path.exists():
            raise Conflict(f"{path} already exists; remove it to make a new pair")
    cert, key = self_signed(hosts, days=DAYS, now=datetime.datetime.now(datetime.UTC))
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path, data in ((key_path, key), (cert_path, cert)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    return cert_path, key_path
