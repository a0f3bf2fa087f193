"""``keyfob set export``: the one command that prints values, and only when asked plainly."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyfob.cli.entries import parse_dotenv
from keyfob.cli.errors import CliError
from keyfob.cli.exports import dotenv_line
from keyfob.clock import FrozenClock

from .conftest import Cli, RealKeyfob

EXPORT = "/v1/secret-sets/openai/prod/default/export"
SET = "openai/prod/default"


def call(real: RealKeyfob, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
    """An API call (as the operator unless ``token`` is given) that must succeed."""
    with real.http() as http:
        if token is not None:
            http.headers["Authorization"] = f"Bearer {token}"
        answer = http.request(method, path, **kw)
    assert answer.status_code < 300, answer.text
    return answer.json()


def lease(
    real: RealKeyfob,
    entries: dict[str, str],
    grant: dict[str, Any] | None = None,
    max_uses: int = 1,
) -> str:
    """A lease of agent ``billing-bot`` on a set holding ``entries``; export granted."""
    agent = call(real, "POST", "/v1/agents", json={"name": "billing-bot"})
    body = {"provider": "openai", "environment": "prod", "name": "default", "entries": entries}
    call(real, "POST", "/v1/secret-sets", json=body)
    spec = {"actions": ["export"], "scopes": ["workflow"], "max_lease_uses": 10, **(grant or {})}
    call(real, "POST", "/v1/grants", json={"agent": "billing-bot", "secret_set": SET, **spec})
    minted = call(
        real,
        "POST",
        "/v1/leases",
        agent["token"],
        json={"secret_set": SET, "scope": "workflow", "max_uses": max_uses},
    )
    real.requests.clear()
    token: str = minted["token"]
    return token


def uses(real: RealKeyfob) -> int:
    """How many uses the (only) lease has had, as the vault counts them."""
    (item,) = call(real, "GET", "/v1/leases", params={"all": "true"})["items"]
    count: int = item["uses"]
    return count


@pytest.fixture
def exported(real: RealKeyfob, canary: str) -> str:
    """A lease that may export the set ``openai/prod/default`` three times."""
    return lease(real, {"OPENAI_API_KEY": canary, "OPENAI_ORG": "org 1"}, max_uses=3)


def test_prints_dotenv_lines_when_stdout_is_not_a_terminal(
    real_cli: Cli, real: RealKeyfob, exported: str, canary: str
):
    result = real_cli("set", "export", SET, env={"KEYFOB_LEASE": exported})

    assert result.exit_code == 0, result.output
    assert result.stdout == f"OPENAI_API_KEY={canary}\nOPENAI_ORG='org 1'\n"
    assert result.stderr == ""
    (request,) = real.requests
    assert request.headers["authorization"] == f"Bearer {exported}"
    assert json.loads(request.content) == {}
    assert uses(real) == 1


def test_json_is_the_server_answer(real_cli: Cli, real: RealKeyfob, exported: str, canary: str):
    result = real_cli("set", "export", SET, "--json", env={"KEYFOB_LEASE": exported})

    shown = json.loads(result.stdout)
    assert shown["entries"] == {"OPENAI_API_KEY": canary, "OPENAI_ORG": "org 1"}
    assert shown == call(real, "POST", EXPORT, exported, json={})  # the same, asked again


def test_keys_are_sent(real_cli: Cli, real: RealKeyfob, exported: str, canary: str):
    result = real_cli("set", "export", SET, "--key", "OPENAI_ORG", env={"KEYFOB_LEASE": exported})

    assert result.exit_code == 0, result.output
    assert result.stdout == "OPENAI_ORG='org 1'\n"
    assert canary not in result.output


def test_the_lease_can_come_from_stdin(real_cli: Cli, real: RealKeyfob, exported: str, canary: str):
    result = real_cli("set", "export", SET, input=exported + "\n")

    assert result.exit_code == 0, result.output
    assert canary in result.stdout
    assert exported not in result.output


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_terminal_is_refused_before_the_lease_is_used(
    real_cli: Cli, real: RealKeyfob, exported: str, canary: str, json_flag: list[str]
):
    result = real_cli(
        "set", "export", SET, *json_flag, stdout_tty=True, env={"KEYFOB_LEASE": exported}
    )

    assert result.exit_code == 1
    assert "refusing to print secret values to a terminal" in result.stderr
    assert "--show" in result.stderr
    assert canary not in result.output
    assert real.requests == []  # the lease was not sent, so no use was consumed
    assert uses(real) == 0


def test_show_prints_to_a_terminal(real_cli: Cli, real: RealKeyfob, exported: str, canary: str):
    result = real_cli(
        "set", "export", SET, "--show", stdout_tty=True, env={"KEYFOB_LEASE": exported}
    )

    assert result.exit_code == 0, result.output
    assert f"OPENAI_API_KEY={canary}" in result.stdout


def test_a_denial_shows_the_reason_and_no_value(real_cli: Cli, real: RealKeyfob, canary: str):
    token = lease(real, {"OPENAI_API_KEY": canary}, grant={"actions": ["proxy"]})
    with real.http() as http:
        http.headers["Authorization"] = f"Bearer {token}"
        problem = http.post(EXPORT, json={}).json()

    result = real_cli("set", "export", SET, env={"KEYFOB_LEASE": token})

    assert result.exit_code == 1
    assert result.stdout == ""
    assert problem["reason"] == "action_not_allowed"
    assert result.stderr == f"error: {problem['detail']} (reason: action_not_allowed)\n"
    assert canary not in result.output


def test_rate_limited_export_says_when_to_retry(real_cli: Cli, real: RealKeyfob, canary: str):
    token = lease(real, {"OPENAI_API_KEY": canary}, grant={"rate_limit": 1}, max_uses=3)
    # The vault's clock stands still, so the minute cannot turn between the uses.
    real.vault.core.clock = FrozenClock(datetime.now(UTC))
    call(real, "POST", EXPORT, token, json={})  # the one use this minute allows
    with real.http() as http:
        http.headers["Authorization"] = f"Bearer {token}"
        problem = http.post(EXPORT, json={}).json()

    result = real_cli("set", "export", SET, env={"KEYFOB_LEASE": token})

    assert result.exit_code == 1
    assert result.stdout == ""
    detail = re.escape(problem["detail"])
    # The wait is the server's (Retry-After: the seconds left in this minute).
    assert re.fullmatch(
        rf"error: {detail}; retry in [0-9]+ s \(reason: rate_limited\)\n", result.stderr
    ), result.stderr
    assert uses(real) == 1


def test_bad_set_path_and_key_names_are_refused_unsent(
    real_cli: Cli, real: RealKeyfob, exported: str
):
    with_lease = {"KEYFOB_LEASE": exported}
    assert "is not a set path" in real_cli("set", "export", "openai", env=with_lease).stderr
    assert (
        "never the command line"
        in real_cli("set", "export", SET, "--key", "A=b", env=with_lease).stderr
    )
    assert real.requests == []
    assert uses(real) == 0


def test_a_value_dotenv_cannot_carry_prints_nothing(real_cli: Cli, real: RealKeyfob):
    token = lease(real, {"A": "plain", "B": "x\u2028y"})

    result = real_cli("set", "export", SET, env={"KEYFOB_LEASE": token})

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "use --json" in result.stderr
    assert "plain" not in result.output


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("sk-abc_123", "K=sk-abc_123"),
        ("has space", "K='has space'"),
        ("a#b", "K='a#b'"),
        ("it's", 'K="it\'s"'),
        ("two\nlines", 'K="two\\nlines"'),
        ('q"uote\\', "K='q\"uote\\'"),
    ],
)
def test_dotenv_quoting(value: str, line: str):
    assert dotenv_line("K", value) == line


@given(st.text(min_size=1))
def test_dotenv_lines_read_back_as_the_same_value(value: str):
    try:
        line = dotenv_line("KEY", value)
    except CliError:
        return  # refused (a line break dotenv has no escape for): never printed wrongly
    parsed = parse_dotenv(line, "test")
    assert parsed["KEY"].reveal() == value
