"""A real keyfob server in a subprocess, for CLI, crash and multi-process tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from keyfob.settings import Settings

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
    return env


@dataclass
class LiveServer:
    url: str
    operator_token: str
    settings: Settings
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
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
) -> LiveServer:
    """Start ``keyfob serve``'s server; ``extra_env`` adds ``KEYFOB_*`` settings (and others)."""
    port = free_port()
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(port)],
            env={**env_for(settings), **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", operator_token, settings, process, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log_text()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"server did not start:\n{server.log_text()}")
