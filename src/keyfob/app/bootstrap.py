"""Local start-up: initialise a data directory and run the server (used by the CLI)."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from keyfob.errors import ConfigurationError, Conflict
from keyfob.secret import Masked, Secret
from keyfob.settings import Settings
from keyfob.vault import SYSTEM, Vault, backup_file, redact_url, schema, write_self_signed
from keyfob.vault.master_keys import provider_name

T = TypeVar("T")


@dataclass(frozen=True)
class InitResult(Masked):
    operator_token: Secret[str] | None
    data_dir: Path
    database_url: str
    master_key_file: Path | None
    created: bool
    master_key_source: str


def _result(settings: Settings, token: Secret[str] | None) -> InitResult:
    return InitResult(
        operator_token=token,
        data_dir=settings.data_dir.resolve(),
        database_url=redact_url(settings.resolved_database_url),
        master_key_file=settings.resolved_master_key_file.resolve()
        if provider_name(settings) == "file"
        else None,
        created=token is not None,
        master_key_source=_where(settings),
    )


def _where(settings: Settings) -> str:
    """Where the master key is, in words (never the key or a PIN)."""
    name = provider_name(settings)
    if name == "pkcs11":
        return f"PKCS#11 key {settings.pkcs11_key_label!r} on token {settings.pkcs11_token_label!r}"
    if name == "env":
        return "from KEYFOB_MASTER_KEY"
    return str(settings.resolved_master_key_file.resolve())


async def _initialise(settings: Settings) -> InitResult:
    vault, done = await Vault.initialise(settings)
    await vault.close()
    return _result(settings, done.operator_token)


async def _ensure(settings: Settings) -> InitResult:
    try:
        return await _initialise(settings)
    except Conflict:
        vault = await Vault.open(settings)  # proves the master key opens the keyring
        await vault.close()
        return _result(settings, None)


PRIVATE_UMASK = 0o077


@contextmanager
def private_files() -> Iterator[None]:
    """Files and directories made inside are private to this user, whatever the umask
    (SQLite makes its -wal and -shm files itself; the umask is how to reach them)."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def init_vault(settings: Settings) -> InitResult:
    """Create the data dir, master key and first operator token; Conflict if already done."""
    with private_files():
        return asyncio.run(_initialise(settings))


async def _first_user(settings: Settings, name: str, password: Secret[str]) -> str:
    vault = await Vault.open(settings)
    try:
        user = await vault.users.create(SYSTEM, name, password)
    finally:
        await vault.close()
    return str(user["id"])


def create_first_user(settings: Settings, name: str, password: Secret[str]) -> str:
    """Create a dashboard user locally (``keyfob init --user``); returns its id."""
    with private_files():
        return asyncio.run(_first_user(settings, name, password))


def ensure_initialised(settings: Settings) -> InitResult:
    """Initialise if needed; otherwise check the vault opens and return ``created=False``."""
    with private_files():
        return asyncio.run(_ensure(settings))


def _local(settings: Settings, work: Coroutine[Any, Any, T]) -> T:
    """Run a local database command; an unreachable database is one clear line."""
    from sqlalchemy.exc import SQLAlchemyError

    with private_files():
        try:
            return asyncio.run(work)
        except (OSError, SQLAlchemyError) as exc:
            # The driver's message may quote the URL; only the redacted URL is shown.
            raise ConfigurationError(
                f"cannot use the database {redact_url(settings.resolved_database_url)} "
                f"({type(exc).__name__})"
            ) from None


def backup(settings: Settings, path: Path) -> dict[str, Any]:
    """``keyfob backup PATH``: a consistent, sealed copy of the vault (it may keep serving)."""
    return _local(settings, backup_file.backup(settings, path))


def restore(settings: Settings, path: Path, force: bool) -> dict[str, Any]:
    """``keyfob restore PATH``: load a backup into an empty database and verify it."""
    return _local(settings, backup_file.restore(settings, path, force=force))


