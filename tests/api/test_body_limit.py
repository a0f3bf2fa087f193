"""``max_body_bytes``: a body over the limit is refused (413) before anything acts on it,
whether it declares its length or arrives chunked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.api.conftest import SMALL_BODY_LIMIT
from tests.conftest import CANARY, make_set
from tests.support.http import assert_problem, state_of

JSON = {"content-type": "application/json"}


def oversized() -> bytes:
    """A valid create body just over the limit, holding the canary."""
    body = make_set("openai", "prod", "big", {"OPENAI_API_KEY": CANARY, "PAD": "x" * 1000})
    return httpx.Request("POST", "/", json=body).content


async def chunks(data: bytes, size: int = 256) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_body_over_the_limit_is_413(
    client: httpx.AsyncClient, small_client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    body = oversized()
    assert len(body) > SMALL_BODY_LIMIT
    before = await state_of(client)

    response = await small_client.post("/v1/secret-sets", content=body, headers=JSON)

    assert_problem(response, 413, "payload-too-large")
    assert CANARY not in response.text
    assert await state_of(client) == before
    fits = make_set("openai", "prod", "small", {"OPENAI_API_KEY": CANARY})
    assert (await small_client.post("/v1/secret-sets", json=fits)).status_code == 201


async def test_a_chunked_body_over_the_limit_is_413(
    client: httpx.AsyncClient, small_client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    before = await state_of(client)
    request = small_client.build_request(
        "POST", "/v1/secret-sets", content=chunks(oversized()), headers=JSON
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"

    response = await small_client.send(request)

    assert_problem(response, 413, "payload-too-large")
    assert CANARY not in response.text
    assert await state_of(client) == before


async def test_a_chunked_body_under_the_limit_is_read(
    small_client: httpx.AsyncClient,
) -> None:
    body = httpx.Request("POST", "/", json=make_set()).content
    response = await small_client.post("/v1/secret-sets", content=chunks(body, 16), headers=JSON)
    assert response.status_code == 201, response.text


async def test_a_route_that_reads_no_body_still_refuses_an_oversized_one(
    client: httpx.AsyncClient, small_client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    before = await state_of(client)

    response = await small_client.post("/v1/keys/rotate", content=oversized(), headers=JSON)

    assert_problem(response, 413, "payload-too-large")
    assert await state_of(client) == before
