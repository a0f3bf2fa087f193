"""``keyfob.sdk`` imports with only httpx and the standard library: a child interpreter in
which every server package fails to import loads it and builds its clients."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = (
    "aiohttp alembic argon2 asyncpg aiosqlite cryptography fastapi jinja2 prometheus_client "
    "pydantic pydantic_settings rich sqlalchemy starlette typer uvicorn uvloop "
    "keyfob.api keyfob.app keyfob.audit keyfob.cli keyfob.crypto keyfob.dashboard "
    "keyfob.profiles keyfob.proxy keyfob.settings keyfob.store keyfob.vault"
).split()

CHILD = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    BLOCKED = set(sys.argv[1].split())

    class Block(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in BLOCKED or any(name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"blocked for this test: {name}")
            return None

    sys.meta_path.insert(0, Block())
    from keyfob import sdk

    auth = sdk.LeaseAuth("openai/prod/default")
    with sdk.http_client("openai/prod/default", addr="http://127.0.0.1:1", token="kfa_x"):
        pass
    loaded = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
    print("loaded:", loaded)
    """
)


def test_the_sdk_imports_without_any_server_package() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, " ".join(BLOCKED)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loaded: []"


def test_the_blocker_blocks() -> None:
    """The hook is not a no-op: the server's own entry point fails under it."""
    child = CHILD.replace("from keyfob import sdk", "import keyfob.app")
    done = subprocess.run(
        [sys.executable, "-c", child, " ".join(BLOCKED)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "blocked for this test" in done.stderr
