"""Every error the API gives has one shape: ``application/problem+json`` with a stable type.

Each case below drives one real error; the contract is checked on what comes back.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from sqlalchemy import text

from keyfob import errors
from keyfob.app import create_app
from keyfob.settings import Settings
from keyfob.vault import Vault
from tests.conftest import CANARY, make_set
from tests.support.docs import documented_problems

BASE_KEYS = {"type", "title", "status", "detail", "request_id"}
# Extras the docs describe: 422 "errors", 409 "current_version" (lost update) and
# "records" (retire), lease denials' "reason", rate limits' "retry_after".
EXTRA_KEYS = {"errors", "current_version", "records", "reason", "retry_after"}
SET = "/v1/secret-sets/openai/prod/default"
JSON = {"content-type": "application/json"}


@dataclass
class Env:
    client: httpx.AsyncClient
    anonymous: httpx.AsyncClient
    small: httpx.AsyncClient
    vault: Vault
    checkpoint_dir: Path
    impatient: httpx.AsyncClient


def _client(app: Any, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://keyfob.test", headers=headers
    )


def _failing_router() -> APIRouter:
    router = APIRouter()

    @router.get("/test-only/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    return router


@pytest.fixture
async def env(settings: Settings, tmp_path: Path) -> AsyncIterator[Env]:
    own = settings.model_copy(update={"audit_checkpoint_file": tmp_path / "audit" / "cp.json"})
    vault, done = await Vault.initialise(own)
    token = done.operator_token.reveal()
    app = create_app(own, vault=vault)
    app.include_router(_failing_router())
    small = create_app(own.model_copy(update={"max_body_bytes": 1024}), vault=vault)
    impatient = create_app(own.model_copy(update={"proxy_read_timeout": 0.2}), vault=vault)
    async with (
        _client(app, token) as client,
        _client(app) as anonymous,
        _client(small, token) as small_client,
        _client(impatient) as impatient_client,
    ):
        created = await client.post("/v1/secret-sets", json=make_set())
        assert created.status_code == 201, created.text
        yield Env(client, anonymous, small_client, vault, tmp_path / "audit", impatient_client)
    for each in (app, small, impatient):
        await each.aclose()
    await vault.close()


def big_body() -> bytes:
    return httpx.Request("POST", "/", json=make_set(entries={"K": CANARY * 40})).content


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 100):
        yield data[start : start + 100]


async def tamper(env: Env) -> httpx.Response:
    async with env.vault.db.engine.begin() as conn:
        (blob,) = (await conn.execute(text("SELECT ciphertext FROM secret_versions"))).one()
        flipped = bytes(blob[:-1]) + bytes([blob[-1] ^ 1])
        await conn.execute(text("UPDATE secret_versions SET ciphertext = :c"), {"c": flipped})
    return await env.client.patch(SET, json={"entries": {"OTHER": "x"}})


async def wrong_kind_of_token(env: Env) -> httpx.Response:
    agent = await env.client.post("/v1/agents", json={"name": "bot"})
    assert agent.status_code == 201, agent.text
    headers = {"Authorization": f"Bearer {agent.json()['token']}"}
    return await env.anonymous.get("/v1/keys", headers=headers)


async def rate_limited(env: Env) -> httpx.Response:
    agent = (await env.client.post("/v1/agents", json={"name": "busy-bot"})).json()
    grant = {"agent": "busy-bot", "secret_set": "openai/prod/default", "rate_limit": 1}
    created = await env.client.post("/v1/grants", json={**grant, "actions": ["export"]})
    assert created.status_code == 201, created.text
    as_agent = {"Authorization": f"Bearer {agent['token']}"}
    answers = []
    for _ in range(2):
        lease = await env.anonymous.post(
            "/v1/leases", json={"secret_set": "openai/prod/default"}, headers=as_agent
        )
        as_lease = {"Authorization": f"Bearer {lease.json()['token']}"}
        answers.append(await env.anonymous.post(f"{SET}/export", json={}, headers=as_lease))
    assert answers[0].status_code == 200, answers[0].text
    assert answers[1].headers["retry-after"] == str(answers[1].json()["retry_after"])
    return answers[1]


async def checkpoint_gone(env: Env) -> httpx.Response:
    shutil.rmtree(env.checkpoint_dir)
    env.checkpoint_dir.write_text("not a directory")
    return await env.anonymous.get("/readyz")


async def lost_update(env: Env) -> httpx.Response:
    await env.client.patch(SET, json={"entries": {"A": "1"}}, headers={"If-Match": '"1"'})
    return await env.client.patch(SET, json={"entries": {"A": "2"}}, headers={"If-Match": '"1"'})


async def _proxy_lease(env: Env, base_url: str) -> tuple[str, str]:
    """A set whose profile points at ``base_url``, granted to a new agent; (route, lease)."""
    body = make_set(
        "generic",
        "prod",
        "upstream",
        entries={"API_KEY": CANARY},
        profile={
            "base_url": base_url,
            "hosts": ["127.0.0.1"],
            "inject": {"kind": "bearer", "key": "API_KEY"},
            "allow_private_upstream": True,
        },
    )
    assert (await env.client.post("/v1/secret-sets", json=body)).status_code == 201
    agent = (await env.client.post("/v1/agents", json={"name": "proxy-bot"})).json()
    grant = {"agent": "proxy-bot", "secret_set": "generic/prod/upstream"}
    assert (await env.client.post("/v1/grants", json=grant)).status_code == 201
    lease = await env.anonymous.post(
        "/v1/leases",
        json={"secret_set": "generic/prod/upstream"},
        headers={"Authorization": f"Bearer {agent['token']}"},
    )
    return "/proxy/generic/prod/upstream", lease.json()["token"]


async def upstream_unreachable(env: Env) -> httpx.Response:
    route, lease = await _proxy_lease(env, f"http://127.0.0.1:{closed_port()}")
    return await env.anonymous.get(f"{route}/v1", headers={"Authorization": f"Bearer {lease}"})


async def upstream_silent(env: Env) -> httpx.Response:
    done = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await done.wait()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        route, lease = await _proxy_lease(env, f"http://127.0.0.1:{port}")
        return await env.impatient.get(f"{route}/v1", headers={"Authorization": f"Bearer {lease}"})
    finally:
        done.set()
        server.close()
        await server.wait_closed()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def retire_used_term(env: Env) -> httpx.Response:
    await env.client.post("/v1/keys/rotate")
    return await env.client.post("/v1/keys/1/retire")


async def forward_unauthenticated(env: Env) -> httpx.Response:
    """The forward proxy's CONNECT without Proxy-Authorization, as an httpx response."""
    from keyfob.proxy.app import ProxyApp
    from keyfob.proxy.forward import ForwardProxy

    app = ProxyApp(env.vault.settings, lambda: env.vault)
    forward = ForwardProxy(env.vault.settings, lambda: env.vault, app)
    await forward.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", forward.port)
        writer.write(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
        raw = await reader.read()
        writer.close()
    finally:
        await forward.close()
        await app.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
    return httpx.Response(int(lines[0].split()[1]), headers=headers, content=body)


Case = Callable[[Env], Awaitable[httpx.Response]]
CASES: dict[str, tuple[int, Case]] = {
    "malformed-json": (400, lambda e: e.client.post("/v1/secret-sets", content=b"{", headers=JSON)),
    "form-body": (
        400,
        lambda e: e.client.post(
            "/v1/secret-sets", content=b"a=b", headers={"content-type": "text/plain"}
        ),
    ),
    "bad-if-match": (
        400,
        lambda e: e.client.patch(SET, json={"entries": {}}, headers={"If-Match": "x"}),
    ),
    "bad-cursor": (400, lambda e: e.client.get("/v1/secret-sets?cursor=%%%")),
    "foreign-host": (421, lambda e: e.client.get("/healthz", headers={"host": "evil.example"})),
    "bad-since": (422, lambda e: e.client.get("/v1/audit?since=later")),
    # A 500 once: the offset pushed the time past what a datetime holds.
    "since-overflow": (422, lambda e: e.client.get("/v1/audit?since=9999-12-31T23:59:59-01:00")),
    "bad-label-filter": (400, lambda e: e.client.get("/v1/secret-sets?label=x")),
    "no-token": (401, lambda e: e.anonymous.get("/v1/keys")),
    "unknown-token": (
        401,
        lambda e: e.anonymous.get("/v1/keys", headers={"Authorization": "Bearer kfo_" + "x" * 43}),
    ),
    "wrong-kind-of-token": (403, wrong_kind_of_token),
    "forward-no-credential": (407, forward_unauthenticated),
    "no-route": (404, lambda e: e.client.get("/v1/nothing")),
    "no-set": (404, lambda e: e.client.get("/v1/secret-sets/a/b/c")),
    "no-token-id": (404, lambda e: e.client.delete("/v1/tokens/ffffffffffffffff")),
    "wrong-method": (405, lambda e: e.client.put(SET)),
    "name-taken": (409, lambda e: e.client.post("/v1/secret-sets", json=make_set())),
    "lost-update": (409, lost_update),
    "retire-used-term": (409, retire_used_term),
    "too-large": (413, lambda e: e.small.post("/v1/secret-sets", content=big_body(), headers=JSON)),
    "too-large-chunked": (
        413,
        lambda e: e.small.post("/v1/secret-sets", content=chunked(big_body()), headers=JSON),
    ),
    "body-types": (
        422,
        lambda e: e.client.post("/v1/secret-sets", json={"provider": 1, "entries": [CANARY]}),
    ),
    "query-types": (422, lambda e: e.client.get("/v1/audit?limit=many")),
    "path-types": (422, lambda e: e.client.post("/v1/keys/first/retire")),
    "bad-key-name": (422, lambda e: e.client.patch(SET, json={"entries": {"k-1": CANARY}})),
    "rate-limited": (429, rate_limited),
    "unready": (503, checkpoint_gone),
    "proxy-bad-path": (400, lambda e: e.anonymous.get("/proxy/openai/prod/default/a%2fb")),
    # A header naming another object, its name carrying a credential that must not echo.
    "proxy-forbidden-header": (
        400,
        lambda e: e.anonymous.get(
            "/proxy/openai/prod/default/v1", headers={f"x-amz-copy-source-{CANARY}": "/b/k"}
        ),
    ),
    "proxy-headers-too-large": (
        431,
        lambda e: e.anonymous.get("/proxy/openai/prod/default/v1", headers={"x-big": "x" * 40000}),
    ),
    "proxy-unreachable": (502, upstream_unreachable),
    "proxy-timeout": (504, upstream_silent),
    "decryption-failed": (500, tamper),
    "internal": (500, lambda e: e.client.get("/test-only/boom")),
}


def classes_for(status: int) -> dict[str, type[errors.KeyfobError]]:
    return {cls.slug: cls for cls in errors.ALL_ERRORS if cls.status == status}


@pytest.mark.parametrize("name", list(CASES))
async def test_error_response_is_a_problem(env: Env, name: str) -> None:
    status, drive = CASES[name]

    response = await drive(env)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert BASE_KEYS <= set(body) <= BASE_KEYS | EXTRA_KEYS, body
    assert body["type"].startswith(errors.PROBLEM_PREFIX)
    slug = body["type"].removeprefix(errors.PROBLEM_PREFIX)
    cls = classes_for(status).get(slug)
    assert cls is not None, f"{body['type']} is no error class with status {status}"
    assert body["title"] == cls.title
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert CANARY not in response.text
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    if status == 407:
        assert response.headers["proxy-authenticate"].startswith("Basic")
    if "errors" in body:
        assert all(set(e) == {"loc", "msg"} for e in body["errors"])


def test_every_status_the_api_documents_is_driven_here() -> None:
    driven = {status for status, _ in CASES.values()}
    documented = set(documented_problems().values())
    assert documented - driven == set()


def test_every_error_class_has_a_unique_slug_listed_in_the_docs() -> None:
    slugs = [cls.slug for cls in errors.ALL_ERRORS]
    documented = documented_problems()

    assert len(slugs) == len(set(slugs))
    missing = [cls.__name__ for cls in errors.ALL_ERRORS if cls.slug not in documented]
    assert missing == [], f"not in the problem table of docs/api.md: {missing}"
    for cls in errors.ALL_ERRORS:
        assert documented[cls.slug] == cls.status, cls.__name__
    assert set(documented) <= set(slugs), "docs/api.md lists a problem type no class has"
