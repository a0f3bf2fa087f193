"""Fixtures for SDK and ``keyfob run`` tests: the real app in-process (an httpx transport
into it), a live server on a loopback port, a fake upstream, and granted sets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from keyfob.app import create_app
from keyfob.app.bootstrap import init_vault
from keyfob.clock import FrozenClock
from keyfob.sdk import AgentClient
from keyfob.settings import Settings
from keyfob.vault import Vault
from tests.conftest import CANARY
from tests.proxy.factories import Proxied, close_clients, proxied
from tests.support.asgi import BackgroundLoop, SyncASGITransport
from tests.support.hashing import FAST_HASHING
from tests.support.server import LiveServer, serve_in_thread
from tests.support.upstream import FakeUpstream

ADDR = "http://keyfob.test"


@dataclass
class InProcess:
    """The real app and vault on a loop in a thread; SDK clients reach it via ``transport``."""

    vault: Vault
    operator_token: str
    clock: FrozenClock  # the vault's: leases expire when it is moved
    loop: BackgroundLoop
    transport: SyncASGITransport
    operator: httpx.Client

    def agent(self, token: str) -> AgentClient:
        return AgentClient(ADDR, token, transport=self.transport)

    def proxy(self, set_path: str, lease: str, rest: str = "/echo") -> httpx.Response:
        """One call through the proxy route with ``lease``, as any client would send it."""
        return self.operator.get(
            f"/proxy/{set_path}{rest}", headers={"Authorization": "", "X-Keyfob-Lease": lease}
        )

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.transport.requests if r.method == method and r.url.path == path]


@pytest.fixture(autouse=True)
def _no_keyfob_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test picks up a developer's KEYFOB_ADDR, KEYFOB_TOKEN or TLS files."""
    for name in ("ADDR", "TOKEN", "CA_FILE", "CLIENT_CERT", "CLIENT_KEY"):
        monkeypatch.delenv(f"KEYFOB_{name}", raising=False)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def inproc(settings: Settings) -> Iterator[InProcess]:
    """On each backend (``settings``): SQLite, and PostgreSQL when configured."""
    loop = BackgroundLoop()
    clock = FrozenClock(datetime.now(UTC))

    async def start() -> tuple[Vault, str]:
        vault, done = await Vault.initialise(settings, clock=clock)
        return vault, done.operator_token.reveal()

    vault, token = loop.run(start())
    app = create_app(settings, vault=vault)
    transport = SyncASGITransport(app, loop)
    operator = httpx.Client(
        transport=transport, base_url=ADDR, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        yield InProcess(vault, token, clock, loop, transport, operator)
    finally:
        operator.close()
        close_clients()

        async def close() -> None:
            try:
                await app.aclose()
            finally:
                await vault.close()

        try:
            loop.run(close())
        finally:
            loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real keyfob server (SQLite, uvicorn in this process), its log captured."""
    workdir = tmp_path_factory.mktemp("sdk-server")
    settings = Settings(data_dir=workdir / "data", **FAST_HASHING)
    init = init_vault(settings)
    assert init.operator_token is not None
    live = serve_in_thread(settings, init.operator_token.reveal(), workdir / "server.log")
    try:
        yield live
    finally:
        close_clients()
        live.stop()


@pytest.fixture(scope="module")
def operator(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {server.operator_token}"},
        timeout=30,
    ) as client:
        yield client


def generic_set(operator: httpx.Client, upstream: FakeUpstream, **grant: Any) -> Proxied:
    """A bearer set (``API_KEY`` = the canary) on the fake upstream, granted to a new agent."""
    profile = {
        "base_url": upstream.url,
        "hosts": [upstream.host],
        "inject": {"kind": "bearer", "key": "API_KEY"},
        "allow_private_upstream": True,
    }
    return proxied(operator, profile, grant=grant or None)


def preset_set(
    operator: httpx.Client, upstream: FakeUpstream, preset: str, key: str, **grant: Any
) -> Proxied:
    """A set of ``preset`` (its injection and client variables) aimed at the fake upstream."""
    profile = {
        "preset": preset,
        "base_url": upstream.url,
        "hosts": [upstream.host],
        "allow_private_upstream": True,
    }
    return proxied(operator, profile, {key: CANARY}, provider=preset, grant=grant or None)
