"""``keyfob user create|list`` against a fake API: the password never in argv or output."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from keyfob.secret import Secret
from keyfob.settings import Settings
from keyfob.vault import Context, Vault

from .conftest import OPERATOR_TOKEN, Cli, FakeKeyfob, problem

PASSWORD = "correct horse battery staple"


def user_view(name: str = "alice", **overrides: object) -> dict[str, object]:
    """A user view as the API documents it (never a password or hash)."""
    view: dict[str, object] = {
        "id": "u1a2b3c4d5e6f708",
        "name": name,
        "created_at": "2026-11-24T05:00:00Z",
        "created_by": "operator:admin",
        "disabled_at": None,
        "locked_until": None,
    }
    view.update(overrides)
    return view


def created(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(201, json=user_view(body["name"]))


def test_create_reads_the_password_from_stdin(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/users", created)

    result = cli("user", "create", "alice", input=PASSWORD + "\nignored second line\n")

    assert result.exit_code == 0, result.output
    assert api.bodies("POST", "/v1/users") == [{"name": "alice", "password": PASSWORD}]
    request = api.calls("POST", "/v1/users")[0]
    assert request.headers["authorization"] == f"Bearer {OPERATOR_TOKEN}"
    assert result.stdout.splitlines() == [
        "created dashboard user alice (u1a2b3c4d5e6f708)",
        "Sign in at http://127.0.0.1:8200/ui/",
    ]
    assert PASSWORD not in result.output


def test_create_prompts_twice_hidden_on_a_terminal(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/users", created)

    result = cli("user", "create", "alice", input=f"{PASSWORD}\n{PASSWORD}\n", tty=True)

    assert result.exit_code == 0, result.output
    assert "Password (hidden)" in result.output
    assert "Repeat the password" in result.output
    assert PASSWORD not in result.output  # hidden input is not echoed
    assert api.bodies("POST", "/v1/users") == [{"name": "alice", "password": PASSWORD}]


def test_create_refuses_prompts_that_do_not_match(cli: Cli, api: FakeKeyfob):
    result = cli("user", "create", "alice", input=f"{PASSWORD}\n{PASSWORD}x\n", tty=True)

    assert result.exit_code == 1
    assert result.stderr.endswith("error: the passwords did not match; nothing was created\n")
    assert api.requests == []


def test_create_refuses_a_short_password_before_sending(cli: Cli, api: FakeKeyfob):
    result = cli("user", "create", "alice", input="short-pass\n")

    assert result.exit_code == 1
    assert result.stderr == "error: the password is too short: use at least 12 characters\n"
    assert "short-pass" not in result.output
    assert api.requests == []


def test_create_without_a_password(cli: Cli, api: FakeKeyfob):
    result = cli("user", "create", "alice", input="")

    assert result.exit_code == 1
    assert "no password" in result.stderr
    assert api.requests == []


def test_create_has_no_password_option(cli: Cli, api: FakeKeyfob):
    result = cli("user", "create", "alice", "--password", PASSWORD, input=PASSWORD + "\n")

    assert result.exit_code == 2
    assert api.requests == []


def test_create_json_is_the_server_view(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/users", created)

    result = cli("user", "create", "alice", "--json", input=PASSWORD + "\n")

    assert json.loads(result.stdout) == user_view("alice")


def test_create_conflict_is_one_line(cli: Cli, api: FakeKeyfob):
    api.on("POST", "/v1/users", lambda _r: problem(409, "conflict", "user alice already exists"))

    result = cli("user", "create", "alice", input=PASSWORD + "\n")

    assert result.exit_code == 1
    assert result.stderr == "error: user alice already exists (HTTP 409 conflict)\n"
    assert PASSWORD not in result.output


def test_create_needs_an_operator_token(cli: Cli, api: FakeKeyfob):
    result = cli("user", "create", "alice", input=PASSWORD + "\n", env={"KEYFOB_TOKEN": ""})

    assert result.exit_code == 1
    assert "no operator token" in result.stderr
    assert api.requests == []


def test_list_table(cli: Cli, api: FakeKeyfob):
    api.on(
        "GET",
        "/v1/users",
        {
            "items": [
                user_view("alice"),
                user_view("bob", id="u2", locked_until="2026-11-24T05:10:00Z"),
            ]
        },
    )

    result = cli("user", "list")

    lines = result.stdout.splitlines()
    assert lines[0].split() == "ID NAME CREATED CREATED BY DISABLED LOCKED UNTIL".split()
    assert lines[1].split()[:2] == ["u1a2b3c4d5e6f708", "alice"]
    assert lines[2].split() == (
        "u2 bob 2026-11-24 05:00:00 operator:admin - 2026-11-24 05:10:00".split()
    )


def test_list_json(cli: Cli, api: FakeKeyfob):
    api.on("GET", "/v1/users", {"items": [user_view()]})

    assert json.loads(cli("user", "list", "--json").stdout) == {"items": [user_view()]}


def test_init_with_user_makes_a_user_who_can_sign_in(tmp_path: Path) -> None:
    """The real thing: ``keyfob init --user`` in a fresh data dir, password on stdin."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYFOB_")}
    env["KEYFOB_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-m", "keyfob.cli", "init", "--user", "alice", "--json"],
        input="correct horse battery staple\n",
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["user"]["name"] == "alice"
    assert "correct horse" not in done.stdout + done.stderr

    async def sign_in() -> str:
        vault = await Vault.open(Settings(data_dir=tmp_path / "data"))
        try:
            principal, _ = await vault.users.sign_in(
                "alice", Secret("correct horse battery staple"), Context("anonymous")
            )
        finally:
            await vault.close()
        return principal.name

    assert asyncio.run(sign_in()) == "alice"
