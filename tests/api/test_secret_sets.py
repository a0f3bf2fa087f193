"""``/v1/secret-sets``: create, read, update with optimistic locking, version, delete, purge."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keyfob.vault import Vault
from tests.api.conftest import DELETED, SEEDED
from tests.conftest import CANARY, make_set
from tests.support.http import assert_problem

URL = f"/v1/secret-sets/{SEEDED}"
SET_VIEW_KEYS = {
    "id",
    "path",
    "provider",
    "environment",
    "name",
    "labels",
    "version",
    "keys",
    "profile",
    "created_at",
    "updated_at",
    "deleted_at",
    "exported_at",
    "needs_reconnect",
}
VERSION_VIEW_KEYS = {"version", "created_at", "actor", "reason", "rollback_of", "keys", "kek_term"}


async def values_of(vault: Vault, path: str, version: int | None = None) -> dict[str, str]:
    return {k: v.reveal() for k, v in (await vault.sets.reveal(path, version)).items()}


async def patch(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.patch(URL, json=body, headers=headers)


async def test_create_answers_201_with_location_etag_and_no_values(
    client: httpx.AsyncClient, vault: Vault
) -> None:
    response = await client.post(
        "/v1/secret-sets", json=make_set(labels={"team": "ml"}, profile={"preset": "openai"})
    )

    assert response.status_code == 201, response.text
    assert response.headers["location"] == URL
    assert response.headers["etag"] == '"1"'
    view = response.json()
    assert set(view) == SET_VIEW_KEYS
    assert (view["path"], view["version"], view["labels"]) == (SEEDED, 1, {"team": "ml"})
    assert [k["name"] for k in view["keys"]] == ["OPENAI_API_KEY"]
    assert view["keys"][0]["fingerprint"].startswith("hmac-sha256:")
    assert view["keys"][0]["version"] == 1
    assert view["profile"]["base_url"] == "https://api.openai.com"
    assert view["profile"]["inject"] == {"kind": "bearer", "key": "OPENAI_API_KEY"}
    assert view["deleted_at"] is None
    assert CANARY not in response.text
    assert await values_of(vault, SEEDED) == {"OPENAI_API_KEY": CANARY}

    shown = await client.get(response.headers["location"])
    assert shown.status_code == 200
    assert shown.json() == view
    assert shown.headers["etag"] == '"1"'


async def test_creating_a_taken_name_is_a_conflict(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    again = await client.post("/v1/secret-sets", json=make_set(entries={"OPENAI_API_KEY": "x"}))
    assert "exists" in assert_problem(again, 409, "conflict")["detail"]

    provider, environment, name = DELETED.split("/")
    deleted = await client.post(
        "/v1/secret-sets", json=make_set(provider, environment, name, {"STRIPE_API_KEY": "x"})
    )
    assert "restore or purge" in assert_problem(deleted, 409, "conflict")["detail"]


async def test_showing_a_missing_set_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/secret-sets/openai/prod/nothing-here")
    assert "openai/prod/nothing-here" in assert_problem(response, 404, "not-found")["detail"]


async def test_patch_makes_a_new_version_and_tracks_which_keys_changed(
    client: httpx.AsyncClient, vault: Vault, seeded: dict[str, Any]
) -> None:
    first_print = seeded["keys"][0]["fingerprint"]

    added = await patch(client, {"entries": {"OPENAI_ORG": "org-1"}})
    assert added.status_code == 200, added.text
    assert added.headers["etag"] == '"2"'
    keys = {k["name"]: k for k in added.json()["keys"]}
    assert keys["OPENAI_API_KEY"] == {**seeded["keys"][0], "version": 1}
    assert keys["OPENAI_ORG"]["version"] == 2

    changed = await patch(client, {"entries": {"OPENAI_API_KEY": CANARY + "-new"}})
    assert changed.json()["version"] == 3
    keys = {k["name"]: k for k in changed.json()["keys"]}
    assert keys["OPENAI_API_KEY"]["version"] == 3
    assert keys["OPENAI_API_KEY"]["fingerprint"] != first_print
    assert keys["OPENAI_ORG"]["version"] == 2
    assert CANARY not in changed.text
    assert await values_of(vault, SEEDED) == {
        "OPENAI_API_KEY": CANARY + "-new",
        "OPENAI_ORG": "org-1",
    }
    assert await values_of(vault, SEEDED, 1) == {"OPENAI_API_KEY": CANARY}


async def test_patch_with_null_removes_a_key(
    client: httpx.AsyncClient, vault: Vault, seeded: dict[str, Any]
) -> None:
    await patch(client, {"entries": {"OPENAI_ORG": "org-1"}})
    response = await patch(client, {"entries": {"OPENAI_ORG": None}})

    assert response.status_code == 200, response.text
    assert [k["name"] for k in response.json()["keys"]] == ["OPENAI_API_KEY"]
    assert response.json()["version"] == 3
    assert await values_of(vault, SEEDED) == {"OPENAI_API_KEY": CANARY}


async def test_patch_that_changes_nothing_makes_no_version(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    response = await patch(client, {"entries": {"OPENAI_API_KEY": CANARY}})

    assert response.status_code == 200
    assert response.json()["version"] == 1
    assert len((await client.get(f"{URL}/versions")).json()["items"]) == 1


async def test_patch_labels_replaces_them(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    response = await patch(client, {"labels": {"team": "infra", "tier": "gold"}})

    assert response.status_code == 200, response.text
    assert response.json()["labels"] == {"team": "infra", "tier": "gold"}
    assert (await client.get(URL)).json()["labels"] == {"team": "infra", "tier": "gold"}


@pytest.mark.parametrize("if_match", ['"1"', "1", 'W/"1"'])
async def test_patch_with_a_current_if_match_succeeds(
    client: httpx.AsyncClient, seeded: dict[str, Any], if_match: str
) -> None:
    response = await patch(client, {"entries": {"OPENAI_ORG": "o"}}, **{"If-Match": if_match})
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"2"'


async def test_a_lost_update_is_refused_with_the_current_version(
    client: httpx.AsyncClient, vault: Vault, seeded: dict[str, Any]
) -> None:
    etag = (await client.get(URL)).headers["etag"]
    alice = await patch(client, {"entries": {"OPENAI_API_KEY": "alice"}}, **{"If-Match": etag})
    assert alice.status_code == 200

    bob = await patch(client, {"entries": {"OPENAI_API_KEY": "bob"}}, **{"If-Match": etag})

    assert assert_problem(bob, 409, "conflict")["current_version"] == 2
    assert await values_of(vault, SEEDED) == {"OPENAI_API_KEY": "alice"}


async def test_expected_version_in_the_body_works_like_if_match(
    client: httpx.AsyncClient, vault: Vault, seeded: dict[str, Any]
) -> None:
    stale = await patch(client, {"entries": {"OPENAI_API_KEY": "x"}, "expected_version": 7})
    assert assert_problem(stale, 409, "conflict")["current_version"] == 1

    current = await patch(client, {"entries": {"OPENAI_API_KEY": "x"}, "expected_version": 1})
    assert current.status_code == 200
    assert await values_of(vault, SEEDED) == {"OPENAI_API_KEY": "x"}


async def test_delete_is_soft_and_restore_brings_the_set_back(
    client: httpx.AsyncClient, vault: Vault, seeded: dict[str, Any]
) -> None:
    deleted = await client.delete(URL)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted_at"] is not None

    listed = (await client.get("/v1/secret-sets")).json()["items"]
    assert SEEDED not in [s["path"] for s in listed]
    with_deleted = (await client.get("/v1/secret-sets?include_deleted=true")).json()["items"]
    assert SEEDED in [s["path"] for s in with_deleted]
    assert_problem(await patch(client, {"entries": {"OPENAI_API_KEY": "x"}}), 404, "not-found")
    assert_problem(await client.delete(URL), 404, "not-found")

    restored = await client.post(f"{URL}/restore")
    assert restored.status_code == 200, restored.text
    assert restored.json()["deleted_at"] is None
    assert restored.json()["version"] == 1
    assert await values_of(vault, SEEDED) == {"OPENAI_API_KEY": CANARY}


async def test_restoring_a_live_set_is_a_conflict(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    assert_problem(await client.post(f"{URL}/restore"), 409, "conflict")


async def test_purge_needs_a_delete_first_and_then_frees_the_name(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    live = await client.post(f"{URL}/purge")
    assert "deleted before" in assert_problem(live, 409, "conflict")["detail"]

    await patch(client, {"entries": {"OPENAI_API_KEY": "v2"}})
    await client.delete(URL)
    purged = await client.post(f"{URL}/purge")

    assert purged.status_code == 200, purged.text
    assert purged.json() == {"purged": SEEDED, "versions": 2}
    assert_problem(await client.get(URL), 404, "not-found")
    assert_problem(await client.get(f"{URL}/versions"), 404, "not-found")
    again = await client.post("/v1/secret-sets", json=make_set())
    assert again.status_code == 201
    assert again.json()["version"] == 1


async def test_versions_are_listed_newest_first(
    client: httpx.AsyncClient, seeded: dict[str, Any], operator_actor: str
) -> None:
    await patch(client, {"entries": {"OPENAI_ORG": "org"}})
    await client.post(f"{URL}/rollback", json={"version": 1})

    response = await client.get(f"{URL}/versions")

    assert response.status_code == 200
    items = response.json()["items"]
    assert all(set(v) == VERSION_VIEW_KEYS for v in items)
    assert [(v["version"], v["reason"], v["rollback_of"]) for v in items] == [
        (3, "rollback", 1),
        (2, "update", None),
        (1, "create", None),
    ]
    assert [v["keys"] for v in items] == [
        ["OPENAI_API_KEY"],
        ["OPENAI_API_KEY", "OPENAI_ORG"],
        ["OPENAI_API_KEY"],
    ]
    assert {v["actor"] for v in items} == {operator_actor}
    assert {v["kek_term"] for v in items} == {1}


async def test_rollback_copies_an_old_version_into_a_new_one(
    client: httpx.AsyncClient, vault: Vault, seeded: dict[str, Any]
) -> None:
    await patch(client, {"entries": {"OPENAI_API_KEY": "second"}})

    response = await client.post(f"{URL}/rollback", json={"version": 1})

    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"3"'
    assert response.json()["version"] == 3
    assert response.json()["keys"][0]["fingerprint"] == seeded["keys"][0]["fingerprint"]
    assert await values_of(vault, SEEDED) == {"OPENAI_API_KEY": CANARY}


async def test_rollback_checks_the_version_and_the_expected_version(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    missing = await client.post(f"{URL}/rollback", json={"version": 9})
    assert "no version 9" in assert_problem(missing, 404, "not-found")["detail"]

    stale = await client.post(f"{URL}/rollback", json={"version": 1}, headers={"If-Match": '"5"'})
    assert assert_problem(stale, 409, "conflict")["current_version"] == 1

    stale_body = await client.post(f"{URL}/rollback", json={"version": 1, "expected_version": 5})
    assert_problem(stale_body, 409, "conflict")


async def create_many(client: httpx.AsyncClient, paths: list[str]) -> None:
    for path in paths:
        provider, environment, name = path.split("/")
        body = make_set(provider, environment, name, {"API_KEY": "v"}, labels={"env": environment})
        assert (await client.post("/v1/secret-sets", json=body)).status_code == 201


PATHS = [
    "openai/prod/a",
    "openai/prod/b",
    "openai/dev/a",
    "anthropic/prod/a",
    "stripe/prod/a",
    "stripe/dev/b",
    "github/prod/ci",
]


async def test_list_filters_by_name_parts_and_labels(client: httpx.AsyncClient) -> None:
    await create_many(client, PATHS)

    async def paths(**params: str) -> list[str]:
        response = await client.get("/v1/secret-sets", params=params)
        assert response.status_code == 200, response.text
        return [s["path"] for s in response.json()["items"]]

    assert await paths(provider="openai") == ["openai/dev/a", "openai/prod/a", "openai/prod/b"]
    assert await paths(environment="dev") == ["openai/dev/a", "stripe/dev/b"]
    assert await paths(name="a", environment="prod") == [
        "anthropic/prod/a",
        "openai/prod/a",
        "stripe/prod/a",
    ]
    assert await paths(label="env:dev") == ["openai/dev/a", "stripe/dev/b"]
    assert await paths(label="env:nowhere") == []
    bad = await client.get("/v1/secret-sets", params={"label": "env"})
    assert "key:value" in assert_problem(bad, 400, "invalid-request")["detail"]


async def test_list_pages_with_a_cursor(client: httpx.AsyncClient) -> None:
    await create_many(client, PATHS)
    everything = [s["path"] for s in (await client.get("/v1/secret-sets")).json()["items"]]
    assert everything == sorted(PATHS)

    pages: list[list[str]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get("/v1/secret-sets", params=params)).json()
        pages.append([s["path"] for s in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 10, "the cursor never ends"

    assert [len(p) for p in pages] == [3, 3, 1]
    assert [path for page in pages for path in page] == everything


async def test_an_exact_last_page_has_no_cursor(client: httpx.AsyncClient) -> None:
    await create_many(client, PATHS[:4])
    body = (await client.get("/v1/secret-sets", params={"limit": 4})).json()
    assert len(body["items"]) == 4
    assert body["next_cursor"] is None


async def test_a_forged_cursor_is_a_bad_request(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/secret-sets", params={"cursor": "not-a-cursor!"})
    assert_problem(response, 400, "invalid-request")
