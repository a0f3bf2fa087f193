"""Fixtures for CLI tests: a fake keyfob API on ``httpx.MockTransport`` and a runner for the app."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from keyfob.cli.context import Bootstrap, Wiring
from keyfob.cli.main import create_app

OPERATOR_TOKEN = "kfo_" + "T" * 43
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
class Cli:
    """Runs the real Typer app with injected seams."""

    api: FakeKeyfob
    bootstrap: Bootstrap | None = None
    sleeps: list[float] = field(default_factory=list)
    max_sleeps: int = 1_000  # the sleep that reaches this count is a Ctrl-C
    between_polls: Callable[[], None] | None = None

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        tty: bool = False,
        env: dict[str, str] | None = None,
    ) -> Result:
        bootstrap = self.bootstrap
        wiring = Wiring(
            transport=self.api.transport,
            stdin_is_tty=lambda: tty,
            sleep=self._sleep,
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
def canary() -> str:
    """A value that must never appear in any output."""
    return "sk-canary-" + secrets.token_hex(12)
