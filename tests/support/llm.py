"""A fake LLM upstream for metering and budget tests, on loopback in the test's own loop.

``POST …/chat/completions`` (OpenAI) and ``POST …/messages`` (Anthropic) answer JSON, or
SSE with ``"stream": true``, with ``words`` pieces of output (``"tok "``, one token each)
and the provider's own usage: ``prompt_tokens`` in, the pieces out. An OpenAI stream
carries usage only when asked (``stream_options.include_usage``), and then also
``"usage":null`` on every other chunk, as OpenAI does. Knobs: ``usage`` (``ok``,
``missing``, ``malformed``), ``break_after`` (drop the connection after that many
pieces), ``gate`` (hold every request until it is set). ``calls`` counts the requests
that reached it, ``bodies`` keeps what they sent.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

PIECE = "tok "


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class FakeLLM:
    def __init__(self) -> None:
        self.words = 5
        self.prompt_tokens = 20
        self.cached_tokens = 0
        self.usage = "ok"
        self.break_after: int | None = None
        self.gate: asyncio.Event | None = None
        self.calls = 0
        self.waiting = 0
        self.bodies: list[bytes] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeLLM:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def profile(self, preset: str) -> dict[str, Any]:
        """A preset's profile pointed at this fake (which is on loopback)."""
        return {
            "preset": preset,
            "base_url": self.url,
            "hosts": ["127.0.0.1"],
            "allow_private_upstream": True,
        }

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        body = await request.read()
        self.bodies.append(body)
        if self.gate is not None:
            self.waiting += 1
            await self.gate.wait()
        asked = json.loads(body or b"{}")
        pieces = self.words
        limit = asked.get("max_tokens") or asked.get("max_completion_tokens")
        if isinstance(limit, int):
            pieces = min(pieces, limit)
        model = str(asked.get("model", "gpt-4o-mini"))
        if request.path.endswith("/messages"):
            return await self._anthropic(request, asked, model, pieces)
        return await self._openai(request, asked, model, pieces)

    def _openai_usage(self, pieces: int) -> Any:
        if self.usage == "malformed":
            return "lots"
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": pieces,
            "total_tokens": self.prompt_tokens + pieces,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }

    async def _openai(
        self, request: web.Request, asked: dict[str, Any], model: str, pieces: int
    ) -> web.StreamResponse:
        if not asked.get("stream"):
            answer: dict[str, Any] = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": PIECE * pieces},
                        "finish_reason": "stop",
                    }
                ],
            }
            if self.usage != "missing":
                answer["usage"] = self._openai_usage(pieces)
            return web.Response(body=_dumps(answer), content_type="application/json")
        options = asked.get("stream_options") or {}
        with_usage = options.get("include_usage") is True and self.usage != "missing"
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            event: dict[str, Any] = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if with_usage:
                event["usage"] = None
            return b"data: " + _dumps(event) + b"\n\n"

        await response.write(chunk({"role": "assistant", "content": ""}, None))
        for n in range(pieces):
            if self.break_after is not None and n >= self.break_after:
                await asyncio.sleep(0.1)  # what was sent arrives before the connection drops
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(chunk({"content": PIECE}, None))
        await response.write(chunk({}, "stop"))
        if with_usage:
            final = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [],
                "usage": self._openai_usage(pieces),
            }
            await response.write(b"data: " + _dumps(final) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _anthropic(
        self, request: web.Request, asked: dict[str, Any], model: str, pieces: int
    ) -> web.StreamResponse:
        usage = {"input_tokens": self.prompt_tokens, "output_tokens": pieces}
        if not asked.get("stream"):
            answer: dict[str, Any] = {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": PIECE * pieces}],
                "stop_reason": "end_turn",
            }
            if self.usage != "missing":
                answer["usage"] = usage
            return web.Response(body=_dumps(answer), content_type="application/json")
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {name}\ndata: ".encode() + _dumps(data) + b"\n\n")

        start = {"id": "msg_1", "type": "message", "role": "assistant", "model": model}
        start["usage"] = {"input_tokens": self.prompt_tokens, "output_tokens": 1}  # type: ignore[assignment]
        await event("message_start", {"type": "message_start", "message": start})
        await event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        )
        for n in range(pieces):
            if self.break_after is not None and n >= self.break_after:
                await asyncio.sleep(0.1)  # what was sent arrives before the connection drops
                assert request.transport is not None
                request.transport.close()
                return response
            delta = {"type": "text_delta", "text": PIECE}
            await event(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
        await event("content_block_stop", {"type": "content_block_stop", "index": 0})
        await event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": pieces},
            },
        )
        await event("message_stop", {"type": "message_stop"})
        await response.write_eof()
        return response
