"""Pure ASGI wrappers for the API: request ids, body size limit, safe headers, last-resort
error containment. No ``BaseHTTPMiddleware``: it buffers and costs on every request.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyfob.api.problems import render
from keyfob.errors import KeyfobError, PayloadTooLarge
from keyfob.vault import new_request_id

log = logging.getLogger("keyfob.api")

API_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]


def log_unhandled(exc: BaseException, rid: str) -> None:
    """Log where an unexpected error happened, never its message (it may hold anything)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    log.error("unhandled %s at %s (request %s)", type(exc).__name__, where, rid)


def with_api_headers(send: Send, rid: str) -> Send:
    """``send`` that adds the request id and ``API_HEADERS`` to the response's start."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers: list[Any] = list(message.get("headers", []))
            headers.append((b"x-request-id", rid.encode()))
            headers.extend(API_HEADERS)
            message = {**message, "headers": headers}
        await send(message)

    return sending


class ApiMiddleware:
    def __init__(self, app: ASGIApp, *, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        received = 0
        too_large = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_body
                except ValueError:
                    too_large = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise HTTPException(413)
            return message

        send_with_headers = with_api_headers(send, rid)

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_with_headers(message)

        if too_large:
            # Refuse before the app runs: a route that never reads its body must not act on it.
            response = render(PayloadTooLarge("the request body is too large"), rid)
            await response(scope, receive, tracking_send)
            return
        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception as exc:
            # A foreign exception's message could carry anything: answer and log none of it,
            # and do not re-raise (the server would print the full traceback).
            log_unhandled(exc, rid)
            if not started:
                response = render(KeyfobError("unexpected server error; see the server log"), rid)
                await response(scope, receive, tracking_send)
