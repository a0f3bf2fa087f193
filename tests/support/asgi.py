"""The real app in-process for synchronous clients (the CLI): an event loop in a thread and
an ``httpx`` transport that hands each request to the app on that loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
from starlette.types import ASGIApp

T = TypeVar("T")


class BackgroundLoop:
    """An asyncio loop in a daemon thread; ``run`` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


class SyncASGITransport(httpx.BaseTransport):
    """``httpx.ASGITransport`` for a sync ``httpx.Client``: the app runs on ``loop``.

    Every request and its whole answer pass through, status, headers and raw body; the
    body is read to its end before the client sees it (no streaming).
    """

    def __init__(self, app: ASGIApp, loop: BackgroundLoop) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self._loop = loop
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        self.requests.append(request)

        async def call() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            inner = httpx.Request(
                request.method, request.url, headers=request.headers, content=body
            )
            answer = await self._inner.handle_async_request(inner)
            try:
                raw = b"".join([chunk async for chunk in answer.stream])  # type: ignore[union-attr]
            finally:
                await answer.aclose()
            return answer.status_code, answer.headers.raw, raw

        status, headers, raw = self._loop.run(call())
        return httpx.Response(status, headers=headers, content=raw)
