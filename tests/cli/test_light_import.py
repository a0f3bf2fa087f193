"""The CLI starts without the server: a client command (``keyfob run``, ``lease mint``,
``ca bundle``…) imports no storage, web framework or crypto package. Each ``keyfob``
invocation pays its imports, so this is what keeps the agent's commands quick to start;
commands that open the vault locally (``init``, ``serve``, ``keys``…) import it when run."""

from __future__ import annotations

import subprocess
import sys

SERVER = (
    "aiohttp alembic asyncpg aiosqlite cryptography fastapi jinja2 jwt mcp sqlalchemy "
    "starlette uvicorn keyfob.api keyfob.app keyfob.proxy keyfob.store keyfob.vault"
).split()

CHILD = """
import sys
from typer.main import get_command
from keyfob.cli.main import create_app
get_command(create_app())  # every command and option built, as on each invocation
server = sys.argv[1].split()
print(sorted(m for m in sys.modules if any(m == s or m.startswith(s + ".") for s in server)))
"""


def test_the_cli_entry_point_imports_no_server_package() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, " ".join(SERVER)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
