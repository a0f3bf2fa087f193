"""``keyfob grant``: out-of-range constraint values are refused before anything is sent.

Regression tests for issue 10 item 13 on the CLI side; the bounds come from the spec.
"""

from __future__ import annotations

import pytest

from keyfob.cli.constraints import Action, Scope
from keyfob.constraints import BY_NAME

from .conftest import Cli, FakeKeyfob

BASE = ("grant", "create", "--agent", "billing-bot", "--set", "openai/prod/default")


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
def test_out_of_range_counts_are_usage_errors(cli: Cli, api: FakeKeyfob, flag: str, value: str):
    """Failed before the fix: the value was sent to the server (no range on the option)."""
    result = cli(*BASE, flag, value)

    assert result.exit_code == 2, result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert flag in text
    assert f"less than or equal to {BY_NAME[flag[2:].replace('-', '_')].maximum}" in text
    assert api.requests == []


@pytest.mark.parametrize("ttl", ["99999999999999999999", "3000000d", "999999999d"])
def test_a_ttl_past_what_a_time_can_hold_is_one_line(cli: Cli, api: FakeKeyfob, ttl: str):
    """Failed before the fix: OverflowError escaped as a traceback (exit 1, no message)."""
    result = cli(*BASE, "--ttl", ttl)

    assert result.exit_code == 1, result.output
    assert "--ttl would end the grant after the year 9998" in result.stderr
    assert "Traceback" not in result.output
    assert api.requests == []


def test_lease_commands_offer_the_grant_choices():
    """The agent-side Action and Scope enums name exactly the spec's choices."""
    assert tuple(Action) == BY_NAME["actions"].choices
    assert tuple(Scope) == BY_NAME["scopes"].choices
