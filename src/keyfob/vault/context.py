"""Who is acting and under which request id: passed into every state change."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

# Request ids only need to be unique, not secret: a generator seeded once from the OS
# saves a getrandom() system call on every proxied request.
_ids = random.Random(os.urandom(32))  # noqa: S311 - names, not secrets


def new_request_id() -> str:
    """16 hex characters naming one request in responses and audit records."""
    return f"{_ids.getrandbits(64):016x}"


@dataclass(frozen=True)
class Context:
    """The actor (``operator:<id>``, ``agent:<id>``, ``system``, ``anonymous``) and request id."""

    actor: str
    request_id: str = field(default_factory=new_request_id)
    client: str | None = None
    # SHA-256 (hex) of the TLS client certificate the request came with, if any.
    client_cert: str | None = None


SYSTEM = Context(actor="system")
