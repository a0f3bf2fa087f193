"""Real keyfob servers on loopback ports: in this process on a thread, or as a child process.

``serve_in_thread`` runs the real app under uvicorn on its own event loop in a daemon
thread: real sockets and HTTP, no interpreter start-up. ``start_server`` starts a child
process, for the tests where a process is the point (kill -9, several nodes, the
entry point), forked from a warm interpreter (tests/support/zygote.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from keyfob.clock import Clock
from keyfob.settings import Settings
from tests.support import loopback, zygote
from tests.support.hashing import hashing_env

_SERVE = (
    "import sys; from keyfob.settings import Settings; "
    "from keyfob.app.bootstrap import run_server; "
    "s = Settings(); run_server(s, '127.0.0.1', int(sys.argv[1]))"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_for(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYFOB_")}
    env["KEYFOB_DATA_DIR"] = str(settings.data_dir)
    if settings.database_url:
        env["KEYFOB_DATABASE_URL"] = settings.database_url
    env.update(hashing_env(settings))
    return env


@dataclass
class LiveServer:
    """What tests use of a running server, wherever it runs."""

    url: str
    operator_token: str
    settings: Settings
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        raise NotImplementedError


@dataclass
class ProcessServer(LiveServer):
    process: zygote.Forked | None = None

    def stop(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(
    settings: Settings,
    operator_token: str,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
    timeout: float = 60,
) -> ProcessServer:
    """Start ``keyfob serve``'s server; ``extra_env`` adds ``KEYFOB_*`` settings (and others).
    ``timeout``: seconds to wait for ``/healthz`` (several interpreters starting at once on
    a busy two-core machine take a while)."""
    port = port or free_port()
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        process = zygote.spawn(
            _SERVE, [str(port)], {**env_for(settings), **(extra_env or {})}, log.fileno()
        )
    server = ProcessServer(f"http://127.0.0.1:{port}", operator_token, settings, log_path, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log_text()}")
        try:
            if loopback.get(server.url + "/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"server did not start:\n{server.log_text()}")


class _ServerRecords(logging.Filter):
    """What the server thread logs, and anything keyfob or uvicorn log from elsewhere;
    not the test's own client libraries on the main thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != threading.main_thread().ident:
            return True
        return record.name.startswith(("keyfob", "uvicorn"))


@dataclass
class ThreadServer(LiveServer):
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _handler: logging.Handler | None = None
    _levels: dict[str, int] = field(default_factory=dict)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            assert not self._thread.is_alive(), "the in-process server did not stop"
            self._thread = None
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None
            for name, level in self._levels.items():
                logging.getLogger(name).setLevel(level)


def _log_to(server: ThreadServer) -> None:
    from keyfob.app.bootstrap import QueryFree

    level = server.settings.log_level.upper()
    handler = logging.FileHandler(server.log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    handler.addFilter(_ServerRecords())
    # The access log without query strings, as ``run_server`` configures it.
    access = QueryFree()
    handler.addFilter(lambda record: record.name != "uvicorn.access" or access.filter(record))
    for name in ("keyfob", "uvicorn"):
        logger = logging.getLogger(name)
        server._levels[name] = logger.level
        logger.setLevel(level)
    logging.getLogger().addHandler(handler)
    server._handler = handler


def serve_in_thread(
    settings: Settings,
    operator_token: str,
    log_path: Path,
    *,
    clock: Clock | None = None,
) -> ThreadServer:
    """The real app under uvicorn (uvloop, httptools) on a loopback port, in a thread."""
    import uvicorn
    import uvloop

    from keyfob.app import create_app
    from keyfob.app.audit_sinks import build_sinks
    from keyfob.vault import Vault

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = ThreadServer(f"http://127.0.0.1:{port}", operator_token, settings, log_path)
    log_path.touch()
    _log_to(server)
    started = threading.Event()
    failure: list[BaseException] = []

    async def run() -> None:
        vault = await Vault.open(settings, clock=clock)
        # As the lifespan does when it owns the vault: audit shipping (``KEYFOB_AUDIT_SHIP_*``;
        # none by default) and lease retention.
        await vault.shipping.start(build_sinks(settings))
        vault.retention.start()
        app = create_app(settings, vault=vault)
        config = uvicorn.Config(
            app,
            log_config=None,
            http="httptools",
            lifespan="off",
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=2,
        )
        uv = uvicorn.Server(config)

        async def watch() -> None:
            while not uv.started:
                await asyncio.sleep(0.005)
            started.set()
            while not server._stop.is_set():
                await asyncio.sleep(0.02)
            uv.should_exit = True

        watcher = asyncio.ensure_future(watch())
        try:
            await app.start()  # the forward proxy's listener, when configured
            await uv.serve(sockets=[sock])
        finally:
            watcher.cancel()
            try:
                await app.aclose()
            finally:
                await vault.close()

    def main() -> None:
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(run())
        except BaseException as exc:
            failure.append(exc)
        finally:
            sock.close()
            started.set()

    thread = threading.Thread(target=main, name=f"keyfob-server-{port}", daemon=True)
    server._thread = thread
    thread.start()
    started.wait(timeout=30)
    if failure or not thread.is_alive():
        server.stop()
        raise RuntimeError(f"the server did not start: {failure!r}\n{server.log_text()}")
    return server
