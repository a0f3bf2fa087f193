"""Real, unmodified clients through the forward proxy: each sends only a placeholder
key and the proxy credential; the fake upstream (a real provider's name, over TLS)
receives the set's real credential, and the child sees none of it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import CANARY
from tests.proxy.forwarding import (
    GIT_CANARY,
    GIT_HOST,
    OPENAI_HOST,
    PLACEHOLDER,
    Forward,
    fwd,  # noqa: F401 - the module's fixture
)

pytestmark = pytest.mark.usefixtures("fwd")


def _run(fwd: Forward, args: list[str], **extra: str) -> str:
    done = subprocess.run(  # noqa: S603 - the test's own commands
        args,
        env=fwd.child_env(**extra),
        capture_output=True,
        timeout=60,
        check=False,
        cwd=fwd.workdir,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, output
    assert CANARY not in output
    assert GIT_CANARY not in output
    return output


def _last_auth(fwd: Forward) -> str | None:
    return fwd.upstream.seen[-1].header("authorization")


def test_curl(fwd: Forward) -> None:
    fwd.upstream.clear()
    out = _run(
        fwd,
        ["curl", "-sS", "--fail", "-H", f"Authorization: Bearer {PLACEHOLDER}",
         f"https://{OPENAI_HOST}/v1/echo"],
    )
    assert json.loads(out)["path"] == "/v1/echo"
    assert _last_auth(fwd) == f"Bearer {CANARY}"
    assert fwd.upstream.seen[-1].header("x-keyfob-lease") is None
