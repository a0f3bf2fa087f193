"""Fixtures for proxy tests: a fake upstream, an idle listener, a live keyfob server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from keyfob.app.bootstrap import init_vault
from keyfob.settings import Settings
from tests.proxy import factories
from tests.support.hashing import FAST_HASHING
from tests.support.server import LiveServer, serve_in_thread
from tests.support.upstream import FakeUpstream, Listener


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    """Where an attacker wants the credential to go; it must see no connection."""
    idle = Listener()
    try:
        yield idle
    finally:
        idle.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real keyfob server (SQLite, uvicorn in this process), its log captured."""
    workdir = tmp_path_factory.mktemp("proxy-server")
    settings = Settings(
        data_dir=workdir / "data",
        proxy_read_timeout=2,
        proxy_connect_timeout=2,
        **FAST_HASHING,
    )
    init = init_vault(settings)
    assert init.operator_token is not None
    live = serve_in_thread(settings, init.operator_token.reveal(), workdir / "server.log")
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def operator(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {server.operator_token}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture(scope="module", autouse=True)
def _agent_clients() -> Iterator[None]:
    """Close the factories' keep-alive clients with the module's server."""
    yield
    factories.close_clients()
