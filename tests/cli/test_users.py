"""``keyfob user create|list`` against the real app in-process: the password never in argv
or output."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from keyfob.errors import KeyfobError
from keyfob.secret import Secret
from keyfob.settings import Settings
from keyfob.vault import Context, Vault

from .conftest import Cli, RealKeyfob

PASSWORD = "correct horse battery staple"


def users(real: RealKeyfob) -> list[dict[str, Any]]:
    """The dashboard users as the API shows them."""
    with real.http() as http:
        answer = http.get("/v1/users")
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def signs_in(real: RealKeyfob, name: str, password: str) -> bool:
    """Whether the vault lets ``name`` sign in with ``password``."""

    async def attempt() -> bool:
        try:
            await real.vault.users.sign_in(name, Secret(password), Context("anonymous"))
        except KeyfobError:
            return False
        return True

    return real.run(attempt())


def make(real: RealKeyfob, name: str) -> dict[str, Any]:
    """A user created through the API (not the CLI under test)."""
    with real.http() as http:
        answer = http.post("/v1/users", json={"name": name, "password": PASSWORD})
    assert answer.status_code == 201, answer.text
    view: dict[str, Any] = answer.json()
    return view


def test_create_reads_the_password_from_stdin(real_cli: Cli, real: RealKeyfob):
    result = real_cli("user", "create", "alice", input=PASSWORD + "\nignored second line\n")

    assert result.exit_code == 0, result.output
    (request,) = real.calls("POST", "/v1/users")
    assert request.headers["authorization"] == f"Bearer {real.operator_token}"
    (alice,) = users(real)
    assert result.stdout.splitlines() == [
        f"created dashboard user alice ({alice['id']})",
        "Sign in at http://127.0.0.1:8200/ui/",
    ]
    assert PASSWORD not in result.output
    assert signs_in(real, "alice", PASSWORD)  # the first line, exactly, is the password


def test_create_prompts_twice_hidden_on_a_terminal(real_cli: Cli, real: RealKeyfob):
    result = real_cli("user", "create", "alice", input=f"{PASSWORD}\n{PASSWORD}\n", tty=True)

    assert result.exit_code == 0, result.output
    assert "Password (hidden)" in result.output
    assert "Repeat the password" in result.output
    assert PASSWORD not in result.output  # hidden input is not echoed
    assert signs_in(real, "alice", PASSWORD)


def test_create_refuses_prompts_that_do_not_match(real_cli: Cli, real: RealKeyfob):
    result = real_cli("user", "create", "alice", input=f"{PASSWORD}\n{PASSWORD}x\n", tty=True)

    assert result.exit_code == 1
    assert result.stderr.endswith("error: the passwords did not match; nothing was created\n")
    assert real.requests == []
    assert users(real) == []


def test_create_refuses_a_short_password_before_sending(real_cli: Cli, real: RealKeyfob):
    result = real_cli("user", "create", "alice", input="short-pass\n")

    assert result.exit_code == 1
    assert result.stderr == "error: the password is too short: use at least 12 characters\n"
    assert "short-pass" not in result.output
    assert real.requests == []
    assert users(real) == []


def test_create_without_a_password(real_cli: Cli, real: RealKeyfob):
    result = real_cli("user", "create", "alice", input="")

    assert result.exit_code == 1
    assert "no password" in result.stderr
    assert real.requests == []


def test_create_has_no_password_option(real_cli: Cli, real: RealKeyfob):
    result = real_cli("user", "create", "alice", "--password", PASSWORD, input=PASSWORD + "\n")

    assert result.exit_code == 2
    assert real.requests == []
    assert users(real) == []


def test_create_json_is_the_server_view(real_cli: Cli, real: RealKeyfob):
    result = real_cli("user", "create", "alice", "--json", input=PASSWORD + "\n")

    assert result.exit_code == 0, result.output
    assert [json.loads(result.stdout)] == users(real)


def test_create_conflict_is_one_line(real_cli: Cli, real: RealKeyfob):
    first = make(real, "alice")
    with real.http() as http:
        detail = http.post("/v1/users", json={"name": "alice", "password": PASSWORD}).json()[
            "detail"
        ]

    result = real_cli("user", "create", "alice", input=PASSWORD + "x\n")

    assert result.exit_code == 1
    assert result.stderr == f"error: {detail} (HTTP 409 conflict)\n"
    assert "alice" in detail
    assert PASSWORD not in result.output
    assert users(real) == [first]
    assert signs_in(real, "alice", PASSWORD)  # the first password still holds


def test_create_needs_an_operator_token(real_cli: Cli, real: RealKeyfob):
    result = real_cli("user", "create", "alice", input=PASSWORD + "\n", env={"KEYFOB_TOKEN": ""})

    assert result.exit_code == 1
    assert "no operator token" in result.stderr
    assert real.requests == []


def test_list_table(real_cli: Cli, real: RealKeyfob):
    alice = make(real, "alice")
    make(real, "bob")
    for _ in range(20):  # wrong passwords until the vault locks bob
        signs_in(real, "bob", "not the password at all")
        (bob,) = [user for user in users(real) if user["name"] == "bob"]
        if bob["locked_until"]:
            break
    assert bob["locked_until"]

    result = real_cli("user", "list")

    lines = result.stdout.splitlines()
    assert lines[0].split() == "ID NAME CREATED CREATED BY DISABLED LOCKED UNTIL".split()
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    made, locked = alice["created_at"], bob["locked_until"]
    assert rows["alice"] == [alice["id"], "alice", made[:10], made[11:19], alice["created_by"],
                             "-", "-"]  # fmt: skip
    assert rows["bob"][-2:] == [locked[:10], locked[11:19]]


def test_list_json(real_cli: Cli, real: RealKeyfob):
    assert json.loads(real_cli("user", "list", "--json").stdout) == {"items": []}
    make(real, "alice")

    assert json.loads(real_cli("user", "list", "--json").stdout) == {"items": users(real)}


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
