"""``keyfob grant``: out-of-range constraint values are refused before anything is sent.

Regression tests for issue 10 item 13 on the CLI side; the bounds come from the spec.
"""

from __future__ import annotations

from typing import Any

import pytest

from keyfob.cli.constraints import Action, Scope
from keyfob.constraints import BY_NAME

from .conftest import Cli, RealKeyfob

BASE = ("grant", "create", "--agent", "billing-bot", "--set", "openai/prod/default")


def grants(real: RealKeyfob) -> list[dict[str, Any]]:
    with real.http() as http:
        answer = http.get("/v1/grants", params={"include_revoked": "true"})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


@pytest.fixture
def world(real: RealKeyfob) -> None:
    """The agent and the set that BASE names."""
    body = {"provider": "openai", "environment": "prod", "name": "default", "entries": {"K": "v"}}
    with real.http() as http:
        assert http.post("/v1/agents", json={"name": "billing-bot"}).status_code == 201
        assert http.post("/v1/secret-sets", json=body).status_code == 201
    real.requests.clear()


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-lease-ttl", "86401"),
        ("--max-lease-ttl", str(2**63)),
        ("--max-lease-uses", str(2**63)),
        ("--rate-limit", "10000001"),
        ("--max-uses", str(10**40)),
    ],
)
def test_out_of_range_counts_are_usage_errors(
    real_cli: Cli, real: RealKeyfob, world: None, flag: str, value: str
):
    """Failed before the fix: the value was sent to the server (no range on the option)."""
    result = real_cli(*BASE, flag, value)

    assert result.exit_code == 2, result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert flag in text
    assert f"less than or equal to {BY_NAME[flag[2:].replace('-', '_')].maximum}" in text
    assert real.requests == []
    assert grants(real) == []


@pytest.mark.parametrize(
    "flag", ["--max-lease-ttl", "--max-lease-uses", "--rate-limit", "--max-uses"]
)
def test_the_largest_count_the_cli_takes_the_server_stores(
    real_cli: Cli, real: RealKeyfob, world: None, flag: str
):
    """The CLI's bound is the server's: its maximum is accepted and lands in the vault."""
    field = flag[2:].replace("-", "_")
    maximum = BY_NAME[field].maximum

    result = real_cli(*BASE, flag, str(maximum))

    assert result.exit_code == 0, result.output
    (made,) = grants(real)
    assert made[field] == maximum


@pytest.mark.parametrize("ttl", ["99999999999999999999", "3000000d", "999999999d"])
def test_a_ttl_past_what_a_time_can_hold_is_one_line(
    real_cli: Cli, real: RealKeyfob, world: None, ttl: str
):
    """Failed before the fix: OverflowError escaped as a traceback (exit 1, no message)."""
    result = real_cli(*BASE, "--ttl", ttl)

    assert result.exit_code == 1, result.output
    assert "--ttl would end the grant after the year 9998" in result.stderr
    assert "Traceback" not in result.output
    assert real.requests == []
    assert grants(real) == []


def test_lease_commands_offer_the_grant_choices():
    """The agent-side Action and Scope enums name exactly the spec's choices."""
    assert tuple(Action) == BY_NAME["actions"].choices
    assert tuple(Scope) == BY_NAME["scopes"].choices