def db_status(settings: Settings) -> dict[str, Any]:
    """``keyfob db status``: the schema's revision against this keyfob's."""
    return _local(settings, schema.status(settings))


def db_upgrade(settings: Settings) -> dict[str, Any]:
    """``keyfob db upgrade``: apply pending migrations."""
    return _local(settings, schema.upgrade(settings))


class QueryFree(logging.Filter):
    """Drops the query string from uvicorn's access lines: an agent may put anything there
    (a lease, by mistake), and the proxy forwards it upstream, not into keyfob's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, mark, _ = args[2].partition("?")
            record.args = (*args[:2], path + ("?…" if mark else ""), *args[3:])
        return True


def _log_config() -> dict[str, Any]:
    from keyfob.app import _uvicorn

    _uvicorn.install()  # uvicorn.config, without the package file's CLI imports
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["query_free"] = {"()": QueryFree}
    config["handlers"]["access"]["filters"] = ["query_free"]
    return config


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options but the protocol and TLS. Its access lines are logged at
    ``info``: above that level they are not built at all (formatting a line only to drop
    it was ~1.4 % of a proxied request's CPU)."""
    return {
        "loop": "uvloop",
        "log_level": settings.log_level,
        "log_config": _log_config(),
        "access_log": settings.log_level in ("debug", "info"),
        "server_header": False,
        "proxy_headers": False,
    }


def make_self_signed(settings: Settings) -> tuple[Path, Path]:
    """A self-signed pair in ``<data_dir>/tls`` for loopback and the bound host."""
    hosts = ["localhost", "127.0.0.1", "::1"]
    if settings.host not in hosts and settings.host not in ("0.0.0.0", "::"):  # noqa: S104
        hosts.append(settings.host)
    return write_self_signed(settings.data_dir / "tls", hosts)


def run_server(settings: Settings, host: str, port: int) -> None:
    """Serve the API, the proxy and the dashboard with uvicorn, uvloop and httptools."""
    from keyfob.app import _uvicorn, create_app
    from keyfob.app.tls import ServerTls, cert_protocol

    _uvicorn.install()  # before anything imports a uvicorn module (cert_protocol does)

    # Read before anything starts: a missing file or a key that does not match its
    # certificate stops start-up with a ConfigurationError that names the file.
    tls = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        tls = ServerTls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        signal.signal(signal.SIGHUP, tls.on_sighup)

    # The server process makes only private files (database, WAL, checkpoints), for good.
    os.umask(PRIVATE_UMASK)
    # The app answers to the address it is bound to (the default Host allow-list).
    settings = settings.model_copy(update={"host": host, "port": port})
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    options = server_options(settings)
    options["http"] = cert_protocol() if tls is not None else "httptools"
    options["ssl_context_factory"] = tls.factory if tls is not None else None
    app = create_app(settings)
    if settings.operator_listen and settings.agent_listen:
        # Split planes: two listeners, one app; the app tells them apart by port.
        sockets = [_bound(settings.operator_listen), _bound(settings.agent_listen)]
        _uvicorn.server(_uvicorn.config(app, **options)).run(sockets=sockets)
        return
    _uvicorn.run(app, host=host, port=port, **options)


def exec_server(settings: Settings, host: str, port: int, url: str) -> NoReturn:
    """``keyfob serve``: replace this process (the pid stays) by a fresh interpreter that
    runs ``run_server`` (``keyfob.app.serve``). The command line's modules and the heap of
    its start-up checks would otherwise stay in the server: ~10 MB of idle memory.

    The new process reads the same environment; ``proxy_listen`` (``--forward-proxy``)
    goes in it. ``-P``: the current directory is not put on the module path.
    """
    env = dict(os.environ)
    if settings.proxy_listen:
        env["KEYFOB_PROXY_LISTEN"] = settings.proxy_listen
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-P", "-m", "keyfob.app.serve", host, str(port), url]
    os.execve(sys.executable, argv, env)  # noqa: S606 - our own interpreter, no shell


def _bound(listen: str) -> socket.socket:
    from keyfob.settings import split_listen

    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock
