"""Who is acting and under which request id: passed into every state change."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field


def new_request_id() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Context:
    """The actor (``operator:<id>``, ``agent:<id>``, ``system``, ``anonymous``) and request id."""

    actor: str
    request_id: str = field(default_factory=new_request_id)
    client: str | None = None


SYSTEM = Context(actor="system")
