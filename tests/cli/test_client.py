"""Failures a user sees: problem+json, unreachable servers, missing tokens, bad settings."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from .conftest import OPERATOR_TOKEN, Cli, FakeKeyfob, problem

TOKENS = "/v1/tokens"


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_operator_token_is_sent_as_bearer(cli: Cli, api: FakeKeyfob):
    api.on("GET", TOKENS, {"items": []})

    cli("token", "list")

    (request,) = api.requests
    assert request.headers["authorization"] == f"Bearer {OPERATOR_TOKEN}"


def test_token_file_wins_over_environment(cli: Cli, api: FakeKeyfob, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("kfo_from_file\n")
    api.on("GET", TOKENS, {"items": []})

    cli("--token-file", str(token_file), "token", "list")

    assert api.requests[0].headers["authorization"] == "Bearer kfo_from_file"


def test_unreadable_token_file_is_one_line(cli: Cli, api: FakeKeyfob, tmp_path):
    result = cli("--token-file", str(tmp_path / "nope"), "token", "list")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot read token file")
    assert api.requests == []


def test_no_token_says_where_to_put_one(cli: Cli, api: FakeKeyfob, monkeypatch):
    monkeypatch.delenv("KEYFOB_TOKEN")

    result = cli("set", "list")

    assert result.exit_code == 1
    assert "KEYFOB_TOKEN" in result.stderr
    assert api.requests == []


def test_addr_option_and_path_prefix_are_used(cli: Cli, api: FakeKeyfob):
    api.on("GET", "/keyfob/v1/tokens", {"items": []})

    result = cli("--addr", "https://vault.example.com/keyfob/", "token", "list")

    assert result.exit_code == 0, result.output
    assert str(api.requests[0].url) == "https://vault.example.com/keyfob/v1/tokens"


def test_addr_without_scheme_is_refused(cli: Cli, api: FakeKeyfob):
    result = cli("--addr", "127.0.0.1:8200", "token", "list")

    assert result.exit_code == 1
    assert "http:// or https://" in result.stderr


def test_plain_http_to_another_machine_warns(cli: Cli, api: FakeKeyfob):
    api.on("GET", TOKENS, {"items": []})

    result = cli("--addr", "http://vault.internal:8200", "token", "list")

    assert result.exit_code == 0
    assert "warning: sending the token to http://vault.internal:8200 over plain http" in (
        result.stderr
    )


def test_unauthorized_hints_at_the_token(cli: Cli, api: FakeKeyfob):
    api.on("GET", TOKENS, lambda _r: problem(401, "unauthorized", "Unauthorized"))

    result = cli("token", "list")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: Unauthorized; check KEYFOB_TOKEN or --token-file (HTTP 401 unauthorized)\n"
    )


def test_validation_errors_list_fields(cli: Cli, api: FakeKeyfob):
    api.on(
        "POST",
        TOKENS,
        lambda _r: problem(
            422,
            "validation-failed",
            "Validation failed",
            errors=[{"loc": ["body", "name"], "msg": "too long"}],
        ),
    )

    result = cli("token", "create", "x" * 300)

    assert result.exit_code == 1
    assert result.stderr == (
        "error: Validation failed: name: too long (HTTP 422 validation-failed)\n"
    )


def test_server_error_shows_request_id(cli: Cli, api: FakeKeyfob):
    api.on("GET", TOKENS, lambda _r: problem(500, "internal", "Internal error", request_id="r-9"))

    result = cli("token", "list")

    assert result.stderr == "error: Internal error; request id r-9 (HTTP 500 internal)\n"


def test_non_problem_error_page_is_summarised(cli: Cli, api: FakeKeyfob):
    api.on(
        "GET",
        TOKENS,
        lambda _r: httpx.Response(
            502, text="<html>" + "x" * 5000, headers={"content-type": "text/html"}
        ),
    )

    result = cli("token", "list")

    assert result.exit_code == 1
    assert result.stderr == "error: keyfob at http://127.0.0.1:8200 answered HTTP 502 Bad Gateway\n"


def test_connection_refused_names_the_address(api: FakeKeyfob, free_port: int):
    # The real transport against a closed port: what a user sees when serve is not running.
    from typer.testing import CliRunner

    from keyfob.cli.main import create_app

    result = CliRunner().invoke(
        create_app(), ["--addr", f"http://127.0.0.1:{free_port}", "set", "list"]
    )

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot connect to keyfob at http://127.0.0.1:{free_port} (connection refused); "
        "is `keyfob serve` running there? Set KEYFOB_ADDR or --addr\n"
    )


def test_timeout_is_one_line(cli: Cli, api: FakeKeyfob):
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    api.on("GET", TOKENS, slow)

    result = cli("token", "list")

    assert result.exit_code == 1
    assert (
        result.stderr == "error: keyfob at http://127.0.0.1:8200 did not answer within 30 seconds\n"
    )


def test_invalid_setting_is_named_without_its_value(cli: Cli, api: FakeKeyfob):
    result = cli("version", env={"KEYFOB_PORT": "not-a-port-SECRETISH"})

    assert result.exit_code == 1
    assert "KEYFOB_PORT" in result.stderr
    assert "SECRETISH" not in result.stderr


def test_version(cli: Cli, api: FakeKeyfob):
    from keyfob import __version__

    assert cli("version").stdout == f"keyfob {__version__}\n"
    assert json.loads(cli("version", "--json").stdout) == {"version": __version__}


def test_field_errors_already_in_the_detail_are_not_repeated(cli: Cli, api: FakeKeyfob):
    detail = "profile.inject: names keys the set does not have: K"
    api.on(
        "POST",
        TOKENS,
        lambda _r: problem(
            422,
            "validation-failed",
            detail,
            errors=[
                {"loc": ["profile", "inject"], "msg": "names keys the set does not have: K"},
                {"loc": ["labels"], "msg": "too many"},
            ],
        ),
    )

    result = cli("token", "create", "ci")

    assert result.stderr == f"error: {detail}: labels: too many (HTTP 422 validation-failed)\n"
