"""``keyfob grant …`` against a fake API: request bodies, --ttl, output shapes."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from keyfob.cli.constraints import parse_duration
from keyfob.cli.errors import CliError

from .conftest import Cli, FakeKeyfob, grant_view, problem

GRANTS = "/v1/grants"
ONE = "/v1/grants/g1a2b3c4d5e6f708"


@pytest.fixture
def granted(api: FakeKeyfob) -> FakeKeyfob:
    api.on("POST", GRANTS, grant_view(), status=201)
    return api


def test_create_sends_only_agent_and_set_by_default(cli: Cli, granted: FakeKeyfob):
    result = cli("grant", "create", "--agent", "billing-bot", "--set", "openai/prod/default")

    assert result.exit_code == 0, result.output
    assert granted.bodies("POST", GRANTS) == [
        {"agent": "billing-bot", "secret_set": "openai/prod/default"}
    ]
    assert result.stdout == (
        "granted billing-bot proxy on openai/prod/default (grant g1a2b3c4d5e6f708)\n"
    )


def test_create_sends_every_constraint_given(cli: Cli, granted: FakeKeyfob):
    result = cli(
        "grant", "create", "--agent", "billing-bot", "--set", "openai/prod/default",
        "--key", "OPENAI_API_KEY", "--key", "OPENAI_ORG",
        "--action", "proxy", "--action", "export",
        "--scope", "request", "--scope", "workflow",
        "--not-before", "2026-12-01T00:00:00Z", "--expires-at", "2027-01-01T00:00:00Z",
        "--max-lease-ttl", "600", "--max-lease-uses", "10", "--rate-limit", "30",
        "--max-uses", "1000", "--method", "post", "--method", "GET",
        "--path", "/v1/chat/*", "--path", "/v1/models/**", "--approval", "required",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    (body,) = granted.bodies("POST", GRANTS)
    assert body == {
        "agent": "billing-bot",
        "secret_set": "openai/prod/default",
        "keys": ["OPENAI_API_KEY", "OPENAI_ORG"],
        "actions": ["proxy", "export"],
        "scopes": ["request", "workflow"],
        "not_before": "2026-12-01T00:00:00Z",
        "expires_at": "2027-01-01T00:00:00Z",
        "max_lease_ttl": 600,
        "max_lease_uses": 10,
        "rate_limit": 30,
        "max_uses": 1000,
        "methods": ["POST", "GET"],
        "paths": ["/v1/chat/*", "/v1/models/**"],
        "approval": "required",
    }


def test_ttl_becomes_expires_at_from_now_in_utc(cli: Cli, granted: FakeKeyfob):
    cli("grant", "create", "--agent", "a", "--set", "openai/prod/default", "--ttl", "2h")

    assert granted.bodies("POST", GRANTS)[0]["expires_at"] == "2026-11-24T08:00:00Z"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604_800), ("1h30m", 5400)],
)
def test_durations(text: str, seconds: int):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "2x", "h", "-5m", "1.5h", "0", "0s", "2h 30m"])
def test_bad_durations_are_refused(text: str):
    with pytest.raises(CliError):
        parse_duration(text)


def test_ttl_and_expires_at_together_are_refused(cli: Cli, api: FakeKeyfob):
    result = cli(
        "grant", "create", "--agent", "a", "--set", "openai/prod/default",
        "--ttl", "2h", "--expires-at", "2027-01-01T00:00:00Z",
    )  # fmt: skip

    assert result.exit_code == 1
    assert "not both" in result.stderr
    assert api.requests == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "openai/prod"], "is not a set path"),
        (["--key", "OPENAI_API_KEY=sk-oops"], "never the command line"),
        (["--ttl", "soon"], "--ttl takes a duration"),
    ],
)
def test_bad_input_is_refused_before_sending(
    cli: Cli, api: FakeKeyfob, args: list[str], message: str
):
    base = {"--agent": "billing-bot", "--set": "openai/prod/default"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    result = cli("grant", "create", *[part for pair in base.items() for part in pair])

    assert result.exit_code == 1
    assert message in result.stderr
    assert "sk-oops" not in result.output
    assert api.requests == []


def test_unknown_action_is_a_usage_error(cli: Cli, api: FakeKeyfob):
    result = cli("grant", "create", "--agent", "a", "--set", "a/b/c", "--action", "decrypt")

    assert result.exit_code == 2
    assert api.requests == []


def test_create_conflict_is_one_line(cli: Cli, api: FakeKeyfob):
    api.on(
        "POST",
        GRANTS,
        lambda _r: problem(409, "conflict", "agent a already has a grant on openai/prod/default"),
    )

    result = cli("grant", "create", "--agent", "a", "--set", "openai/prod/default")

    assert result.stderr == (
        "error: agent a already has a grant on openai/prod/default (HTTP 409 conflict)\n"
    )


def test_update_sends_only_what_was_given(cli: Cli, api: FakeKeyfob):
    api.on("PATCH", ONE, grant_view(rate_limit=60))

    result = cli("grant", "update", "g1a2b3c4d5e6f708", "--rate-limit", "60", "--ttl", "30m")

    assert result.exit_code == 0, result.output
    assert api.bodies("PATCH", ONE) == [{"rate_limit": 60, "expires_at": "2026-11-24T06:30:00Z"}]
    assert result.stdout == "updated grant g1a2b3c4d5e6f708 (expires_at, rate_limit)\n"


def test_update_clear_sends_null(cli: Cli, api: FakeKeyfob):
    api.on("PATCH", ONE, grant_view())

    cli("grant", "update", "g1a2b3c4d5e6f708", "--clear", "rate-limit", "--clear", "keys")

    assert api.bodies("PATCH", ONE) == [{"rate_limit": None, "keys": None}]


def test_update_refuses_nothing_and_contradictions(cli: Cli, api: FakeKeyfob):
    nothing = cli("grant", "update", "g1a2b3c4d5e6f708")
    both = cli("grant", "update", "g1a2b3c4d5e6f708", "--max-uses", "5", "--clear", "max-uses")

    assert "nothing to change" in nothing.stderr
    assert "max_uses is both set and cleared" in both.stderr
    assert api.requests == []


def test_list_sends_filters_and_prints_a_table(cli: Cli, api: FakeKeyfob):
    api.on("GET", GRANTS, {"items": [grant_view(keys=["OPENAI_API_KEY"], uses=3)]})

    result = cli("grant", "list", "--agent", "billing-bot", "--set", "openai/prod/default")

    (request,) = api.calls("GET", GRANTS)
    assert dict(request.url.params) == {
        "agent": "billing-bot",
        "secret_set": "openai/prod/default",
        "include_revoked": "false",
    }
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "ID", "AGENT", "SET", "ACTIONS", "SCOPES", "KEYS", "USES", "EXPIRES", "REVOKED",
    ]  # fmt: skip
    assert lines[1].split() == [
        "g1a2b3c4d5e6f708", "billing-bot", "openai/prod/default", "proxy", "request",
        "OPENAI_API_KEY", "3", "-", "-",
    ]  # fmt: skip


def test_list_include_revoked_and_empty(cli: Cli, api: FakeKeyfob):
    api.on("GET", GRANTS, {"items": []})

    assert cli("grant", "list", "--include-revoked").stdout == "no grants\n"
    assert api.requests[0].url.params["include_revoked"] == "true"


def test_show_fields_and_json(cli: Cli, api: FakeKeyfob):
    view = grant_view(rate_limit=30, paths=["/v1/chat/*"], expires_at="2027-01-01T00:00:00Z")
    api.on("GET", ONE, view)

    shown = cli("grant", "show", "g1a2b3c4d5e6f708").stdout

    assert "agent:           billing-bot (a1b2c3d4e5f60708)" in shown
    assert "keys:            all" in shown
    assert "rate limit:      30 / min" in shown
    assert "paths:           /v1/chat/*" in shown
    assert "methods:         any" in shown
    assert "expires:         2027-01-01 00:00:00" in shown
    assert json.loads(cli("grant", "show", "g1a2b3c4d5e6f708", "--json").stdout) == view


def test_revoke(cli: Cli, api: FakeKeyfob):
    api.on("DELETE", ONE, grant_view(revoked_at="2026-11-24T07:00:00Z"))

    result = cli("grant", "revoke", "g1a2b3c4d5e6f708")

    assert result.stdout.startswith(
        "revoked grant g1a2b3c4d5e6f708 (billing-bot on openai/prod/default)"
    )
