"""The CLI starts without the server: a client command (``keyfob run``, ``lease mint``,
``ca bundle``…) imports no storage, web framework or crypto package. Each ``keyfob``
invocation pays its imports, so this is what keeps the agent's commands quick to start;
commands that open the vault locally (``init``, ``serve``, ``keys``…) import it when run.

Within the CLI too, a command imports what it needs when it runs: its own command module
and no other's; the settings (pydantic) when a command reads them, not for ``--help``;
httpx (without its own command line) and the SDK when a command talks to a server; Rich
when a table or help is drawn; and ``keyfob init`` opens the vault without the web
framework."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from keyfob.cli.main import COMMANDS
from tests.support.cli import invoke

SERVER = (
    "aiohttp alembic asyncpg aiosqlite cryptography fastapi jinja2 jwt mcp sqlalchemy "
    "starlette uvicorn keyfob.api keyfob.app keyfob.proxy keyfob.store keyfob.vault"
).split()
# Read when a command runs (``state``), not to build the commands or show their help.
# (typer itself imports pydantic to convert the options of a command it runs, --help too.)
SETTINGS = "pydantic_settings keyfob.settings keyfob.profiles".split()
# Imported by the commands that talk to a server, when they open a client.
CLIENT = "httpx httpcore keyfob.sdk keyfob.cli.client".split()
# Imported where a table is drawn (Rich) or the MCP server is run (asyncio).
ON_USE = "rich asyncio".split()
# The modules that hold the root's commands (``keyfob.cli.main`` holds ``version``).
COMMAND_MODULES = sorted({module for _, module, _ in COMMANDS} - {"keyfob.cli.main"})
WEB = (
    "aiohttp fastapi jinja2 starlette uvicorn keyfob.api keyfob.app.asgi keyfob.dashboard "
    "keyfob.proxy"
).split()

ENTRY = """
import sys
from typer.main import get_command
from keyfob.cli.main import create_app
root = get_command(create_app())
for name in root.list_commands(None):  # every command and option built, as --help does
    root.get_command(None, name)
kept_out = sys.argv[1].split()
print(sorted(m for m, found in sys.modules.items()
             if found is not None and any(m == s or m.startswith(s + ".") for s in kept_out)))
"""

# Runs ``keyfob ARGS…`` as the console script does, then names the kept-out modules loaded
# (a module set to ``None`` in ``sys.modules`` is one that was kept from loading).
INVOKE = """
import json, sys
kept_out = sys.argv[1].split()
sys.argv = ["keyfob", *sys.argv[2:]]
from keyfob.cli.main import main
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code
loaded = sorted(m for m, found in sys.modules.items()
                if found is not None and any(m == s or m.startswith(s + ".") for s in kept_out))
sys.stderr.write(json.dumps({"code": code, "loaded": loaded}) + "\\n")
"""


def _invoke(
    kept_out: list[str], *args: str, env: dict[str, str] | None = None
) -> tuple[int, list[str], str]:
    """Exit code, the kept-out modules ``keyfob ARGS…`` loaded, and its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", INVOKE, " ".join(kept_out), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], report["loaded"], done.stdout


def test_the_cli_entry_point_imports_no_server_package() -> None:
    done = subprocess.run(
        [sys.executable, "-c", ENTRY, " ".join(SERVER + SETTINGS + CLIENT + ON_USE + ["pydantic"])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_help_reads_no_settings_and_opens_no_client() -> None:
    # ``lease mint --help`` runs the root callback first: the settings are not read there.
    code, loaded, out = _invoke(SERVER + SETTINGS + CLIENT + ["pydantic"], "--help")
    assert code == 0
    assert "Usage: keyfob" in out
    assert loaded == []
    for args in (["lease", "mint", "--help"], ["run", "--help"], ["set", "create", "--help"]):
        code, loaded, out = _invoke(SERVER + SETTINGS + CLIENT, *args)
        assert code == 0
        assert f"Usage: keyfob {' '.join(args[:-1])}" in out
        assert loaded == [], args


def test_init_opens_the_vault_without_the_web_framework(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "KEYFOB_DATA_DIR": str(tmp_path / "data")}
    code, loaded, out = _invoke(WEB + CLIENT, "init", "--json", env=env)
    assert code == 0
    assert json.loads(out)["operator_token"].startswith("kfo_")
    assert loaded == []


def test_a_command_imports_and_builds_only_its_own_module() -> None:
    code, loaded, out = _invoke(COMMAND_MODULES, "version")
    assert (code, loaded) == (0, [])
    assert out.startswith("keyfob ")
    for args, module in (
        (["set", "list", "--help"], "keyfob.cli.sets"),
        (["lease", "mint", "--help"], "keyfob.cli.leases"),
        (["run", "--help"], "keyfob.cli.run"),
        (["db", "--help"], "keyfob.cli.backups"),
    ):
        code, loaded, _ = _invoke(COMMAND_MODULES, *args)
        assert (code, loaded) == (0, [module]), args
    # The root's own help lists every command, so it builds them all.
    code, loaded, _ = _invoke(COMMAND_MODULES, "--help")
    assert (code, loaded) == (0, COMMAND_MODULES)


def test_a_client_command_runs_without_httpx_command_line() -> None:
    # httpx would import its CLI, and with it Rich and Pygments, as it is imported.
    env = {"PATH": "/usr/bin:/bin", "KEYFOB_TOKEN": "kfo_" + "a" * 43}
    kept_out = ["rich", "pygments", "keyfob.sdk"]
    code, loaded, _ = _invoke(
        kept_out, "--addr", "http://127.0.0.1:9", "token", "list", "--json", env=env
    )
    assert code == 1  # nothing listens on port 9
    assert loaded == []


def test_help_lists_every_command_in_order_each_built_under_its_name() -> None:
    # A table entry whose module defines the command under another name cannot be built.
    listed = invoke(["--help"], env={"COLUMNS": "100"})
    assert listed.exit_code == 0
    rows = [line for line in listed.stdout.splitlines() if line.startswith("│ ") and line[2] != " "]
    names = [row.split()[1] for row in rows]  # not the rows a long help wraps onto
    assert names[names.index("init") :] == [name for name, _, _ in COMMANDS]
    for name, _, _ in COMMANDS:
        shown = invoke([name, "--help"], env={"COLUMNS": "100"})
        assert shown.exit_code == 0, name
        assert f"Usage: keyfob {name} " in shown.stdout
    unknown = invoke(["sett"])
    assert unknown.exit_code == 2
    assert "No such command 'sett'. Did you mean 'set'?" in unknown.output


def test_a_command_that_cannot_be_built_is_an_error_not_an_unknown_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from keyfob.cli import main

    # A table entry whose module defines its command under another name.
    monkeypatch.setattr(main, "COMMANDS", (*COMMANDS, ("nope", "keyfob.cli.sets", "app")))
    commands = main._Commands({})
    assert commands.get("unknown") is None
    with pytest.raises(RuntimeError, match="cannot build the 'nope' command"):
        commands.get("nope")
