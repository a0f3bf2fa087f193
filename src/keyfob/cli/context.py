"""What every command reaches through ``ctx.obj``: settings, server address, token and the seams.

``Wiring`` holds what tests replace (HTTP transport, TTY detection, sleeping, the
server core); ``CliState`` is built once per invocation by the root callback.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
import typer

from keyfob.cli.client import KeyfobClient, check_addr, sends_token_in_clear
from keyfob.cli.errors import CliError
from keyfob.secret import Secret
from keyfob.settings import Settings


class InitOutcome(Protocol):
    """What ``keyfob.app.bootstrap.InitResult`` tells the CLI about an initialisation."""

    @property
    def operator_token(self) -> Secret[str] | None: ...
    @property
    def data_dir(self) -> Path: ...
    @property
    def database_url(self) -> str: ...
    @property
    def master_key_file(self) -> Path | None: ...
    @property
    def created(self) -> bool: ...


class Bootstrap(Protocol):
    """The part of ``keyfob.app.bootstrap`` that ``init`` and ``serve`` use."""

    def init_vault(self, settings: Settings) -> InitOutcome: ...

    def ensure_initialised(self, settings: Settings) -> InitOutcome: ...

    def run_server(self, settings: Settings, host: str, port: int) -> None: ...


def _stdin_is_tty() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _core_bootstrap() -> Bootstrap:
    # Imported on use: client commands should not pay for loading the server.
    from keyfob.app import bootstrap

    return bootstrap


@dataclass(frozen=True)
class Wiring:
    """Seams a test replaces; the defaults are the real terminal, network and server."""

    transport: httpx.BaseTransport | None = None
    stdin_is_tty: Callable[[], bool] = _stdin_is_tty
    sleep: Callable[[float], None] = time.sleep
    bootstrap: Callable[[], Bootstrap] = _core_bootstrap


@dataclass
class CliState:
    """One invocation's settings and lazily opened client."""

    settings: Settings
    wiring: Wiring
    addr: str
    token_file: Path | None = None
    _client: KeyfobClient | None = field(default=None, repr=False)

    def token(self) -> Secret[str] | None:
        """The operator token: ``--token-file`` wins over ``KEYFOB_TOKEN``."""
        if self.token_file is not None:
            try:
                text = self.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise CliError(
                    f"cannot read token file {self.token_file}: {exc.strerror}"
                ) from None
            if not text:
                raise CliError(f"token file {self.token_file} is empty")
            return Secret(text)
        if self.settings.token is not None:
            return Secret(self.settings.token.get_secret_value())
        return None

    def client(self) -> KeyfobClient:
        """The client for this invocation, created on first use; needs a token."""
        if self._client is None:
            token = self.token()
            if token is None:
                raise CliError(
                    "no operator token: set KEYFOB_TOKEN or pass --token-file PATH "
                    "(`keyfob init` prints the first one)"
                )
            addr = check_addr(self.addr)
            if sends_token_in_clear(addr):
                typer.echo(
                    f"warning: sending the token to {addr} over plain http; use https "
                    "for a keyfob that is not on this machine",
                    err=True,
                )
            self._client = KeyfobClient(addr, token, transport=self.wiring.transport)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def state(ctx: typer.Context) -> CliState:
    """The invocation's ``CliState`` (set by the root callback)."""
    found = ctx.find_object(CliState)
    if found is None:  # only when a command is invoked without the root app
        raise CliError("keyfob CLI state is missing; run commands through `keyfob`")
    return found
