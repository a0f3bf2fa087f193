"""A bug answers 500 ``internal`` and says nothing of itself: not to the client, not in logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import StreamingResponse
from starlette.types import Message

from keyfob.app import create_app
from keyfob.settings import Settings
from keyfob.vault import Vault
from tests.conftest import CANARY


def broken_dependency() -> None:
    raise ValueError(f"dependency failed near {CANARY}")


def failing_router() -> APIRouter:
    """Routes that fail the way bugs do, with a secret in the exception message."""
    router = APIRouter()

    @router.post("/test-only/raise")
    async def raises() -> None:
        secret = CANARY
        raise RuntimeError(f"could not use {secret}")

    @router.get("/test-only/dependency", dependencies=[Depends(broken_dependency)])
    async def never() -> None:
        raise AssertionError("not reached")

    @router.get("/test-only/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"partial "
            raise KeyError(CANARY)

        return StreamingResponse(chunks())

    return router


@pytest.fixture
def buggy_app(vault: Vault, settings: Settings) -> FastAPI:
    app = create_app(settings, vault=vault)
    app.include_router(failing_router())
    return app


@pytest.fixture
async def buggy(buggy_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=buggy_app), base_url="http://keyfob.test"
    ) as http:
        yield http


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/test-only/raise"), ("GET", "/test-only/dependency")],
)
async def test_a_bug_is_a_500_problem_without_its_message(
    buggy: httpx.AsyncClient, logs: pytest.LogCaptureFixture, method: str, path: str
) -> None:
    response = await buggy.request(method, path, json={"entries": {"K": CANARY}})

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "urn:keyfob:problem:internal"
    assert body["request_id"] == response.headers["x-request-id"]
    assert CANARY not in response.text
    logged = everything_logged(logs)
    assert CANARY not in logged
    assert "could not use" not in logged
    # The log still tells an operator which request failed, and where.
    assert body["request_id"] in logged
    assert "unhandled" in logged


async def test_a_bug_mid_stream_is_logged_without_its_message(
    buggy_app: FastAPI, logs: pytest.LogCaptureFixture
) -> None:
    # Driven by hand: the response has started, so the server can only cut it short,
    # which httpx's in-process transport does not model.
    sent: list[Message] = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Message:
        if requests:
            return requests.pop()
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("not reached")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/test-only/stream",
        "raw_path": b"/test-only/stream",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"keyfob.test")],
        "client": ("127.0.0.1", 50000),
        "server": ("keyfob.test", 80),
    }

    await buggy_app(scope, receive, send)

    start = sent[0]
    assert start["type"] == "http.response.start"
    assert start["status"] == 200
    assert all(m.get("more_body", False) for m in sent[1:]), "it must not look complete"
    assert CANARY.encode() not in b"".join(m.get("body", b"") for m in sent[1:])
    request_id = dict(start["headers"])[b"x-request-id"].decode()
    logged = everything_logged(logs)
    assert CANARY not in logged
    assert request_id in logged
