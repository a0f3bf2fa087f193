"""``keyfob keys …`` and ``keyfob token …`` against the real app in-process (``real``)."""

from __future__ import annotations

import json
from typing import Any

from .conftest import Cli, RealKeyfob

NEW_TOKEN = "kfo_" + "N" * 43


def api(real: RealKeyfob, method: str, path: str) -> Any:
    """What the API itself answers (to compare the CLI's output with)."""
    with real.http() as http:
        answer = http.request(method, path)
    assert answer.status_code < 300, answer.text
    return answer.json()


def secret_set(real: RealKeyfob, name: str) -> None:
    """A set whose data key the active term wraps."""
    body = {
        "provider": "openai",
        "environment": "prod",
        "name": name,
        "entries": {"OPENAI_API_KEY": "sk-" + "v" * 24},
    }
    with real.http() as http:
        assert http.post("/v1/secret-sets", json=body).status_code == 201


def test_keys_status_table(real_cli: Cli, real: RealKeyfob):
    secret_set(real, "before")
    assert real_cli("keys", "rotate").exit_code == 0
    view = api(real, "GET", "/v1/keys")

    result = real_cli("keys", "status")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "active key term: 2"
    assert lines[1].split() == ["TERM", "STATUS", "CREATED", "RECORDS"]
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    first = next(t for t in view["terms"] if t["term"] == 1)
    created = first["created_at"][:10], first["created_at"][11:19]
    assert rows["1"] == ["1", first["status"], *created, str(first["records"])]
    assert first["records"] == 1
    assert f"audit signing key: {view['audit_public_key']}" in result.stdout


def test_keys_status_json_is_the_server_view(real_cli: Cli, real: RealKeyfob):
    secret_set(real, "default")

    shown = json.loads(real_cli("keys", "status", "--json").stdout)

    assert shown == api(real, "GET", "/v1/keys")
    assert shown["active_term"] == 1


def test_keys_rotate_rewrap_retire(real_cli: Cli, real: RealKeyfob):
    secret_set(real, "one")
    secret_set(real, "two")

    assert "new active key term: 2" in real_cli("keys", "rotate").stdout
    assert real_cli("keys", "rewrap").stdout == "rewrapped 2 data keys to key term 2\n"
    assert real_cli("keys", "retire", "1").stdout == "key term 1 is retired\n"
    terms = {t["term"]: t for t in api(real, "GET", "/v1/keys")["terms"]}
    assert terms[1]["status"] == "retired"
    assert terms[2]["records"] == 2


def test_keys_retire_of_a_used_term_is_a_conflict(real_cli: Cli, real: RealKeyfob):
    secret_set(real, "default")

    result = real_cli("keys", "retire", "1")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert result.stderr.endswith(" (HTTP 409 conflict)\n")
    assert len(result.stderr.splitlines()) == 1
    assert api(real, "GET", "/v1/keys")["terms"][0]["status"] == "active"


def test_token_create_prints_the_token_once(real_cli: Cli, real: RealKeyfob):
    result = real_cli("token", "create", "ci")

    assert result.exit_code == 0, result.output
    token = result.stdout.splitlines()[-1]  # alone on its line, easy to copy
    assert token.startswith("kfo_")
    assert result.stdout.count(token) == 1
    assert "you will not see it again" in result.stdout
    # It is a working operator token, and the server stored it under that name.
    listed = real_cli("token", "list", "--json", env={"KEYFOB_TOKEN": token})
    assert "ci" in [item["name"] for item in json.loads(listed.stdout)["items"]]


def test_token_create_json(real_cli: Cli, real: RealKeyfob):
    created = json.loads(real_cli("token", "create", "ci", "--json").stdout)

    assert created["token"].startswith("kfo_")
    assert created["name"] == "ci"
    ids = [item["id"] for item in api(real, "GET", "/v1/tokens")["items"]]
    assert created["id"] in ids


def test_token_list_and_revoke(real_cli: Cli, real: RealKeyfob):
    created = json.loads(real_cli("token", "create", "ci", "--json").stdout)

    listed = real_cli("token", "list")
    revoked = real_cli("token", "revoke", created["id"], "--json")

    row = next(line.split() for line in listed.stdout.splitlines() if created["id"] in line)
    ts = created["created_at"]
    assert row == [created["id"], "ci", ts[:10], ts[11:19], "-"]
    assert json.loads(revoked.stdout)["revoked_at"] is not None
    # The revoked token stops working on the next request.
    refused = real_cli("token", "list", env={"KEYFOB_TOKEN": created["token"]})
    assert refused.exit_code == 1
    assert "(HTTP 401 unauthorized)" in refused.stderr


def test_token_revoke_refuses_a_pasted_token(real_cli: Cli, real: RealKeyfob):
    real.requests.clear()

    result = real_cli("token", "revoke", NEW_TOKEN)

    assert result.exit_code == 1
    assert NEW_TOKEN not in result.output
    assert real.requests == []
