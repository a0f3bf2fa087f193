"""Fixtures for CLI tests: the real keyfob app in-process (``real``, ``real_cli``), a fake
transport for what no keyfob answers (timeouts, a proxy's HTML page), and a runner."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import httpx
import pytest
from typer.testing import Result

from keyfob.app import create_app as create_server_app
from keyfob.cli.context import Bootstrap, Wiring
from keyfob.settings import Settings
from keyfob.vault import Vault
from tests.support.asgi import BackgroundLoop, SyncASGITransport
from tests.support.cli import invoke
from tests.support.server import LiveServer

T = TypeVar("T")

OPERATOR_TOKEN = "kfo_" + "T" * 43
AGENT_TOKEN = "kfa_" + "A" * 43
LEASE_TOKEN = "kfl_" + "L" * 43
NOW = datetime(2026, 11, 24, 6, 0, 0, tzinfo=UTC)
Handler = Callable[[httpx.Request], httpx.Response]


class Reaches(Protocol):
    """Anything the CLI can be pointed at: it hands over an ``httpx`` transport."""

    @property
    def transport(self) -> httpx.BaseTransport: ...


@dataclass
class FakeTransport:
    """Answers every request with ``handler``: only for what the real app cannot do.

    That is transport-level trouble (a read timeout, an HTML page from a proxy in front)
    and commands that must send nothing at all; everything else uses ``real``.
    """

    handler: Handler
    requests: list[httpx.Request] = field(default_factory=list)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)


def _no_request(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"this command should send nothing, sent {request.method} {request.url}")


@pytest.fixture(autouse=True)
def keyfob_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from a known environment: a token, the default address."""
    import os

    for name in list(os.environ):
        if name.startswith("KEYFOB_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEYFOB_TOKEN", OPERATOR_TOKEN)
    monkeypatch.setenv("KEYFOB_ADDR", "http://127.0.0.1:8200")


@dataclass
class RealKeyfob:
    """The real app and vault on an event loop in a thread; the CLI reaches it via ``transport``."""

    settings: Settings
    vault: Vault
    operator_token: str
    loop: BackgroundLoop
    transport: SyncASGITransport

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine (a vault call, say) on the app's loop and return its result."""
        return self.loop.run(coro)

    @property
    def requests(self) -> list[httpx.Request]:
        """Every request the CLI sent, in order."""
        return self.transport.requests

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]

    def http(self) -> httpx.Client:
        """An operator client of the same app (to compare the CLI with the API)."""
        return httpx.Client(
            transport=self.transport,
            base_url="http://keyfob.test",
            headers={"Authorization": f"Bearer {self.operator_token}"},
        )


@pytest.fixture
def real(sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[RealKeyfob]:
    """A fresh vault behind the real app; ``KEYFOB_TOKEN`` is its first operator token."""
    loop = BackgroundLoop()

    async def start() -> tuple[Vault, str]:
        vault, done = await Vault.initialise(sqlite_settings)
        return vault, done.operator_token.reveal()

    vault, token = loop.run(start())
    app = create_server_app(sqlite_settings, vault=vault)
    monkeypatch.setenv("KEYFOB_TOKEN", token)
    try:
        yield RealKeyfob(sqlite_settings, vault, token, loop, SyncASGITransport(app, loop))
    finally:
        try:
            loop.run(_close(app, vault))
        finally:
            loop.close()


async def _close(app: Any, vault: Vault) -> None:
    try:
        await app.aclose()
    finally:
        await vault.close()


@dataclass
class Cli:
    """Runs the real Typer app with injected seams."""

    api: Reaches
    bootstrap: Bootstrap | None = None
    sleeps: list[float] = field(default_factory=list)
    max_sleeps: int = 1_000  # the sleep that reaches this count is a Ctrl-C
    between_polls: Callable[[], None] | None = None
    now: datetime = NOW

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        tty: bool = False,
        stdout_tty: bool = False,
        env: dict[str, str] | None = None,
    ) -> Result:
        bootstrap = self.bootstrap
        wiring = Wiring(
            transport=self.api.transport,
            stdin_is_tty=lambda: tty,
            stdout_is_tty=lambda: stdout_tty,
            sleep=self._sleep,
            now=lambda: self.now,
            bootstrap=(lambda: bootstrap) if bootstrap is not None else Wiring().bootstrap,
        )
        return invoke(args, wiring=wiring, input=input, env=env, catch_exceptions=False)

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if len(self.sleeps) >= self.max_sleeps:
            raise KeyboardInterrupt
        if self.between_polls is not None:
            self.between_polls()


@pytest.fixture
def cli() -> Cli:
    """The CLI for commands that never talk to a server (``init``, ``serve``)."""
    return Cli(FakeTransport(_no_request))


@pytest.fixture
def real_cli(real: RealKeyfob) -> Cli:
    """The CLI against the real app in-process (``real``)."""
    return Cli(real)


@pytest.fixture
def canary() -> str:
    """A value that must never appear in any output."""
    return "sk-canary-" + secrets.token_hex(12)


# --- the real CLI against a real server (end-to-end tests) ---------------------------------


@dataclass
class Operator:
    """Runs the real CLI (real HTTP, no injected transport) against a live server.

    Every output lands in ``transcript`` unless the command is one that reveals values
    (``set export``), so a test can assert that nothing else ever printed a secret.
    """

    server: LiveServer
    token: str
    transcript: list[str] = field(default_factory=list)
    revealed: list[str] = field(default_factory=list)

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        token: str | None = None,
        env: dict[str, str] | None = None,
        reveals: bool = False,
    ) -> Result:
        full_env = {
            "KEYFOB_ADDR": self.server.url,
            "KEYFOB_TOKEN": token or self.token,
            "KEYFOB_LEASE": "",
            **(env or {}),
        }
        result = invoke(args, input=input, env=full_env, catch_exceptions=False)
        (self.revealed if reveals else self.transcript).append(result.output)
        return result

    def ok(self, *args: str, **kwargs: Any) -> Result:
        result = self(*args, **kwargs)
        assert result.exit_code == 0, f"keyfob {' '.join(args)}: {result.output}"
        return result

    def json(self, *args: str, **kwargs: Any) -> dict[str, Any]:
        data = json.loads(self.ok(*args, "--json", **kwargs).stdout)
        assert isinstance(data, dict)
        return data

    def mentions(self, text: str) -> int:
        """How many times ``text`` appears across every non-revealing output."""
        return sum(output.count(text) for output in self.transcript)


@pytest.fixture
def operator(live_server: LiveServer, canary: str) -> Iterator[Operator]:
    op = Operator(live_server, live_server.operator_token)
    yield op
    # Whatever a test did, the canary is in no CLI output and no server log line.
    assert not [text for text in op.transcript if canary in text]
    assert canary not in live_server.log_text()
