"""Fixtures for CLI tests: the real keyfob app in-process (``real``, ``real_cli``), a fake API
on ``httpx.MockTransport`` for what a real server cannot be made to answer, and a runner."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pytest
from typer.testing import CliRunner, Result

from keyfob.app import create_app as create_server_app
from keyfob.cli.context import Bootstrap, Wiring
from keyfob.cli.main import create_app
from keyfob.settings import Settings
from keyfob.vault import Vault
from tests.support.asgi import BackgroundLoop, SyncASGITransport
from tests.support.server import LiveServer

T = TypeVar("T")

OPERATOR_TOKEN = "kfo_" + "T" * 43
AGENT_TOKEN = "kfa_" + "A" * 43
LEASE_TOKEN = "kfl_" + "L" * 43
NOW = datetime(2026, 11, 24, 6, 0, 0, tzinfo=UTC)
Handler = Callable[[httpx.Request], httpx.Response]


def problem(status: int, slug: str, detail: str, **extra: Any) -> httpx.Response:
    """A problem+json answer as the server sends it."""
    body = {
        "type": f"urn:keyfob:problem:{slug}",
        "title": slug.replace("-", " ").capitalize(),
        "status": status,
        "detail": detail,
        **extra,
    }
    return httpx.Response(
        status, content=json.dumps(body), headers={"content-type": "application/problem+json"}
    )


def set_view(
    path: str = "openai/prod/default",
    version: int = 1,
    keys: tuple[str, ...] = ("OPENAI_API_KEY",),
    deleted_at: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A set view as the API documents it (names and fingerprints, never values)."""
    provider, environment, name = path.split("/")
    return {
        "id": "set_" + secrets.token_hex(4),
        "path": path,
        "provider": provider,
        "environment": environment,
        "name": name,
        "labels": labels or {},
        "version": version,
        "keys": [
            {"name": key, "fingerprint": "hmac-sha256:1a2b3c4d5e6f", "version": version}
            for key in keys
        ],
        "profile": {
            "preset": provider,
            "base_url": f"https://api.{provider}.com",
            "hosts": [f"api.{provider}.com"],
            "inject": {"kind": "bearer", "key": keys[0] if keys else None},
            "allow_private_upstream": False,
        },
        "created_at": "2026-11-24T04:48:00Z",
        "updated_at": "2026-11-24T05:00:00Z",
        "deleted_at": deleted_at,
        "exported_at": None,
    }


def audit_event(seq: int, action: str = "set.create", **overrides: Any) -> dict[str, Any]:
    """An audit event as the API documents it."""
    event = {
        "seq": seq,
        "ts": "2026-11-24T04:48:00.000000Z",
        "actor": "operator:admin",
        "action": action,
        "target": "openai/prod/default",
        "outcome": "ok",
        "request_id": f"req-{seq}",
        "details": {},
        "prev_hash": "0" * 64,
        "hash": f"{seq:064x}",
    }
    event.update(overrides)
    return event


def agent_view(name: str = "billing-bot", **overrides: Any) -> dict[str, Any]:
    """An agent view as the API documents it (never its token)."""
    view = {
        "id": "a1b2c3d4e5f60708",
        "name": name,
        "status": "active",
        "disabled_at": None,
        "created_at": "2026-11-24T04:48:00Z",
        "created_by": "operator:admin",
        "updated_at": "2026-11-24T04:48:00Z",
    }
    view.update(overrides)
    return view


def grant_view(**overrides: Any) -> dict[str, Any]:
    """A grant view with the documented defaults."""
    view = {
        "id": "g1a2b3c4d5e6f708",
        "agent_id": "a1b2c3d4e5f60708",
        "agent": "billing-bot",
        "secret_set": "openai/prod/default",
        "keys": None,
        "actions": ["proxy"],
        "not_before": None,
        "expires_at": None,
        "scopes": ["request"],
        "max_lease_ttl": 900,
        "max_lease_uses": None,
        "rate_limit": None,
        "max_uses": None,
        "uses": 0,
        "methods": None,
        "paths": None,
        "approval": "none",
        "created_at": "2026-11-24T04:48:00Z",
        "created_by": "operator:admin",
        "updated_at": "2026-11-24T04:48:00Z",
        "revoked_at": None,
    }
    view.update(overrides)
    return view


def lease_view(**overrides: Any) -> dict[str, Any]:
    """A lease view (no token: add ``token=`` for a freshly minted one)."""
    view = {
        "id": "l1a2b3c4d5e6f708",
        "agent_id": "a1b2c3d4e5f60708",
        "grant_id": "g1a2b3c4d5e6f708",
        "secret_set": "openai/prod/default",
        "scope": "request",
        "actions": ["proxy"],
        "keys": None,
        "max_uses": 1,
        "uses": 0,
        "status": "active",
        "created_at": "2026-11-24T06:00:00Z",
        "expires_at": "2026-11-24T06:01:00Z",
        "revoked_at": None,
        "revoke_reason": None,
    }
    view.update(overrides)
    return view


def request_view(status: str = "pending", **overrides: Any) -> dict[str, Any]:
    """A lease request view."""
    view = {
        "id": "r1a2b3c4d5e6f708",
        "agent_id": "a1b2c3d4e5f60708",
        "grant_id": "g1a2b3c4d5e6f708",
        "secret_set": "openai/prod/default",
        "scope": "request",
        "ttl": 60,
        "max_uses": 1,
        "status": status,
        "created_at": "2026-11-24T06:00:00Z",
        "expires_at": "2026-11-24T06:10:00Z",
        "decided_at": None,
        "decided_by": None,
        "lease_id": None,
    }
    view.update(overrides)
    return view


@dataclass
class FakeKeyfob:
    """Routes ``(METHOD, path)`` to canned answers and records every request it gets."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def on(
        self,
        method: str,
        path: str,
        answer: dict[str, Any] | Handler | None = None,
        status: int = 200,
    ) -> None:
        if callable(answer):
            self.routes[(method, path)] = answer
        else:
            body = answer if answer is not None else {}
            self.routes[(method, path)] = lambda _request: httpx.Response(status, json=body)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return problem(404, "not-found", f"no route {request.method} {request.url.path}")
        return route(request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def bodies(self, method: str, path: str) -> list[Any]:
        """The JSON bodies sent to one route, in order."""
        return [
            json.loads(r.content)
            for r in self.requests
            if r.method == method and r.url.path == path and r.content
        ]

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


@pytest.fixture(autouse=True)
def keyfob_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from a known environment: a token, the default address."""
    import os

    for name in list(os.environ):
        if name.startswith("KEYFOB_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KEYFOB_TOKEN", OPERATOR_TOKEN)
    monkeypatch.setenv("KEYFOB_ADDR", "http://127.0.0.1:8200")


@pytest.fixture
def api() -> FakeKeyfob:
    return FakeKeyfob()


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

    api: FakeKeyfob | RealKeyfob
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
        return CliRunner().invoke(
            create_app(wiring), list(args), input=input, env=env, catch_exceptions=False
        )

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if len(self.sleeps) >= self.max_sleeps:
            raise KeyboardInterrupt
        if self.between_polls is not None:
            self.between_polls()


@pytest.fixture
def cli(api: FakeKeyfob) -> Cli:
    return Cli(api)


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
        result = CliRunner().invoke(
            create_app(), list(args), input=input, env=full_env, catch_exceptions=False
        )
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
