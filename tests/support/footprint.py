"""A server child process that can be asked what it has imported and how much memory it holds.

The child is the real server (``run_server``, or ``keyfob serve`` with ``cli=True``, which
execs ``keyfob.app.serve``: the child then execs itself into running that module) plus
one daemon thread that waits for a trigger file and then writes ``sorted(sys.modules)``
to a file: no debug endpoint, no setting, nothing in the server itself.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from keyfob.settings import Settings
from tests.support import loopback
from tests.support.server import ProcessServer, env_for, free_port

_CHILD = """
import sys, threading, time
from pathlib import Path

trigger, out = Path(sys.argv[2]), Path(sys.argv[3])

def watch():
    while True:
        while not trigger.exists():
            time.sleep(0.02)
        names = sorted(list(sys.modules))
        scratch = out.with_suffix(".tmp")
        scratch.write_text("\\n".join(names))
        trigger.unlink()
        scratch.replace(out)

threading.Thread(target=watch, daemon=True).start()
port, mode, probe = sys.argv[1], sys.argv[4], sys.argv[:4]
if mode == "cli":
    import os

    execve = os.execve

    def into_probe(path, args, env):
        # keyfob serve execs "python -P -m keyfob.app.serve HOST PORT URL": exec this
        # script instead, which runs that module with the same arguments (and watches).
        assert args[1:4] == ["-P", "-m", "keyfob.app.serve"], args
        execve(path, [path, *probe, "serve-module", *args[4:]], env)

    os.execve = into_probe
    from keyfob.cli.main import main
    sys.argv = ["keyfob", "serve", "--host", "127.0.0.1", "--port", port, *sys.argv[5:]]
    main()
elif mode == "serve-module":
    from keyfob.app.serve import main
    main(sys.argv[5:8])
else:
    from keyfob.app.bootstrap import run_server
    from keyfob.settings import Settings
    run_server(Settings(), "127.0.0.1", int(port))
"""


@dataclass
class ProbedServer(ProcessServer):
    workdir: Path | None = None

    def modules(self) -> set[str]:
        """The names in the server's ``sys.modules`` now."""
        assert self.workdir is not None
        assert self.process is not None
        out = self.workdir / "modules.txt"
        out.unlink(missing_ok=True)
        (self.workdir / "trigger").touch()
        deadline = time.monotonic() + 30
        while not out.exists():
            assert self.process.poll() is None, self.log_text()
            assert time.monotonic() < deadline, "the server did not list its modules"
            time.sleep(0.02)
        return set(out.read_text().split())

    def rss_mb(self) -> float:
        """The server's resident set (``VmRSS``) in MB."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


def start_probed(
    settings: Settings,
    operator_token: str,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    *,
    cli: bool = False,
    cli_args: tuple[str, ...] = (),
    timeout: float = 60,
) -> ProbedServer:
    """Start the server child in ``workdir``; returns once ``/healthz`` answers.
    ``cli_args``: more options for ``keyfob serve``."""
    port = free_port()
    log_path = workdir / "server.log"
    script = workdir / "probed_server.py"
    script.write_text(_CHILD)
    argv = [sys.executable, str(script), str(port), str(workdir / "trigger")]
    argv += [str(workdir / "modules.txt"), "cli" if cli else "run_server", *cli_args]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            env={**env_for(settings), **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    server = ProbedServer(url, operator_token, settings, log_path, process, workdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log_text()}")
        try:
            if loopback.get(url + "/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"server did not start:\n{server.log_text()}")
