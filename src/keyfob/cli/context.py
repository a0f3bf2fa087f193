"""What every command reaches through ``ctx.obj``: settings, server address, tokens and the seams.

``Wiring`` holds what tests replace (HTTP transport, TTY detection, sleeping, the clock,
the server core); ``CliState`` is built once per invocation by the root callback. It
opens one client per kind of credential: the operator or agent token from
``KEYFOB_TOKEN``/``--token-file``, or a lease from ``KEYFOB_LEASE`` or stdin (never argv).

Each invocation pays for what it imports, so the settings (pydantic) are read when a
command runs (``state``), not for ``--help``, and the HTTP client (httpx) is imported
when a command opens one.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import typer

from keyfob.cli.errors import CliError
from keyfob.clock import SystemClock
from keyfob.secret import Secret
from keyfob.tokens import AGENT, LEASE, OPERATOR, looks_like

if TYPE_CHECKING:
    import httpx

    from keyfob.cli.client import KeyfobClient
    from keyfob.settings import Settings

LEASE_ENV = "KEYFOB_LEASE"
LEASE_HINT = f"check {LEASE_ENV} or the lease on stdin"
AUTH_HINT = "check KEYFOB_TOKEN or --token-file"


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
    @property
    def master_key_source(self) -> str: ...


class Bootstrap(Protocol):
    """The part of ``keyfob.app.bootstrap`` that ``init`` and ``serve`` use."""

    def init_vault(self, settings: Settings) -> InitOutcome: ...

    def ensure_initialised(self, settings: Settings) -> InitOutcome: ...

    def exec_server(self, settings: Settings, host: str, port: int, url: str) -> None: ...

    def create_first_user(self, settings: Settings, name: str, password: Secret[str]) -> str: ...

    def make_self_signed(self, settings: Settings) -> tuple[Path, Path]: ...

    def backup(self, settings: Settings, path: Path) -> dict[str, Any]: ...

    def restore(self, settings: Settings, path: Path, force: bool) -> dict[str, Any]: ...

    def db_status(self, settings: Settings) -> dict[str, Any]: ...

    def db_upgrade(self, settings: Settings) -> dict[str, Any]: ...


def _stdin_is_tty() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _stdout_is_tty() -> bool:
    return sys.stdout is not None and sys.stdout.isatty()


def _core_bootstrap() -> Bootstrap:
    # Imported on use: client commands should not pay for loading the server.
    from keyfob.app import bootstrap

    return bootstrap


@dataclass(frozen=True)
class Wiring:
    """Seams a test replaces; the defaults are the real terminal, network and server."""

    transport: httpx.BaseTransport | None = None
    stdin_is_tty: Callable[[], bool] = _stdin_is_tty
    stdout_is_tty: Callable[[], bool] = _stdout_is_tty
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], datetime] = SystemClock().now
    bootstrap: Callable[[], Bootstrap] = _core_bootstrap


def load_settings() -> Settings:
    """``KEYFOB_*`` settings, with a bad variable reported by name (never by value)."""
    from pydantic import ValidationError

    from keyfob.settings import Settings

    try:
        # Fields have defaults; mypy without the pydantic plugin thinks they are required.
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"KEYFOB_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        raise CliError(f"invalid setting: {problems}") from None


@dataclass
class CliState:
    """One invocation's settings (read on first use) and lazily opened clients."""

    wiring: Wiring
    addr_option: str | None = None  # --addr; KEYFOB_ADDR otherwise
    token_file: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)
    _clients: dict[str, KeyfobClient] = field(default_factory=dict, repr=False)

    @property
    def settings(self) -> Settings:
        """The ``KEYFOB_*`` settings, read once; a bad variable is a ``CliError``."""
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def addr(self) -> str:
        """The server address: ``--addr``, else ``KEYFOB_ADDR``."""
        return self.addr_option or self.settings.addr

    def token(self) -> Secret[str] | None:
        """The operator or agent token: ``--token-file`` wins over ``KEYFOB_TOKEN``."""
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
        if self.settings.token is not None and self.settings.token.get_secret_value().strip():
            return Secret(self.settings.token.get_secret_value().strip())
        return None

    def client(self) -> KeyfobClient:
        """The operator client for this invocation, created on first use; needs a token."""
        if "operator" not in self._clients:
            token = self.token()
            if token is None:
                raise CliError(
                    "no operator token: set KEYFOB_TOKEN or pass --token-file PATH "
                    "(`keyfob init` prints the first one)"
                )
            self._clients["operator"] = self._open(token, AUTH_HINT)
        return self._clients["operator"]

    def agent_client(self, command: str) -> KeyfobClient:
        """A client holding an agent token (``kfa_``), refused before sending anything else."""
        if "agent" not in self._clients:
            token = self.token()
            source = "--token-file" if self.token_file is not None else "KEYFOB_TOKEN"
            if token is None:
                raise CliError(
                    f"`keyfob {command}` needs an agent token (kfa_…): set KEYFOB_TOKEN or "
                    "pass --token-file PATH (`keyfob agent create` prints one)"
                )
            if token.reveal().startswith(OPERATOR):
                raise CliError(
                    f"`keyfob {command}` needs an agent token (kfa_…), but {source} holds an "
                    "operator token (kfo_…); use the token `keyfob agent create` printed"
                )
            if not token.reveal().startswith(AGENT):
                raise CliError(f"{source} does not hold an agent token (kfa_…)")
            self._clients["agent"] = self._open(token, AUTH_HINT)
        return self._clients["agent"]

    def lease_client(self) -> KeyfobClient:
        """A client holding the lease from ``KEYFOB_LEASE`` or stdin."""
        if "lease" not in self._clients:
            self._clients["lease"] = self._open(self._lease(), LEASE_HINT)
        return self._clients["lease"]

    def _lease(self) -> Secret[str]:
        if os.environ.get(LEASE_ENV):
            text, source = os.environ[LEASE_ENV].strip(), LEASE_ENV
        elif self.wiring.stdin_is_tty():
            # The prompt goes to stderr: stdout may be a file (set export > .env).
            text, source = typer.prompt("Lease (hidden)", hide_input=True, err=True), "the prompt"
            text = text.strip()
        else:
            text, source = sys.stdin.readline().strip(), "stdin"
        if not text:
            raise CliError(f"no lease: set {LEASE_ENV} or pipe the kfl_… lease on stdin")
        if not looks_like(text, LEASE):
            what = {OPERATOR: "an operator token", AGENT: "an agent token"}.get(
                text[: len(OPERATOR)], "something else"
            )
            # Named, never echoed: whatever was pasted may be a credential.
            raise CliError(f"{source} holds {what}, not a lease (kfl_…, from `keyfob lease mint`)")
        return Secret(text)

    def _open(self, token: Secret[str], auth_hint: str) -> KeyfobClient:
        from keyfob.cli.client import KeyfobClient, check_addr, sends_token_in_clear
        from keyfob.server_trust import ServerTrust

        addr = check_addr(self.addr)
        if sends_token_in_clear(addr):
            typer.echo(
                f"warning: sending the token to {addr} over plain http; use https "
                "for a keyfob that is not on this machine",
                err=True,
            )
        return KeyfobClient(
            addr,
            token,
            transport=self.wiring.transport,
            auth_hint=auth_hint,
            trust=ServerTrust.from_environ(),
        )

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def state(ctx: typer.Context) -> CliState:
    """The invocation's ``CliState`` (set by the root callback)."""
    found = ctx.find_object(CliState)
    if found is None:  # only when a command is invoked without the root app
        raise CliError("keyfob CLI state is missing; run commands through `keyfob`")
    # Read as the command starts, so a bad KEYFOB_* variable stops it before it asks for
    # anything; ``--help`` never gets here and does not load the settings.
    found.settings  # noqa: B018
    return found
