"""``keyfob init`` and ``keyfob serve`` with a fake bootstrap (the real one runs in test_e2e)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from keyfob.errors import ConfigurationError, Conflict
from keyfob.secret import Secret
from keyfob.settings import Settings

from .conftest import Cli

TOKEN = "kfo_" + "I" * 43


@dataclass
class FakeInit:
    operator_token: Secret[str] | None
    data_dir: Path
    database_url: str
    master_key_file: Path | None
    created: bool
    master_key_source: str = "/data/keyfob/master.key"


@dataclass
class FakeBootstrap:
    """Records what the CLI asked of the core."""

    initialised: bool = False
    error: Exception | None = None
    served: list[tuple[str, int]] = field(default_factory=list)
    settings: list[Settings] = field(default_factory=list)
    users: list[tuple[str, str]] = field(default_factory=list)

    def _result(self, created: bool) -> FakeInit:
        return FakeInit(
            operator_token=Secret(TOKEN) if created else None,
            data_dir=Path("/data/keyfob"),
            database_url="sqlite:////data/keyfob/keyfob.db",
            master_key_file=Path("/data/keyfob/master.key"),
            created=created,
        )

    def init_vault(self, settings: Settings) -> FakeInit:
        self.settings.append(settings)
        if self.error is not None:
            raise self.error
        if self.initialised:
            raise Conflict("keyfob is already initialised in /data/keyfob")
        self.initialised = True
        return self._result(created=True)

    def ensure_initialised(self, settings: Settings) -> FakeInit:
        self.settings.append(settings)
        created = not self.initialised
        self.initialised = True
        return self._result(created=created)

    def exec_server(self, settings: Settings, host: str, port: int, url: str) -> None:
        self.served.append((host, port))

    def create_first_user(self, settings: Settings, name: str, password: Secret[str]) -> str:
        if not self.initialised:
            raise AssertionError("a user before the vault exists")
        self.users.append((name, password.reveal()))
        return "u1"


@pytest.fixture
def core(cli: Cli) -> FakeBootstrap:
    cli.bootstrap = fake = FakeBootstrap()
    return fake


def test_init_prints_the_token_once_with_a_warning(cli: Cli, core: FakeBootstrap):
    result = cli("init", env={"KEYFOB_DATA_DIR": "/data/keyfob"})

    assert result.exit_code == 0, result.output
    assert core.settings[0].data_dir == Path("/data/keyfob")
    assert result.stdout.count(TOKEN) == 1
    assert "store it now, you will not see it again" in result.stdout
    assert "/data/keyfob/master.key" in result.stdout
    assert "sqlite:////data/keyfob/keyfob.db" in result.stdout


def test_init_json(cli: Cli, core: FakeBootstrap):
    result = cli("init", "--json")

    assert json.loads(result.stdout) == {
        "operator_token": TOKEN,
        "data_dir": "/data/keyfob",
        "database_url": "sqlite:////data/keyfob/keyfob.db",
        "master_key_file": "/data/keyfob/master.key",
    }


def test_init_twice_is_a_one_line_error(cli: Cli, core: FakeBootstrap):
    cli("init")

    result = cli("init")

    assert result.exit_code == 1
    assert result.stderr == "error: keyfob is already initialised in /data/keyfob\n"


def test_init_with_bad_configuration(cli: Cli, core: FakeBootstrap):
    core.error = ConfigurationError("KEYFOB_MASTER_KEY is not base64 of 32 bytes")

    result = cli("init")

    assert result.exit_code == 1
    assert result.stderr == "error: KEYFOB_MASTER_KEY is not base64 of 32 bytes\n"


def test_serve_initialises_prints_the_token_and_url_then_serves(cli: Cli, core: FakeBootstrap):
    result = cli("serve", "--port", "9000")

    assert result.exit_code == 0, result.output
    assert result.stdout.count(TOKEN) == 1
    url = "http://127.0.0.1:9000"
    assert f"{url} (dashboard {url}/ui/, API reference {url}/docs)" in result.stdout
    assert core.served == [("127.0.0.1", 9000)]


def test_serve_on_an_initialised_vault_prints_no_token(cli: Cli, core: FakeBootstrap):
    core.initialised = True

    result = cli("serve")

    assert "kfo_" not in result.output
    assert "http://127.0.0.1:8200" in result.stdout
    assert core.served == [("127.0.0.1", 8200)]


def test_serve_uses_keyfob_host_and_port(cli: Cli, core: FakeBootstrap):
    result = cli("serve", "--json", env={"KEYFOB_HOST": "::", "KEYFOB_PORT": "8300"})

    assert core.served == [("::", 8300)]
    first = json.loads(result.stdout.splitlines()[0])
    assert first["url"] == "http://[::]:8300"
    assert first["operator_token"] == TOKEN
    assert first["created"] is True
    assert "warning: :: is reachable from other machines" in result.stderr


def test_serve_warns_when_binding_all_interfaces(cli: Cli, core: FakeBootstrap):
    quiet = cli("serve", "--host", "localhost")
    loud = cli("serve", "--host", "0.0.0.0")

    assert quiet.stderr == ""
    assert "warning: 0.0.0.0 is reachable from other machines" in loud.stderr


def test_init_with_user_creates_the_first_dashboard_user(cli: Cli, core: FakeBootstrap):
    result = cli("init", "--user", "alice", input="a long enough password\n")

    assert result.exit_code == 0, result.output
    assert core.users == [("alice", "a long enough password")]
    assert "dashboard user alice created" in result.stdout
    assert "a long enough password" not in result.output


def test_init_with_a_short_password_creates_nothing(cli: Cli, core: FakeBootstrap):
    result = cli("init", "--user", "alice", input="short\n")

    assert result.exit_code == 1
    assert "too short" in result.output
    assert core.initialised is False
    assert core.users == []
