"""Server and CLI processes forked from a warm interpreter.

A keyfob server started as ``python -c ...`` spends ~1.4 s of CPU before it answers, and
``python -m keyfob.cli`` ~0.4 s, most of it importing; the suite starts dozens of each.
So each test process keeps one zygote: a child interpreter that imports what the CLI
imports to start and what ``run_server`` imports before it builds the app (in the order
it does: the uvicorn stand-in first) and every CLI command's module, starts no thread
and no event loop, and then only forks. A forked child gets the test's environment,
working directory, umask, arguments and descriptors (stdin, stdout, stderr), runs its
code as ``python -c`` would, and exits through the interpreter's normal shutdown.

The zygote's objects are frozen (``gc.freeze``) before the first fork, as the gc module
advises for a parent that forks without exec: otherwise every child's garbage collection,
and above all the full ones its shutdown runs, walk and write to the whole inherited heap
(copy-on-write faults), ~0.4 s per child, more than a CLI command's own work.

What stays as it was: the child is a real process, so kill -9, signals, ``/proc`` and
several nodes work as before. What differs from a fresh interpreter: the zygote's
modules are imported already. Tests about what a started process imports or how much
memory it holds (``tests/support/footprint.py``, ``tests/cli/test_light_import.py``)
start their own interpreters.

The test process talks to the zygote over a socket pair (one datagram per message, the
descriptors passed alongside); it asks the zygote, which is the children's parent, for
their exit status. Run with ``python -m tests.support.zygote FD``.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

_MAX = 1 << 20


def _send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    socket.send_fds(sock, [json.dumps(message).encode()], list(fds))


def _receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(sock, _MAX, 3)
    return (json.loads(data) if data else None), fds


# -- the zygote (its own process) ------------------------------------------------------------


def _preload() -> None:
    """What ``keyfob`` (the CLI) imports to start and to run a command against a server,
    then what ``keyfob.app.bootstrap.run_server`` imports before it builds the app."""
    import httpcore  # noqa: F401  (httpx imports it when the first client is made)
    import typer.rich_utils  # noqa: F401  (help and usage errors)

    import keyfob.cli.client
    import keyfob.cli.main
    from keyfob.app import _uvicorn, bootstrap, create_app  # noqa: F401

    _uvicorn.install()
    from keyfob.app.tls import ServerTls, cert_protocol  # noqa: F401

    for _name, module, _attribute in keyfob.cli.main.COMMANDS:
        importlib.import_module(module)


def _child(request: dict[str, Any], fds: list[int]) -> int:
    """In the forked child: become the process asked for, run its code; the exit code."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["-c", *request["args"]]
    try:
        exec(compile(request["code"], "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit as stopped:
        if stopped.code is None or isinstance(stopped.code, int):
            return stopped.code or 0
        print(stopped.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _serve(sock: socket.socket) -> int | None:
    """Fork on request, report exits; returns the exit code when this is a child."""
    exited: dict[int, int] = {}
    while True:
        request, fds = _receive(sock)
        if request is None:  # the test process has gone
            return None
        if request["op"] == "spawn":
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                sock.close()
                return _child(request, fds)
            for fd in fds:
                os.close(fd)
            _send(sock, {"pid": pid})
        else:
            pid = request["pid"]
            if pid not in exited:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    exited[pid] = os.waitstatus_to_exitcode(status)
            _send(sock, {"code": exited.get(pid)})


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    _preload()
    gc.collect()
    gc.freeze()
    _send(sock, {"ready": True})
    try:
        code = _serve(sock)
    except KeyboardInterrupt:  # Ctrl-C on the test run reaches its whole process group
        return
    if code is not None:
        sys.exit(code)  # the child leaves through the interpreter's own shutdown


# -- the test process's side -----------------------------------------------------------------


class Zygote:
    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYFOB_")}
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.zygote", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            cwd=root,
            env=env,
        )
        theirs.close()
        self.sock = ours
        self.lock = threading.Lock()
        answer, _ = _receive(ours)
        assert answer == {"ready": True}, answer

    def ask(self, message: dict[str, Any], fds: Sequence[int] = ()) -> dict[str, Any]:
        with self.lock:
            _send(self.sock, message, fds)
            answer, _ = _receive(self.sock)
        assert answer is not None, "the zygote has gone"
        return answer

    def close(self) -> None:
        self.sock.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Forked:
    """A forked child, as much of ``subprocess.Popen`` as the tests use."""

    def __init__(self, zygote: Zygote, pid: int, args: list[str]) -> None:
        self.zygote, self.pid, self.args = zygote, pid, args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.ask({"op": "status", "pid": self.pid})["code"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.01)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


_zygote: Zygote | None = None
_started = threading.Lock()


def _the_zygote() -> Zygote:
    global _zygote
    with _started:
        if _zygote is None or _zygote.process.poll() is not None:
            _zygote = Zygote()
            atexit.register(_zygote.close)
        return _zygote


def _fork(code: str, args: Sequence[str], env: dict[str, str], fds: Sequence[int]) -> Forked:
    forker = _the_zygote()
    request = {
        "op": "spawn",
        "code": code,
        "args": list(args),
        "env": env,
        "cwd": os.getcwd(),
        "umask": _umask(),
    }
    return Forked(forker, forker.ask(request, fds)["pid"], ["-c", code, *args])


def spawn(
    code: str, args: Sequence[str], env: dict[str, str], stdout: int, stderr: int | None = None
) -> Forked:
    """``python -c CODE ARGS`` with ``env``, stdout to ``stdout`` and stderr to ``stderr``
    (default: ``stdout`` too), stdin empty."""
    errors = stdout if stderr is None else stderr
    with open(os.devnull, "rb") as stdin:
        return _fork(code, args, env, [stdin.fileno(), stdout, errors])


def run_module(
    module: str,
    args: Sequence[str],
    *,
    env: dict[str, str],
    input: bytes = b"",
    timeout: float = 60,
    text: bool = False,
) -> subprocess.CompletedProcess[Any]:
    """``python -m MODULE ARGS`` as ``subprocess.run(..., capture_output=True)`` answers it
    (stdin, stdout and stderr are files here, never a terminal, as pipes are not)."""
    # runpy warns when the module is imported already, as the zygote's preloads are: an
    # artefact of preloading that a fresh ``python -m`` would not print, so not shown here.
    code = (
        "import runpy, warnings\n"
        "warnings.filterwarnings('ignore', '.*found in sys.modules after import of package',"
        " RuntimeWarning)\n"
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
    )
    with (
        tempfile.TemporaryFile() as stdin,
        tempfile.TemporaryFile() as stdout,
        tempfile.TemporaryFile() as stderr,
    ):
        stdin.write(input)
        stdin.seek(0)
        child = _fork(code, args, env, [stdin.fileno(), stdout.fileno(), stderr.fileno()])
        try:
            returncode = child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise
        stdout.seek(0)
        stderr.seek(0)
        argv = [sys.executable, "-m", module, *args]
        out, err = stdout.read(), stderr.read()
    if text:
        return subprocess.CompletedProcess(argv, returncode, out.decode(), err.decode())
    return subprocess.CompletedProcess(argv, returncode, out, err)


def _umask() -> int:
    """This process's umask, read without setting it (threads may be making files)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("Umask:"))
    return int(line.split()[1], 8)


if __name__ == "__main__":
    main()
