"""Shared fixtures: settings per backend, an open vault, the app in-process, a live server."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from keyfob.app import create_app
from keyfob.app.bootstrap import init_vault
from keyfob.clock import FrozenClock
from keyfob.settings import Settings
from keyfob.vault import Context, Vault
from tests.support import sql_cache
from tests.support.backends import BACKENDS, drop_worker_database, fresh_sqlite, reset_postgres
from tests.support.hashing import FAST_HASHING
from tests.support.server import LiveServer, serve_in_thread

sql_cache.install()

CANARY = "sk-canary-7f3a9c1e5b2d4f60a8e1c3b5d7f9a2c4"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(backend: str, tmp_path: Path) -> Settings:
    """Settings for a fresh vault on ``backend`` (the data dir is always a temp dir).

    The database is already migrated (a copy of a per-process template) and passwords
    are hashed cheaply; everything else is as ``keyfob serve`` would have it.
    """
    if backend == "postgresql":
        url: str | None = reset_postgres()
    else:
        url = None
        fresh_sqlite(tmp_path / "data")
    return Settings(data_dir=tmp_path / "data", database_url=url, **FAST_HASHING)


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    fresh_sqlite(tmp_path / "data")
    return Settings(data_dir=tmp_path / "data", **FAST_HASHING)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def initialised(settings: Settings) -> AsyncIterator[tuple[Vault, str]]:
    vault, done = await Vault.initialise(settings)
    try:
        yield vault, done.operator_token.reveal()
    finally:
        await vault.close()


@pytest.fixture
def vault(initialised: tuple[Vault, str]) -> Vault:
    return initialised[0]


@pytest.fixture
def operator_token(initialised: tuple[Vault, str]) -> str:
    return initialised[1]


@pytest.fixture
def ctx() -> Context:
    return Context(actor="operator:test")


@pytest.fixture
async def client(
    vault: Vault, operator_token: str, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process, authenticated as the first operator."""
    app = create_app(settings, vault=vault)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://keyfob.test",
        headers={"Authorization": f"Bearer {operator_token}"},
    ) as http:
        yield http


@pytest.fixture
def live_server(settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    """A real server (uvicorn, in this process) on a loopback port, initialised, its log kept."""
    result = init_vault(settings)
    assert result.operator_token is not None
    server = serve_in_thread(settings, result.operator_token.reveal(), tmp_path / "server.log")
    try:
        yield server
    finally:
        server.stop()


def make_set(
    provider: str = "openai",
    environment: str = "prod",
    name: str = "default",
    entries: dict[str, str] | None = None,
    **extra: object,
) -> dict[str, object]:
    """A request body for POST /v1/secret-sets."""
    return {
        "provider": provider,
        "environment": environment,
        "name": name,
        "entries": entries if entries is not None else {"OPENAI_API_KEY": CANARY},
        **extra,
    }


# Tests of keyfob's surfaces (HTTP API, dashboard, CLI, SDK, MCP server, error contracts):
# they reach storage through the same vault calls that tests/core, tests/access, the
# proxy, node, crash, backup and leak tests run on both backends. Their PostgreSQL copies
# are marked ``surface_postgres``: `make test` leaves them out, `make test-surface-pg`
# (run by CI after `make test`) runs only them, `make test-all` runs everything.
SURFACES = ("tests/api/", "tests/dashboard/", "tests/contracts/", "tests/cli/", "tests/sdk/",
            "tests/mcp_server/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks the surface tests' PostgreSQL copies (see SURFACES). Then orders the modules,
    each kept whole: those with slow tests first, then by their number of tests, most
    first. xdist hands modules out in this order (``--no-loadscope-reorder``; by default
    it orders them by number of tests alone, which put the few-but-slow browser, crash
    and TLS modules last), so the longest start early instead of finishing last on one
    worker while the others wait."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("backend") == "postgresql"
        if on_postgres and item.nodeid.startswith(SURFACES):
            item.add_marker(pytest.mark.surface_postgres)

    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::")[0]

    sizes = Counter(module(item) for item in items)
    slow = {module(item) for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (module(item) not in slow, -sizes[module(item)]))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop this xdist worker's PostgreSQL database (the named one is left alone)."""
    drop_worker_database()
