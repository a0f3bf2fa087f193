"""Split planes: the operator API and dashboard on one listener, the agent surface on
another, so the control plane can be firewalled away from agent machines.

A request's plane is the listener it arrived on (the socket's port); a route of the
other plane answers 404, as if it did not exist there. Service routes answer on both.
"""

from __future__ import annotations

import re

from starlette.types import Scope, Send

from keyfob.errors import PROBLEM_JSON, NotFound
from keyfob.settings import Settings, split_listen
from keyfob.vault import new_request_id

OPERATOR = "operator"
AGENT = "agent"
SERVICE = frozenset({"/healthz", "/readyz"})
_EXPORT = re.compile(r"/v1/secret-sets/[^/]+/[^/]+/[^/]+/export\Z")
_NOT_HERE = NotFound("no such route on this listener")


def agent_route(method: str, path: str) -> bool:
    """Is this the agent surface: lease mint and check, ``/v1/me/…``, export, the proxy?"""
    if path.startswith(("/proxy/", "/v1/me/")):
        return True
    if path == "/v1/leases":
        return method == "POST"
    return path == "/v1/leases/check" or _EXPORT.match(path) is not None


class Planes:
    """Which plane each listener port serves; None when the planes are not split."""

    def __init__(self, settings: Settings) -> None:
        self.ports: dict[int, str] = {}
        if settings.operator_listen and settings.agent_listen:
            operator = split_listen(settings.operator_listen)[1]
            agent = split_listen(settings.agent_listen)[1]
            if operator == agent:
                raise ValueError("KEYFOB_OPERATOR_LISTEN and KEYFOB_AGENT_LISTEN need two ports")
            self.ports = {operator: OPERATOR, agent: AGENT}

    def admits(self, scope: Scope) -> bool:
        if not self.ports or scope["type"] not in ("http", "websocket"):
            return True
        server = scope.get("server")
        plane = self.ports.get(server[1]) if server else None
        path = scope["path"]
        if plane is None or path in SERVICE:
            return True
        return agent_route(scope.get("method", "GET"), path) == (plane == AGENT)


async def not_here(send: Send) -> None:
    rid = new_request_id()
    body = _NOT_HERE.render(rid)
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode()),
    ]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})
