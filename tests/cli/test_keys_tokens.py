"""``keyfob keys …`` and ``keyfob token …`` against a fake API."""

from __future__ import annotations

import json

from .conftest import Cli, FakeKeyfob, problem

NEW_TOKEN = "kfo_" + "N" * 43


def keys_status() -> dict[str, object]:
    return {
        "active_term": 2,
        "terms": [
            {"term": 2, "status": "active", "created_at": "2026-11-24T05:00:00Z", "records": 4},
            {"term": 1, "status": "previous", "created_at": "2026-11-01T00:00:00Z", "records": 1},
        ],
        "audit_public_key": "ed25519:abc",
    }


def test_keys_status_table(cli: Cli, api: FakeKeyfob):
    api.on("GET", "/v1/keys", keys_status())

    result = cli("keys", "status")

    lines = result.stdout.splitlines()
    assert lines[0] == "active key term: 2"
    assert lines[1].split() == ["TERM", "STATUS", "CREATED", "RECORDS"]
    assert lines[3].split() == ["1", "previous", "2026-11-01", "00:00:00", "1"]
    assert "ed25519:abc" in result.stdout


def test_keys_status_json_is_the_server_view(cli: Cli, api: FakeKeyfob):
    api.on("GET", "/v1/keys", keys_status())

    assert json.loads(cli("keys", "status", "--json").stdout) == keys_status()


def test_keys_rotate_rewrap_retire(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/keys/rotate", {"term": 3}, status=201)
    api.on("POST", "/v1/keys/rewrap", {"rewrapped": 5, "term": 3})
    api.on("POST", "/v1/keys/1/retire", {"term": 1, "status": "retired"})

    assert "new active key term: 3" in cli("keys", "rotate").stdout
    assert cli("keys", "rewrap").stdout == "rewrapped 5 data keys to key term 3\n"
    assert cli("keys", "retire", "1").stdout == "key term 1 is retired\n"


def test_keys_retire_of_a_used_term_is_a_conflict(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/keys/2/retire", lambda _r: problem(409, "conflict", "key term 2 is active"))

    result = cli("keys", "retire", "2")

    assert result.exit_code == 1
    assert result.stderr == "error: key term 2 is active (HTTP 409 conflict)\n"


def test_token_create_prints_the_token_once(cli: Cli, api: FakeKeyfob):
    api.on(
        "POST",
        "/v1/tokens",
        {"id": "tok1", "name": "ci", "token": NEW_TOKEN, "created_at": "2026-11-24T05:00:00Z"},
        status=201,
    )

    result = cli("token", "create", "ci")

    assert api.bodies("POST", "/v1/tokens") == [{"name": "ci"}]
    assert result.stdout.count(NEW_TOKEN) == 1
    assert "you will not see it again" in result.stdout
    assert result.stdout.splitlines()[-1] == NEW_TOKEN  # alone on its line, easy to copy


def test_token_create_json(cli: Cli, api: FakeKeyfob):
    api.on(
        "POST",
        "/v1/tokens",
        {"id": "tok1", "name": "ci", "token": NEW_TOKEN, "created_at": "2026-11-24T05:00:00Z"},
        status=201,
    )

    assert json.loads(cli("token", "create", "ci", "--json").stdout)["token"] == NEW_TOKEN


def test_token_list_and_revoke(cli: Cli, api: FakeKeyfob):
    api.on(
        "GET",
        "/v1/tokens",
        {
            "items": [
                {
                    "id": "tok1",
                    "name": "ci",
                    "created_at": "2026-11-24T05:00:00Z",
                    "revoked_at": None,
                },
            ]
        },
    )
    api.on(
        "DELETE",
        "/v1/tokens/tok1",
        {
            "id": "tok1",
            "name": "ci",
            "created_at": "2026-11-24T05:00:00Z",
            "revoked_at": "2026-11-24T06:00:00Z",
        },
    )

    listed = cli("token", "list")
    revoked = cli("token", "revoke", "tok1", "--json")

    assert listed.stdout.splitlines()[1].split() == ["tok1", "ci", "2026-11-24", "05:00:00", "-"]
    assert json.loads(revoked.stdout)["revoked_at"] == "2026-11-24T06:00:00Z"


def test_token_revoke_refuses_a_pasted_token(cli: Cli, api: FakeKeyfob):
    result = cli("token", "revoke", NEW_TOKEN)

    assert result.exit_code == 1
    assert NEW_TOKEN not in result.output
    assert api.requests == []
