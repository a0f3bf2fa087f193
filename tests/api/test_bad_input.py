"""Bad input gets a 4xx problem with a reason, never echoes a value, and changes nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import DELETED, SEEDED
from tests.conftest import CANARY, make_set
from tests.support.http import assert_problem, state_of

URL = f"/v1/secret-sets/{SEEDED}"
JSON = {"content-type": "application/json"}


def case(case_id: str, status: int, slug: str, method: str, url: str, **request: Any) -> Any:
    return pytest.param(status, slug, method, url, request, id=case_id)


# Every write route, given input it must refuse. The canary stands in wherever a
# secret value could be, so the answer can be searched for it.
# fmt: off
BAD_WRITES = [
    case("create-malformed-json", 400, "invalid-request", "POST", "/v1/secret-sets",
         content=b'{"entries": {"K": "' + CANARY.encode(), headers=JSON),
    case("patch-malformed-json", 400, "invalid-request", "PATCH", URL,
         content=b'{"entries": ' + CANARY.encode() + b"}", headers=JSON),
    case("create-form-encoded", 400, "invalid-request", "POST", "/v1/secret-sets",
         content=f"entries={CANARY}".encode(),
         headers={"content-type": "application/x-www-form-urlencoded"}),
    case("patch-text-plain", 400, "invalid-request", "PATCH", URL,
         content=CANARY.encode(), headers={"content-type": "text/plain"}),
    case("create-no-content-type", 400, "invalid-request", "POST", "/v1/secret-sets",
         content=b'{"entries": {"K": "' + CANARY.encode() + b'"}}'),
    case("create-entries-not-an-object", 422, "validation-failed", "POST", "/v1/secret-sets",
         json={**make_set(), "entries": CANARY}),
    case("create-value-not-a-string", 422, "validation-failed", "POST", "/v1/secret-sets",
         json=make_set("openai", "prod", "other", {"OPENAI_API_KEY": [CANARY]})),
    case("create-value-a-number", 422, "validation-failed", "POST", "/v1/secret-sets",
         json=make_set("openai", "prod", "other", {"OPENAI_API_KEY": 12345})),
    case("create-empty-value", 422, "validation-failed", "POST", "/v1/secret-sets",
         json=make_set("openai", "prod", "other", {"OPENAI_API_KEY": ""})),
    case("create-nul-in-value", 422, "validation-failed", "POST", "/v1/secret-sets",
         json=make_set("openai", "prod", "other", {"OPENAI_API_KEY": CANARY + "\x00"})),
    case("create-value-too-large", 422, "validation-failed", "POST", "/v1/secret-sets",
         json=make_set("openai", "prod", "other", {"OPENAI_API_KEY": CANARY * 1700})),
    case("create-bad-key-name", 422, "validation-failed", "POST", "/v1/secret-sets",
         json=make_set("openai", "prod", "other", {"openai-api-key": CANARY})),
    case("create-no-keys", 422, "validation-failed", "POST", "/v1/secret-sets",
         json=make_set("openai", "prod", "other", {})),
    case("create-too-many-keys", 422, "validation-failed", "POST", "/v1/secret-sets",
         json=make_set("openai", "prod", "other", {f"K{n}": CANARY for n in range(257)})),
    case("create-bad-slug", 422, "validation-failed", "POST", "/v1/secret-sets",
         json=make_set("OpenAI", "prod", "other")),
    case("create-provider-wrong-type", 422, "validation-failed", "POST", "/v1/secret-sets",
         json={**make_set(), "provider": {"value": CANARY}}),
    case("create-labels-wrong-type", 422, "validation-failed", "POST", "/v1/secret-sets",
         json={**make_set("openai", "prod", "other"), "labels": CANARY}),
    case("create-reserved-label", 422, "validation-failed", "POST", "/v1/secret-sets",
         json=make_set("openai", "prod", "other", labels={"provider": "x"})),
    case("create-unknown-field", 422, "validation-failed", "POST", "/v1/secret-sets",
         json={**make_set("openai", "prod", "other"), "value": CANARY}),
    case("create-missing-entries", 422, "validation-failed", "POST", "/v1/secret-sets",
         json={"provider": "openai", "environment": "prod", "name": "other"}),
    case("create-unknown-preset", 422, "validation-failed", "POST", "/v1/secret-sets",
         json=make_set("openai", "prod", "other", profile={"preset": "nope"})),
    case("create-profile-names-missing-key", 422, "validation-failed", "POST", "/v1/secret-sets",
         json=make_set("openai", "prod", "other", {"OTHER": CANARY}, profile={"preset": "openai"})),
    case("create-taken-name", 409, "conflict", "POST", "/v1/secret-sets",
         json=make_set(entries={"OPENAI_API_KEY": CANARY + "-again"})),
    case("create-deleted-name", 409, "conflict", "POST", "/v1/secret-sets",
         json=make_set("stripe", "prod", "billing", {"STRIPE_API_KEY": CANARY})),
    case("patch-value-wrong-type", 422, "validation-failed", "PATCH", URL,
         json={"entries": {"OPENAI_API_KEY": {"v": CANARY}}}),
    case("patch-bad-key-name", 422, "validation-failed", "PATCH", URL,
         json={"entries": {"lower": CANARY}}),
    case("patch-expected-version-wrong-type", 422, "validation-failed", "PATCH", URL,
         json={"entries": {"OPENAI_API_KEY": CANARY + "-x"}, "expected_version": CANARY}),
    case("patch-removes-last-key", 422, "validation-failed", "PATCH", URL,
         json={"entries": {"OPENAI_API_KEY": None}}),
    case("patch-profile-loses-its-key", 422, "validation-failed", "PATCH", URL,
         json={"entries": {"OPENAI_API_KEY": None, "OTHER": CANARY}}),
    case("patch-stale-if-match", 409, "conflict", "PATCH", URL,
         json={"entries": {"OPENAI_API_KEY": CANARY + "-x"}}, headers={"If-Match": '"2"'}),
    case("patch-stale-expected-version", 409, "conflict", "PATCH", URL,
         json={"entries": {"OPENAI_API_KEY": CANARY + "-x"}, "expected_version": 2}),
    case("patch-bad-if-match", 400, "invalid-request", "PATCH", URL,
         json={"entries": {"OPENAI_API_KEY": CANARY + "-x"}}, headers={"If-Match": "*"}),
    case("patch-missing-set", 404, "not-found", "PATCH", "/v1/secret-sets/openai/prod/nope",
         json={"entries": {"OPENAI_API_KEY": CANARY}}),
    case("patch-deleted-set", 404, "not-found", "PATCH", f"/v1/secret-sets/{DELETED}",
         json={"entries": {"STRIPE_API_KEY": CANARY}}),
    case("patch-bad-path", 422, "validation-failed", "PATCH", "/v1/secret-sets/Open/prod/x",
         json={"entries": {"OPENAI_API_KEY": CANARY}}),
    case("delete-missing-set", 404, "not-found", "DELETE", "/v1/secret-sets/openai/prod/nope"),
    case("delete-deleted-set", 404, "not-found", "DELETE", f"/v1/secret-sets/{DELETED}"),
    case("rollback-missing-version", 404, "not-found", "POST", f"{URL}/rollback",
         json={"version": 5}),
    case("rollback-version-wrong-type", 422, "validation-failed", "POST", f"{URL}/rollback",
         json={"version": "one"}),
    case("rollback-version-zero", 422, "validation-failed", "POST", f"{URL}/rollback",
         json={"version": 0}),
    case("rollback-stale-if-match", 409, "conflict", "POST", f"{URL}/rollback",
         json={"version": 1}, headers={"If-Match": '"9"'}),
    case("rollback-deleted-set", 404, "not-found", "POST", f"/v1/secret-sets/{DELETED}/rollback",
         json={"version": 1}),
    case("restore-live-set", 409, "conflict", "POST", f"{URL}/restore"),
    case("restore-missing-set", 404, "not-found", "POST", "/v1/secret-sets/a/b/c/restore"),
    case("purge-live-set", 409, "conflict", "POST", f"{URL}/purge"),
    case("purge-missing-set", 404, "not-found", "POST", "/v1/secret-sets/a/b/c/purge"),
    case("retire-active-term", 409, "conflict", "POST", "/v1/keys/1/retire"),
    case("retire-missing-term", 404, "not-found", "POST", "/v1/keys/7/retire"),
    case("retire-term-not-a-number", 422, "validation-failed", "POST", "/v1/keys/one/retire"),
    case("token-empty-name", 422, "validation-failed", "POST", "/v1/tokens", json={"name": ""}),
    case("token-blank-name", 422, "validation-failed", "POST", "/v1/tokens", json={"name": "  "}),
    case("token-name-too-long", 422, "validation-failed", "POST", "/v1/tokens",
         json={"name": CANARY * 3}),
    case("token-name-wrong-type", 422, "validation-failed", "POST", "/v1/tokens",
         json={"name": [CANARY]}),
    case("revoke-missing-token", 404, "not-found", "DELETE", "/v1/tokens/0123456789abcdef"),
    case("wrong-method", 405, "method-not-allowed", "PUT", URL,
         json={"entries": {"OPENAI_API_KEY": CANARY}}),
    case("unknown-route", 404, "not-found", "POST", "/v1/secrets",
         json={"entries": {"OPENAI_API_KEY": CANARY}}),
]
# fmt: on


@pytest.mark.parametrize(("status", "slug", "method", "url", "request_kw"), BAD_WRITES)
async def test_bad_write_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    seeded: dict[str, Any],
    status: int,
    slug: str,
    method: str,
    url: str,
    request_kw: dict[str, Any],
) -> None:
    before = await state_of(client)

    response = await client.request(method, url, **request_kw)

    body = assert_problem(response, status, slug)
    assert body["detail"]
    assert CANARY not in response.text
    assert CANARY not in str(response.headers)
    assert await state_of(client) == before


async def test_validation_errors_name_the_field(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    response = await client.post(
        "/v1/secret-sets", json={**make_set("openai", "prod", "x"), "labels": CANARY}
    )

    body = assert_problem(response, 422, "validation-failed")
    assert "labels" in body["detail"]
    assert [e["loc"] for e in body["errors"]] == [["body", "labels"]]
    assert all(set(e) == {"loc", "msg"} for e in body["errors"])


async def test_wrong_query_types_are_422_without_the_value(client: httpx.AsyncClient) -> None:
    for url, params in (
        ("/v1/secret-sets", {"limit": CANARY}),
        ("/v1/secret-sets", {"include_deleted": CANARY}),
        ("/v1/audit", {"after": CANARY}),
        ("/v1/audit", {"order": CANARY}),
    ):
        response = await client.get(url, params=params)
        assert_problem(response, 422, "validation-failed")
        assert CANARY not in response.text


async def test_wrong_method_names_what_is_allowed(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/keys/rotate")

    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "POST"


async def test_an_unknown_route_is_a_problem_not_a_page(client: httpx.AsyncClient) -> None:
    for path in ("/nope", "/v1", "/v1/secret-sets/a/b/c/d/e"):
        body = assert_problem(await client.get(path), 404, "not-found")
        assert body["detail"] == "no such route"
