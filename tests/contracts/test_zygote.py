"""The warm interpreter that forks the suite's server processes (tests/support/zygote.py):
each child runs its code as ``python -c`` would, in the test's environment, working
directory and umask, and its exit (code or signal) comes back as ``Popen`` reports it."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.support import zygote

REPORT = """
import atexit, json, os, sys
atexit.register(lambda: print("atexit ran", flush=True))
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ),
                  "umask": os.umask(0), "stdin": sys.stdin.read(), "main": __name__}))
sys.exit(int(sys.argv[1]))
"""


def test_a_child_gets_the_callers_process_state_and_reports_its_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # not where the zygote runs (the repository)
    with open(os.devnull, "wb") as devnull:  # the zygote starts now, under today's umask
        assert zygote.spawn("pass", [], {}, devnull.fileno()).wait(timeout=30) == 0
    previous = os.umask(0o027)
    try:
        with out.open("wb") as stdout:
            child = zygote.spawn(REPORT, ["3", "x y"], {"ONLY": "this"}, stdout.fileno())
    finally:
        os.umask(previous)
    assert child.wait(timeout=30) == 3
    assert child.poll() == 3
    report, atexit_line = out.read_text().splitlines()
    seen = json.loads(report)
    assert seen["argv"] == ["-c", "3", "x y"]
    assert seen["cwd"] == str(tmp_path)
    assert seen["env"] == {"ONLY": "this"}
    assert seen["umask"] == 0o027
    assert seen["stdin"] == ""
    assert seen["main"] == "__main__"
    assert atexit_line == "atexit ran"  # it left through the interpreter's own shutdown


def test_an_uncaught_error_is_exit_1_with_its_traceback(tmp_path: Path) -> None:
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("wb") as stdout:
        child = zygote.spawn("raise RuntimeError('boom')", [], {}, stdout.fileno())
    assert child.wait(timeout=30) == 1
    assert "RuntimeError: boom" in out.read_text()
    # stderr apart from stdout when asked
    code = "print('said'); raise RuntimeError('apart')"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        child = zygote.spawn(code, [], {}, stdout.fileno(), stderr.fileno())
    assert child.wait(timeout=30) == 1
    assert out.read_text() == "said\n"
    assert "RuntimeError: apart" in err.read_text()


def test_a_killed_child_reports_the_signal_and_is_a_process_of_its_own(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with out.open("wb") as stdout:
        child = zygote.spawn("import time; time.sleep(60)", [], {}, stdout.fileno())
    assert child.pid != os.getpid()
    assert child.poll() is None
    child.kill()
    assert child.wait(timeout=30) == -signal.SIGKILL


def test_run_module_answers_as_subprocess_run_with_captured_output() -> None:
    done = zygote.run_module("json.tool", ["--compact"], env={}, input=b'{"a": [1, 2]}', text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, '{"a":[1,2]}\n', "")
    refused = zygote.run_module("json.tool", [], env={}, input=b"{not json")
    assert refused.returncode == 1
    assert refused.stdout == b""
    assert b"Expecting property name" in refused.stderr
