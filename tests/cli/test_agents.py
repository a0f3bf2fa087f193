"""``keyfob agent …`` against the real app in-process: tokens shown once, refs checked,
confirmation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import AGENT_TOKEN, Cli, RealKeyfob

ONE = "/v1/agents/billing-bot"


def agent(real: RealKeyfob, ref: str = "billing-bot") -> dict[str, Any] | None:
    """The agent as the API shows it, or None if there is none."""
    with real.http() as http:
        answer = http.get(f"/v1/agents/{ref}")
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


def create(real_cli: Cli) -> dict[str, Any]:
    created: dict[str, Any] = json.loads(
        real_cli("agent", "create", "billing-bot", "--json").stdout
    )
    return created


def test_create_prints_the_token_once(real_cli: Cli, real: RealKeyfob):
    result = real_cli("agent", "create", "billing-bot")

    assert result.exit_code == 0, result.output
    tokens = [line for line in result.stdout.splitlines() if line.startswith("kfa_")]
    assert len(tokens) == 1  # alone on its line, easy to copy
    assert result.stdout.count(tokens[0]) == 1
    assert "you will not see it again" in result.stdout
    assert "KEYFOB_TOKEN" in result.stdout
    assert agent(real) is not None


def test_create_json_is_the_server_answer(real_cli: Cli, real: RealKeyfob):
    result = real_cli("agent", "create", "billing-bot", "--json")

    answer = json.loads(result.stdout)
    assert answer["token"].startswith("kfa_")
    assert result.stdout.count(answer["token"]) == 1
    assert {k: v for k, v in answer.items() if k != "token"} == agent(real)


def test_create_of_a_taken_name_is_one_error_line(real_cli: Cli, real: RealKeyfob):
    create(real_cli)

    result = real_cli("agent", "create", "billing-bot")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "billing-bot" in result.stderr
    assert result.stderr.endswith(" (HTTP 409 conflict)\n")
    assert len(result.stderr.splitlines()) == 1


def test_list_table_and_empty(real_cli: Cli, real: RealKeyfob):
    assert real_cli("agent", "list").stdout == "no agents\n"
    assert json.loads(real_cli("agent", "list", "--json").stdout)["items"] == []
    first = create(real_cli)
    real_cli("agent", "create", "ops")
    real_cli("agent", "disable", "ops")

    lines = real_cli("agent", "list").stdout.splitlines()

    assert lines[0].split() == ["ID", "NAME", "STATUS", "CREATED", "DISABLED"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    ts = first["created_at"]
    assert rows["billing-bot"] == [first["id"], "billing-bot", "active", ts[:10], ts[11:19], "-"]
    assert rows["ops"][2] == "disabled"


def test_show_by_name(real_cli: Cli, real: RealKeyfob):
    create(real_cli)

    result = real_cli("agent", "show", "billing-bot")

    assert "name:        billing-bot" in result.stdout
    assert "created by:  operator:" in result.stdout
    assert json.loads(real_cli("agent", "show", "billing-bot", "--json").stdout) == agent(real)


@pytest.mark.parametrize(
    ("verb", "expected", "status"),
    [
        ("disable", "disabled agent billing-bot ({id}); its leases are revoked", "disabled"),
        ("enable", "enabled agent billing-bot ({id})", "active"),
    ],
)
def test_disable_and_enable(
    real_cli: Cli, real: RealKeyfob, verb: str, expected: str, status: str
):
    created = create(real_cli)
    if verb == "enable":
        real_cli("agent", "disable", "billing-bot")

    result = real_cli("agent", verb, "billing-bot")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(expected.format(id=created["id"]))
    shown = agent(real)
    assert shown is not None
    assert shown["status"] == status


def test_rotate_token_prints_the_new_token_once(real_cli: Cli, real: RealKeyfob):
    old = create(real_cli)["token"]

    result = real_cli("agent", "rotate-token", "billing-bot")

    (new,) = [line for line in result.stdout.splitlines() if line.startswith("kfa_")]
    assert new != old
    assert result.stdout.count(new) == 1
    assert "new agent token for billing-bot" in result.stdout
    assert "you will not see it again" in result.stdout
    # The new token is the one that works now.
    assert real_cli("me", "grants", env={"KEYFOB_TOKEN": new}).exit_code == 0
    assert real_cli("me", "grants", env={"KEYFOB_TOKEN": old}).exit_code == 1


def test_delete_needs_confirmation(real_cli: Cli, real: RealKeyfob):
    create(real_cli)
    real.requests.clear()

    refused = real_cli("agent", "delete", "billing-bot")
    assert refused.exit_code == 1
    assert "pass --yes" in refused.stderr
    cancelled = real_cli("agent", "delete", "billing-bot", input="n\n", tty=True)
    assert cancelled.exit_code == 1
    assert "nothing was changed" in cancelled.stderr
    assert real.requests == []

    confirmed = real_cli("agent", "delete", "billing-bot", input="y\n", tty=True)
    assert confirmed.exit_code == 0, confirmed.output
    assert "deleted agent billing-bot" in confirmed.stdout
    assert agent(real) is None
    create(real_cli)
    assert json.loads(
        real_cli("agent", "delete", "billing-bot", "--yes", "--json").stdout
    )["deleted"]
    assert len(real.calls("DELETE", ONE)) == 2


@pytest.mark.parametrize("command", ["show", "disable", "enable", "rotate-token"])
def test_a_pasted_token_is_refused_unsent_and_unechoed(
    real_cli: Cli, real: RealKeyfob, command: str
):
    result = real_cli("agent", command, AGENT_TOKEN)

    assert result.exit_code == 1
    assert AGENT_TOKEN not in result.output
    assert "that is a token" in result.stderr
    assert real.requests == []


def test_a_ref_that_would_leave_its_url_segment_is_refused(real_cli: Cli, real: RealKeyfob):
    result = real_cli("agent", "show", "../tokens")

    assert result.exit_code == 1
    assert "is not an agent id or name" in result.stderr
    assert real.requests == []
