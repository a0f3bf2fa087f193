"""``POST /v1/leases`` answered by the plain ASGI mint route and by FastAPI: same answers.

The app dispatches an agent's mint to ``api.mint_route`` before FastAPI runs; the FastAPI
app on its own (``Keyfob.api``) still has the route. Both must give the same status,
headers and body shape, and a body the plain route does not take must reach FastAPI
whole (the route replays what it read).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from keyfob.app import create_app
from keyfob.settings import Settings
from keyfob.vault import Vault
from tests.access.factories import SET, bearer, make_agent, make_grant, make_secret_set

SHARED_HEADERS = ("content-type", "cache-control", "x-content-type-options", "x-request-id")


@pytest.fixture
async def agent(client: httpx.AsyncClient) -> dict[str, Any]:
    await make_secret_set(client)
    found = await make_agent(client)
    await make_grant(client, found, scopes=["request", "workflow"])
    return found


@pytest.fixture
async def fastapi_only(vault: Vault, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The FastAPI app alone: no plain mint route in front of it."""
    app = create_app(settings, vault=vault)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app.api), base_url="http://keyfob.test"
    ) as http:
        yield http


async def _post(http: httpx.AsyncClient, token: str, content: bytes) -> httpx.Response:
    headers = {**bearer(token), "content-type": "application/json"}
    return await http.post("/v1/leases", content=content, headers=headers)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "body",
    [
        b'{"secret_set": "openai/prod/default"}',
        b'{"secret_set": "openai/prod/default", "scope": "workflow", "ttl": 60, "max_uses": 3}',
        b'{"secret_set": "openai/prod/default", "count": 3}',
        b'{"secret_set": "stripe/prod/nothing"}',  # no grant: 403, audited
        b'{"secret_set": "openai/prod/default", "scope": "request", "max_uses": 2}',  # 422
    ],
)
async def test_plain_route_answers_as_fastapi_does(
    client: httpx.AsyncClient,
    fastapi_only: httpx.AsyncClient,
    agent: dict[str, Any],
    body: bytes,
) -> None:
    plain = await _post(client, agent["token"], body)
    framework = await _post(fastapi_only, agent["token"], body)
    assert plain.status_code == framework.status_code
    for name in SHARED_HEADERS:
        assert (name in plain.headers) == (name in framework.headers), name
        if name != "x-request-id":
            assert plain.headers.get(name) == framework.headers.get(name), name
    a, b = plain.json(), framework.json()
    assert _shape(a) == _shape(b)
    if plain.status_code == 201 and "token" in a:
        assert a["token"] != b["token"]
        assert a["token"].startswith("kfl_")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (b'{"secret_set": "openai/prod/default", "ttl": 0}', 422, "validation-failed"),
        (b'{"secret_set": "openai/prod/default", "extra": 1}', 422, "validation-failed"),
        (b'{"secret_sets": ["openai/prod/default"], "scope": "request"}', 422, "validation-failed"),
        (b"{not json", 400, "invalid-request"),
        (b"{}", 422, "validation-failed"),
    ],
)
async def test_bodies_the_plain_route_leaves_reach_fastapi_whole(
    client: httpx.AsyncClient, agent: dict[str, Any], body: bytes, status: int, kind: str
) -> None:
    answer = await _post(client, agent["token"], body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith(kind)
    assert answer.headers["x-request-id"] == answer.json()["request_id"]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_plain_route_mint_is_audited_and_usable(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    minted = await _post(client, agent["token"], b'{"secret_set": "%s"}' % SET.encode())
    assert minted.status_code == 201, minted.text
    lease = minted.json()
    audit = (await client.get("/v1/audit", params={"action": "lease.mint"})).json()["items"]
    assert [e["details"]["lease_id"] for e in audit] == [lease["id"]]
    assert audit[0]["request_id"] == minted.headers["x-request-id"]
    checked = await client.post(
        "/v1/leases/check",
        json={"action": "proxy", "secret_set": SET, "method": "GET", "path": "/v1/models"},
        headers=bearer(lease["token"]),
    )
    assert checked.status_code == 200, checked.text
    assert checked.json()["allowed"] is True


def _shape(value: Any) -> Any:
    """Keys and types, not values (ids, tokens and times differ between two mints)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k != "request_id"}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_body_longer_than_its_content_length_is_413_not_read_whole(
    vault: Vault, settings: Settings, agent: dict[str, Any]
) -> None:
    """A server that let a chunked body past a small Content-Length (h11 prefers
    Transfer-Encoding) must not make the plain route read without a bound."""
    app = create_app(settings, vault=vault)
    chunk = b" " * 65536
    limit = settings.max_body_bytes
    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        sent += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": sent < limit * 4}

    answer: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        answer.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/leases",
        "raw_path": b"/v1/leases",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"keyfob.test"),
            (b"authorization", f"Bearer {agent['token']}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"40"),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("keyfob.test", 80),
    }
    await app(scope, receive, send)
    assert answer[0]["status"] == 413
    assert sent <= limit + 2 * len(chunk)  # stopped soon after the limit


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_websocket_to_the_mint_path_is_not_taken_for_a_mint(
    vault: Vault, settings: Settings
) -> None:
    app = create_app(settings, vault=vault)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/v1/leases",
        "raw_path": b"/v1/leases",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"keyfob.test")],
        "client": ("127.0.0.1", 5000),
        "server": ("keyfob.test", 80),
        "subprotocols": [],
    }
    await app(scope, receive, send)  # no KeyError: FastAPI closes it as an unknown route
    assert sent
    assert sent[0]["type"] == "websocket.close"
