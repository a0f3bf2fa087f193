"""``keyfob set export``: the one command that prints values, and only when asked plainly."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyfob.cli.entries import parse_dotenv
from keyfob.cli.errors import CliError
from keyfob.cli.exports import dotenv_line

from .conftest import LEASE_TOKEN, Cli, FakeKeyfob, problem

EXPORT = "/v1/secret-sets/openai/prod/default/export"
WITH_LEASE = {"KEYFOB_LEASE": LEASE_TOKEN}


@pytest.fixture
def exported(api: FakeKeyfob, canary: str) -> FakeKeyfob:
    api.on(
        "POST",
        EXPORT,
        {
            "secret_set": "openai/prod/default",
            "entries": {"OPENAI_API_KEY": canary, "OPENAI_ORG": "org 1"},
        },
    )
    return api


def test_prints_dotenv_lines_when_stdout_is_not_a_terminal(
    cli: Cli, exported: FakeKeyfob, canary: str
):
    result = cli("set", "export", "openai/prod/default", env=WITH_LEASE)

    assert result.exit_code == 0, result.output
    assert result.stdout == f"OPENAI_API_KEY={canary}\nOPENAI_ORG='org 1'\n"
    assert result.stderr == ""
    (request,) = exported.requests
    assert request.headers["authorization"] == f"Bearer {LEASE_TOKEN}"
    assert json.loads(request.content) == {}


def test_json_is_the_server_answer(cli: Cli, exported: FakeKeyfob, canary: str):
    result = cli("set", "export", "openai/prod/default", "--json", env=WITH_LEASE)

    assert json.loads(result.stdout)["entries"]["OPENAI_API_KEY"] == canary


def test_keys_are_sent(cli: Cli, exported: FakeKeyfob):
    cli("set", "export", "openai/prod/default", "--key", "OPENAI_ORG", env=WITH_LEASE)

    assert exported.bodies("POST", EXPORT) == [{"keys": ["OPENAI_ORG"]}]


def test_the_lease_can_come_from_stdin(cli: Cli, exported: FakeKeyfob, canary: str):
    result = cli("set", "export", "openai/prod/default", input=LEASE_TOKEN + "\n")

    assert result.exit_code == 0, result.output
    assert canary in result.stdout
    assert LEASE_TOKEN not in result.output


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_terminal_is_refused_before_the_lease_is_used(
    cli: Cli, exported: FakeKeyfob, canary: str, json_flag: list[str]
):
    result = cli(
        "set", "export", "openai/prod/default", *json_flag, stdout_tty=True, env=WITH_LEASE
    )

    assert result.exit_code == 1
    assert "refusing to print secret values to a terminal" in result.stderr
    assert "--show" in result.stderr
    assert canary not in result.output
    assert exported.requests == []  # the lease was not sent, so no use was consumed


def test_show_prints_to_a_terminal(cli: Cli, exported: FakeKeyfob, canary: str):
    result = cli("set", "export", "openai/prod/default", "--show", stdout_tty=True, env=WITH_LEASE)

    assert result.exit_code == 0, result.output
    assert f"OPENAI_API_KEY={canary}" in result.stdout


def test_a_denial_shows_the_reason_and_no_value(cli: Cli, api: FakeKeyfob):
    api.on(
        "POST",
        EXPORT,
        lambda _r: problem(
            403, "forbidden", "the grant does not allow this action", reason="action_not_allowed"
        ),
    )

    result = cli("set", "export", "openai/prod/default", env=WITH_LEASE)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: the grant does not allow this action (reason: action_not_allowed)\n"
    )


def test_bad_set_path_and_key_names_are_refused_unsent(cli: Cli, api: FakeKeyfob):
    assert "is not a set path" in cli("set", "export", "openai", env=WITH_LEASE).stderr
    assert (
        "never the command line"
        in cli("set", "export", "openai/prod/default", "--key", "A=b", env=WITH_LEASE).stderr
    )
    assert api.requests == []


def test_a_value_dotenv_cannot_carry_prints_nothing(cli: Cli, api: FakeKeyfob):
    api.on(
        "POST",
        EXPORT,
        {"secret_set": "openai/prod/default", "entries": {"A": "plain", "B": "x\u2028y"}},
    )

    result = cli("set", "export", "openai/prod/default", env=WITH_LEASE)

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
