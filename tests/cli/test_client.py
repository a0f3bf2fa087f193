"""Failures a user sees: problem+json, unreachable servers, missing tokens, bad settings.

Most run against the real app in-process (``real``); the few that need what no keyfob
answers (an HTML 502 from a proxy in front, a read timeout) use ``FakeTransport``.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest

from .conftest import Cli, FakeTransport, RealKeyfob

TOKENS = "/v1/tokens"
BOGUS = "kfo_" + "Z" * 43


@pytest.fixture
def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def problem_of(real: RealKeyfob, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """The problem+json the real server answers to one bad request."""
    with real.http() as http:
        answer = http.request(method, path, **kwargs)
    assert answer.status_code >= 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    return body


def test_operator_token_is_sent_as_bearer(real_cli: Cli, real: RealKeyfob):
    result = real_cli("token", "list")

    assert result.exit_code == 0, result.output
    (request,) = real.requests
    assert request.headers["authorization"] == f"Bearer {real.operator_token}"


def test_token_file_wins_over_environment(real_cli: Cli, real: RealKeyfob, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(real.operator_token + "\n")

    # The environment's token is one the server refuses: success means the file's was sent.
    result = real_cli("--token-file", str(token_file), "token", "list", env={"KEYFOB_TOKEN": BOGUS})

    assert result.exit_code == 0, result.output
    assert real.requests[0].headers["authorization"] == f"Bearer {real.operator_token}"


def test_unreadable_token_file_is_one_line(real_cli: Cli, real: RealKeyfob, tmp_path):
    result = real_cli("--token-file", str(tmp_path / "nope"), "token", "list")

    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot read token file")
    assert real.requests == []


def test_no_token_says_where_to_put_one(real_cli: Cli, real: RealKeyfob, monkeypatch):
    monkeypatch.delenv("KEYFOB_TOKEN")

    result = real_cli("set", "list")

    assert result.exit_code == 1
    assert "KEYFOB_TOKEN" in result.stderr
    assert real.requests == []


class UnderPrefix(httpx.BaseTransport):
    """A reverse proxy that serves keyfob under ``/keyfob/``: strips it, forwards to the app."""

    def __init__(self, real: RealKeyfob) -> None:
        self.real = real
        self.requests: list[httpx.Request] = []

    @property
    def transport(self) -> httpx.BaseTransport:
        return self

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if not path.startswith("/keyfob/"):
            return httpx.Response(404, text="not under /keyfob/")
        inner = httpx.Request(
            request.method,
            request.url.copy_with(path=path.removeprefix("/keyfob")),
            headers=request.headers,
            content=request.read(),
        )
        return self.real.transport.handle_request(inner)


def test_addr_option_and_path_prefix_are_used(real: RealKeyfob):
    proxy = UnderPrefix(real)
    cli = Cli(proxy)

    result = cli("--addr", "https://vault.example.com/keyfob/", "token", "list", "--json")

    assert result.exit_code == 0, result.output
    assert str(proxy.requests[0].url) == "https://vault.example.com/keyfob/v1/tokens"
    with real.http() as http:
        assert json.loads(result.stdout) == http.get(TOKENS).json()


def test_addr_without_scheme_is_refused(real_cli: Cli, real: RealKeyfob):
    result = real_cli("--addr", "127.0.0.1:8200", "token", "list")

    assert result.exit_code == 1
    assert "http:// or https://" in result.stderr
    assert real.requests == []


def test_plain_http_to_another_machine_warns(real_cli: Cli, real: RealKeyfob):
    result = real_cli("--addr", "http://vault.internal:8200", "token", "list")

    assert result.exit_code == 0
    assert "warning: sending the token to http://vault.internal:8200 over plain http" in (
        result.stderr
    )
    assert len(real.requests) == 1


def test_unauthorized_hints_at_the_token(real_cli: Cli, real: RealKeyfob):
    with real.http() as http:
        http.headers["Authorization"] = f"Bearer {BOGUS}"
        detail = http.get(TOKENS).json()["detail"]

    result = real_cli("token", "list", env={"KEYFOB_TOKEN": BOGUS})

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {detail}; check KEYFOB_TOKEN or --token-file (HTTP 401 unauthorized)\n"
    )
    assert BOGUS not in result.output


def test_validation_errors_list_fields(real_cli: Cli, real: RealKeyfob):
    problem = problem_of(real, "POST", TOKENS, json={"name": "x" * 300})

    result = real_cli("token", "create", "x" * 300)

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {problem['detail']}")
    assert result.stderr.endswith(" (HTTP 422 validation-failed)\n")
    assert len(result.stderr.splitlines()) == 1
    for error in problem["errors"]:
        assert error["msg"] in result.stderr
    with real.http() as http:
        assert http.get(TOKENS).json()["items"][1:] == []  # only the first operator token


def test_server_error_shows_request_id(real_cli: Cli, real: RealKeyfob, monkeypatch):
    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug in the vault")

    monkeypatch.setattr(real.vault.operators, "list_tokens", broken)
    problem = problem_of(real, "GET", TOKENS)

    result = real_cli("token", "list")

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {problem['detail']}; request id ")
    assert result.stderr.endswith(" (HTTP 500 internal)\n")
    request_id = result.stderr.removeprefix(f"error: {problem['detail']}; request id ").split()[0]
    assert request_id
    assert request_id != problem["request_id"]  # this request's, not the probe's
    assert "a bug in the vault" not in result.output


def test_non_problem_error_page_is_summarised():
    # keyfob never answers HTML; a proxy in front of it does when keyfob is down.
    fake = FakeTransport(
        lambda _r: httpx.Response(
            502, text="<html>" + "x" * 5000, headers={"content-type": "text/html"}
        )
    )

    result = Cli(fake)("token", "list")

    assert result.exit_code == 1
    assert result.stderr == "error: keyfob at http://127.0.0.1:8200 answered HTTP 502 Bad Gateway\n"


def test_connection_refused_names_the_address(free_port: int):
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


def test_timeout_is_one_line():
    # A read timeout happens in the transport; an in-process app cannot be made to stall it.
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    result = Cli(FakeTransport(slow))("token", "list")

    assert result.exit_code == 1
    assert (
        result.stderr == "error: keyfob at http://127.0.0.1:8200 did not answer within 30 seconds\n"
    )


def test_invalid_setting_is_named_without_its_value(real_cli: Cli, real: RealKeyfob):
    result = real_cli("version", env={"KEYFOB_PORT": "not-a-port-SECRETISH"})

    assert result.exit_code == 1
    assert "KEYFOB_PORT" in result.stderr
    assert "SECRETISH" not in result.stderr
    assert real.requests == []


def test_invalid_setting_stops_a_command_before_it_asks_for_a_value(
    real_cli: Cli, real: RealKeyfob, canary: str
):
    # The settings are read as a command starts (not for --help): nothing is prompted for.
    result = real_cli(
        "set",
        "create",
        "openai/prod/default",
        "--key",
        "OPENAI_API_KEY",
        tty=True,
        input=canary + "\n",
        env={"KEYFOB_PORT": "not-a-port"},
    )

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: invalid setting: KEYFOB_PORT")
    assert result.stderr.count("\n") == 1
    assert real.requests == []


def test_version(real_cli: Cli, real: RealKeyfob):
    from keyfob import __version__

    assert real_cli("version").stdout == f"keyfob {__version__}\n"
    assert json.loads(real_cli("version", "--json").stdout) == {"version": __version__}
    # The flag works even where a setting is broken: it reads nothing.
    flag = real_cli("--version", env={"KEYFOB_PORT": "not-a-port"})
    assert (flag.exit_code, flag.stdout) == (0, f"keyfob {__version__}\n")
    assert real.requests == []


def test_field_errors_already_in_the_detail_are_not_repeated(real_cli: Cli, real: RealKeyfob):
    # The server's detail already names the field (labels.a); the CLI must not say it twice.
    label = "a=" + "x" * 1000
    body = {
        "provider": "openai",
        "environment": "prod",
        "name": "x",
        "entries": {"K": "v"},
        "labels": {"a": "x" * 1000},
        "profile": {"preset": "openai"},
    }
    problem = problem_of(real, "POST", "/v1/secret-sets", json=body)

    result = real_cli(
        "set", "create", "openai/prod/x", "--preset", "openai", "--label", label, input="K=v\n"
    )

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {problem['detail']}")
    assert result.stderr.endswith(" (HTTP 422 validation-failed)\n")
    for error in problem["errors"]:
        assert result.stderr.count(error["msg"]) == 1
