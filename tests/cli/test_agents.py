"""``keyfob agent …`` against a fake API: tokens shown once, refs checked, confirmation."""

from __future__ import annotations

import json

import pytest

from .conftest import AGENT_TOKEN, Cli, FakeKeyfob, agent_view, problem

ONE = "/v1/agents/billing-bot"


def test_create_prints_the_token_once(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/agents", {**agent_view(), "token": AGENT_TOKEN}, status=201)

    result = cli("agent", "create", "billing-bot")

    assert result.exit_code == 0, result.output
    assert api.bodies("POST", "/v1/agents") == [{"name": "billing-bot"}]
    assert result.stdout.count(AGENT_TOKEN) == 1
    assert "you will not see it again" in result.stdout
    assert AGENT_TOKEN in result.stdout.splitlines()  # alone on its line, easy to copy
    assert "KEYFOB_TOKEN" in result.stdout


def test_create_json_is_the_server_answer(cli: Cli, api: FakeKeyfob):
    answer = {**agent_view(), "token": AGENT_TOKEN}
    api.on("POST", "/v1/agents", answer, status=201)

    result = cli("agent", "create", "billing-bot", "--json")

    assert json.loads(result.stdout) == answer
    assert result.stdout.count(AGENT_TOKEN) == 1


def test_create_of_a_taken_name_is_one_error_line(cli: Cli, api: FakeKeyfob):
    api.on(
        "POST",
        "/v1/agents",
        lambda _r: problem(409, "conflict", "agent billing-bot already exists"),
    )

    result = cli("agent", "create", "billing-bot")

    assert result.exit_code == 1
    assert result.stderr == "error: agent billing-bot already exists (HTTP 409 conflict)\n"


def test_list_table_and_empty(cli: Cli, api: FakeKeyfob):
    api.on(
        "GET",
        "/v1/agents",
        {"items": [agent_view(), agent_view("ops", id="b2", status="disabled")]},
    )

    lines = cli("agent", "list").stdout.splitlines()

    assert lines[0].split() == ["ID", "NAME", "STATUS", "CREATED", "DISABLED"]
    assert lines[1].split() == [
        "a1b2c3d4e5f60708",
        "billing-bot",
        "active",
        "2026-11-24",
        "04:48:00",
        "-",
    ]
    assert lines[2].split()[:3] == ["b2", "ops", "disabled"]

    api.on("GET", "/v1/agents", {"items": []})
    assert cli("agent", "list").stdout == "no agents\n"
    assert json.loads(cli("agent", "list", "--json").stdout) == {"items": []}


def test_show_by_name(cli: Cli, api: FakeKeyfob):
    api.on("GET", ONE, agent_view())

    result = cli("agent", "show", "billing-bot")

    assert "name:        billing-bot" in result.stdout
    assert "created by:  operator:admin" in result.stdout
    assert json.loads(cli("agent", "show", "billing-bot", "--json").stdout) == agent_view()


@pytest.mark.parametrize(
    ("verb", "expected"),
    [
        ("disable", "disabled agent billing-bot (a1b2c3d4e5f60708); its leases are revoked"),
        ("enable", "enabled agent billing-bot (a1b2c3d4e5f60708)"),
    ],
)
def test_disable_and_enable(cli: Cli, api: FakeKeyfob, verb: str, expected: str):
    api.on("POST", f"{ONE}/{verb}", agent_view())

    result = cli("agent", verb, "billing-bot")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(expected)
    assert len(api.calls("POST", f"{ONE}/{verb}")) == 1


def test_rotate_token_prints_the_new_token_once(cli: Cli, api: FakeKeyfob):
    api.on("POST", f"{ONE}/rotate-token", {**agent_view(), "token": AGENT_TOKEN})

    result = cli("agent", "rotate-token", "billing-bot")

    assert result.stdout.count(AGENT_TOKEN) == 1
    assert "new agent token for billing-bot" in result.stdout
    assert "you will not see it again" in result.stdout


def test_delete_needs_confirmation(cli: Cli, api: FakeKeyfob):
    api.on("DELETE", ONE, {**agent_view(), "deleted": True})

    refused = cli("agent", "delete", "billing-bot")
    assert refused.exit_code == 1
    assert "pass --yes" in refused.stderr
    cancelled = cli("agent", "delete", "billing-bot", input="n\n", tty=True)
    assert cancelled.exit_code == 1
    assert "nothing was changed" in cancelled.stderr
    assert api.requests == []

    confirmed = cli("agent", "delete", "billing-bot", input="y\n", tty=True)
    assert confirmed.exit_code == 0, confirmed.output
    assert "deleted agent billing-bot" in confirmed.stdout
    assert json.loads(cli("agent", "delete", "billing-bot", "--yes", "--json").stdout)["deleted"]
    assert len(api.calls("DELETE", ONE)) == 2


@pytest.mark.parametrize("command", ["show", "disable", "enable", "rotate-token"])
def test_a_pasted_token_is_refused_unsent_and_unechoed(cli: Cli, api: FakeKeyfob, command: str):
    result = cli("agent", command, AGENT_TOKEN)

    assert result.exit_code == 1
    assert AGENT_TOKEN not in result.output
    assert "that is a token" in result.stderr
    assert api.requests == []


def test_a_ref_that_would_leave_its_url_segment_is_refused(cli: Cli, api: FakeKeyfob):
    result = cli("agent", "show", "../tokens")

    assert result.exit_code == 1
    assert "is not an agent id or name" in result.stderr
    assert api.requests == []
