"""Every operator route needs a valid operator token; each refusal is audited, token-free."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import SEEDED
from tests.conftest import CANARY, make_set
from tests.support.docs import concrete, operator_routes
from tests.support.http import assert_problem, state_of

WELL_FORMED_UNKNOWN = "kfo_" + "Q" * 43
BAD_CREDENTIALS: dict[str, dict[str, str]] = {
    "missing": {},
    "unknown": {"Authorization": f"Bearer {WELL_FORMED_UNKNOWN}"},
    "malformed": {"Authorization": "Bearer not-a-token-at-all"},
    "agent-shaped": {"Authorization": "Bearer kfa_" + "Q" * 43},
    "wrong-scheme": {"Authorization": f"Basic {WELL_FORMED_UNKNOWN}"},
    "empty-bearer": {"Authorization": "Bearer"},
}
# Bodies that would succeed with a good token, so the 401 is all that stops them.
BODIES: dict[str, Any] = {
    "/v1/secret-sets": make_set("openai", "prod", "other"),
    "/v1/tokens": {"name": "sneaky"},
    "/v1/agents": {"name": "sneaky-bot"},
    f"/v1/secret-sets/{SEEDED}": {"entries": {"OPENAI_API_KEY": CANARY + "-x"}},
    f"/v1/secret-sets/{SEEDED}/rollback": {"version": 1},
}
ROUTES = [pytest.param(m, p, id=f"{m} {p}") for m, p in operator_routes()]


def test_every_documented_operator_route_is_covered() -> None:
    assert len(ROUTES) >= 19


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_operator_route_refuses_without_a_valid_token(
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    seeded: dict[str, Any],
    method: str,
    path: str,
) -> None:
    url = concrete(path)
    before = await state_of(client)
    answers = []

    for headers in BAD_CREDENTIALS.values():
        response = await anonymous.request(method, url, json=BODIES.get(url), headers=headers)
        body = assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
        answers.append({k: v for k, v in body.items() if k != "request_id"})

    assert all(a == answers[0] for a in answers), answers
    after = await state_of(client)
    assert after.pop("audit_count") - before.pop("audit_count") == len(BAD_CREDENTIALS)
    assert after == before
    audited = (
        await client.get("/v1/audit", params={"action": "auth.failed", "limit": 1000})
    ).json()["items"]
    assert {(e["actor"], e["outcome"], e["target"]) for e in audited} == {
        ("anonymous", "denied", f"route:{url}")
    }
    reasons = [e["details"]["reason"] for e in audited]
    assert len(reasons) == len(BAD_CREDENTIALS)
    assert reasons[:2] == ["missing", "unknown"]
    assert set(reasons) <= {"missing", "unknown", "malformed"}
    export = (await client.get("/v1/audit/export")).text
    assert "Q" * 43 not in export
    assert "not-a-token-at-all" not in export


async def test_service_routes_need_no_token(anonymous: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json"):
        response = await anonymous.get(path)
        assert response.status_code == 200, (path, response.text)
