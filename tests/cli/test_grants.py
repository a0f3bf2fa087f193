"""``keyfob grant …`` against the real app in-process: what lands in the vault, --ttl,
output shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyfob.cli.constraints import parse_duration
from keyfob.cli.errors import CliError

from .conftest import Cli, RealKeyfob

GRANTS = "/v1/grants"


def api(real: RealKeyfob, method: str, path: str, **kwargs: Any) -> Any:
    """What the API itself answers."""
    with real.http() as http:
        answer = http.request(method, path, **kwargs)
    assert answer.status_code < 300, answer.text
    return answer.json()


@pytest.fixture
def world(real: RealKeyfob) -> dict[str, Any]:
    """An agent ``billing-bot`` and a set ``openai/prod/default`` with two keys."""
    agent = api(real, "POST", "/v1/agents", json={"name": "billing-bot"})
    entries = {"OPENAI_API_KEY": "sk-" + "v" * 24, "OPENAI_ORG": "org-1"}
    body = {"provider": "openai", "environment": "prod", "name": "default", "entries": entries}
    api(real, "POST", "/v1/secret-sets", json=body)
    real.requests.clear()
    return {"agent": agent}


def grant(real: RealKeyfob, **spec: Any) -> dict[str, Any]:
    """A grant made through the API (not the CLI under test)."""
    body = {"agent": "billing-bot", "secret_set": "openai/prod/default", **spec}
    view: dict[str, Any] = api(real, "POST", GRANTS, json=body)
    return view


def grants(real: RealKeyfob) -> list[dict[str, Any]]:
    """Every grant in the vault, revoked ones too."""
    items: list[dict[str, Any]] = api(real, "GET", GRANTS, params={"include_revoked": "true"})[
        "items"
    ]
    return items


def test_create_sends_only_agent_and_set_by_default(
    real_cli: Cli, real: RealKeyfob, world: dict[str, Any]
):
    result = real_cli("grant", "create", "--agent", "billing-bot", "--set", "openai/prod/default")

    assert result.exit_code == 0, result.output
    (made,) = grants(real)
    assert made["agent_id"] == world["agent"]["id"]
    assert result.stdout == (
        f"granted billing-bot proxy on openai/prod/default (grant {made['id']})\n"
    )
    # Nothing given, nothing sent: the server's defaults apply.
    (request,) = real.calls("POST", GRANTS)
    assert json.loads(request.content) == {
        "agent": "billing-bot",
        "secret_set": "openai/prod/default",
    }
    assert made["actions"] == ["proxy"]
    assert made["keys"] is None
    assert made["rate_limit"] is None


def test_create_sends_every_constraint_given(
    real_cli: Cli, real: RealKeyfob, world: dict[str, Any]
):
    result = real_cli(
        "grant", "create", "--agent", "billing-bot", "--set", "openai/prod/default",
        "--key", "OPENAI_API_KEY", "--key", "OPENAI_ORG",
        "--action", "proxy", "--action", "export",
        "--scope", "request", "--scope", "workflow",
        "--not-before", "2026-12-01T00:00:00Z", "--expires-at", "2099-01-01T00:00:00Z",
        "--max-lease-ttl", "600", "--max-lease-uses", "10", "--rate-limit", "30",
        "--max-uses", "1000", "--method", "post", "--method", "GET",
        "--path", "/v1/chat/*", "--path", "/v1/models/**", "--approval", "required",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    (made,) = grants(real)
    assert made["not_before"].startswith("2026-12-01T00:00:00")
    assert made["expires_at"].startswith("2099-01-01T00:00:00")
    rest = {k: v for k, v in made.items() if k not in ("not_before", "expires_at")}
    assert rest == rest | {
        "agent": "billing-bot",
        "secret_set": "openai/prod/default",
        "keys": ["OPENAI_API_KEY", "OPENAI_ORG"],
        "actions": ["proxy", "export"],
        "scopes": ["request", "workflow"],
        "max_lease_ttl": 600,
        "max_lease_uses": 10,
        "rate_limit": 30,
        "max_uses": 1000,
        "methods": ["GET", "POST"],  # upper-cased by the CLI, sorted by the server
        "paths": ["/v1/chat/*", "/v1/models/**"],
        "approval": "required",
    }


def test_ttl_becomes_expires_at_from_now_in_utc(
    real_cli: Cli, real: RealKeyfob, world: dict[str, Any]
):
    real_cli.now = datetime.now(UTC).replace(microsecond=0)

    result = real_cli("grant", "create", "--agent", "billing-bot", "--set", "openai/prod/default",
                      "--ttl", "2h")  # fmt: skip

    assert result.exit_code == 0, result.output
    (made,) = grants(real)
    expires = datetime.fromisoformat(made["expires_at"].replace("Z", "+00:00"))
    assert expires == real_cli.now + timedelta(hours=2)


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


def test_ttl_and_expires_at_together_are_refused(
    real_cli: Cli, real: RealKeyfob, world: dict[str, Any]
):
    result = real_cli(
        "grant", "create", "--agent", "billing-bot", "--set", "openai/prod/default",
        "--ttl", "2h", "--expires-at", "2099-01-01T00:00:00Z",
    )  # fmt: skip

    assert result.exit_code == 1
    assert "not both" in result.stderr
    assert real.requests == []
    assert grants(real) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "openai/prod"], "is not a set path"),
        (["--key", "OPENAI_API_KEY=sk-oops"], "never the command line"),
        (["--ttl", "soon"], "--ttl takes a duration"),
    ],
)
def test_bad_input_is_refused_before_sending(
    real_cli: Cli, real: RealKeyfob, world: dict[str, Any], args: list[str], message: str
):
    base = {"--agent": "billing-bot", "--set": "openai/prod/default"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    result = real_cli("grant", "create", *[part for pair in base.items() for part in pair])

    assert result.exit_code == 1
    assert message in result.stderr
    assert "sk-oops" not in result.output
    assert real.requests == []
    assert grants(real) == []


def test_unknown_action_is_a_usage_error(real_cli: Cli, real: RealKeyfob, world: dict[str, Any]):
    result = real_cli("grant", "create", "--agent", "billing-bot", "--set",
                      "openai/prod/default", "--action", "decrypt")  # fmt: skip

    assert result.exit_code == 2
    assert real.requests == []


def test_create_conflict_is_one_line(real_cli: Cli, real: RealKeyfob, world: dict[str, Any]):
    first = grant(real)
    with real.http() as http:
        detail = http.post(
            GRANTS, json={"agent": "billing-bot", "secret_set": "openai/prod/default"}
        ).json()["detail"]

    result = real_cli("grant", "create", "--agent", "billing-bot", "--set", "openai/prod/default")

    assert result.exit_code == 1
    assert result.stderr == f"error: {detail} (HTTP 409 conflict)\n"
    assert "billing-bot" in detail
    assert [g["id"] for g in grants(real)] == [first["id"]]


def test_update_sends_only_what_was_given(real_cli: Cli, real: RealKeyfob, world: dict[str, Any]):
    made = grant(real, max_uses=7, keys=["OPENAI_ORG"])
    real_cli.now = datetime.now(UTC).replace(microsecond=0)

    result = real_cli("grant", "update", made["id"], "--rate-limit", "60", "--ttl", "30m")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"updated grant {made['id']} (expires_at, rate_limit)\n"
    (now,) = grants(real)
    assert now["rate_limit"] == 60
    expires = datetime.fromisoformat(now["expires_at"].replace("Z", "+00:00"))
    assert expires == real_cli.now + timedelta(minutes=30)
    # What was not given is left as it was.
    assert (now["max_uses"], now["keys"]) == (7, ["OPENAI_ORG"])


def test_update_clear_sends_null(real_cli: Cli, real: RealKeyfob, world: dict[str, Any]):
    made = grant(real, rate_limit=30, keys=["OPENAI_ORG"], max_uses=7)

    result = real_cli("grant", "update", made["id"], "--clear", "rate-limit", "--clear", "keys")

    assert result.exit_code == 0, result.output
    (now,) = grants(real)
    assert (now["rate_limit"], now["keys"], now["max_uses"]) == (None, None, 7)


def test_update_refuses_nothing_and_contradictions(
    real_cli: Cli, real: RealKeyfob, world: dict[str, Any]
):
    made = grant(real, max_uses=7)
    real.requests.clear()

    nothing = real_cli("grant", "update", made["id"])
    both = real_cli("grant", "update", made["id"], "--max-uses", "5", "--clear", "max-uses")

    assert "nothing to change" in nothing.stderr
    assert "max_uses is both set and cleared" in both.stderr
    assert real.requests == []
    assert grants(real) == [made]


def test_list_sends_filters_and_prints_a_table(
    real_cli: Cli, real: RealKeyfob, world: dict[str, Any]
):
    made = grant(real, keys=["OPENAI_API_KEY"])
    api(real, "POST", "/v1/agents", json={"name": "other-bot"})
    grant(real, agent="other-bot")
    api(real, "POST", "/v1/secret-sets", json={
        "provider": "stripe", "environment": "prod", "name": "billing", "entries": {"K": "v"},
    })  # fmt: skip
    grant(real, secret_set="stripe/prod/billing")

    result = real_cli("grant", "list", "--agent", "billing-bot", "--set", "openai/prod/default")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "ID", "AGENT", "SET", "ACTIONS", "SCOPES", "KEYS", "USES", "EXPIRES", "REVOKED",
    ]  # fmt: skip
    assert [line.split() for line in lines[1:]] == [[
        made["id"], "billing-bot", "openai/prod/default", "proxy", "request",
        "OPENAI_API_KEY", "0", "-", "-",
    ]]  # fmt: skip


def test_list_include_revoked_and_empty(real_cli: Cli, real: RealKeyfob, world: dict[str, Any]):
    assert real_cli("grant", "list").stdout == "no grants\n"
    made = grant(real)
    api(real, "DELETE", f"{GRANTS}/{made['id']}")

    assert real_cli("grant", "list").stdout == "no grants\n"
    (row,) = real_cli("grant", "list", "--include-revoked").stdout.splitlines()[1:]
    assert row.split()[0] == made["id"]
    assert row.split()[-1] != "-"  # the revoked time


def test_show_fields_and_json(real_cli: Cli, real: RealKeyfob, world: dict[str, Any]):
    made = grant(real, rate_limit=30, paths=["/v1/chat/*"], expires_at="2099-01-01T00:00:00Z")

    shown = real_cli("grant", "show", made["id"]).stdout

    assert f"agent:           billing-bot ({world['agent']['id']})" in shown
    assert "keys:            all" in shown
    assert "rate limit:      30 / min" in shown
    assert "paths:           /v1/chat/*" in shown
    assert "methods:         any" in shown
    assert "expires:         2099-01-01 00:00:00" in shown
    assert json.loads(real_cli("grant", "show", made["id"], "--json").stdout) == api(
        real, "GET", f"{GRANTS}/{made['id']}"
    )


def test_revoke(real_cli: Cli, real: RealKeyfob, world: dict[str, Any]):
    made = grant(real)

    result = real_cli("grant", "revoke", made["id"])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        f"revoked grant {made['id']} (billing-bot on openai/prod/default)"
    )
    (now,) = grants(real)
    assert now["revoked_at"] is not None
