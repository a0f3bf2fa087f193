"""``keyfob mcp`` as a model's host runs it: a child process over stdio, and over streamable
HTTP (``--http``), driven by the MCP SDK's own client. Each lists the tools, calls
``http_request`` against the fake upstream through a live keyfob, and the call is in the
audit log as the agent's. The canary (the set's key) is in no byte the server returned,
printed or logged, and neither is the agent token nor a lease."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import CANARY
from tests.mcp_server.conftest import (
    TOKEN_SHAPE,
    Recorder,
    body_of,
    granted,
    keyfob_mcp,
    mcp_env,
    uses_by,
)
from tests.support import loopback
from tests.support.server import LiveServer
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.slow  # servers or commands in child processes, seconds each

if TYPE_CHECKING:
    from mcp import Client

TOOLS = {"list_secret_sets", "http_request", "request_access"}


async def _session(client: Client, seen: Recorder, set_path: str) -> None:
    assert {t.name for t in await seen.tools(client)} == TOOLS
    listed = await seen.call(client, "list_secret_sets")
    assert listed.data is not None, listed.text
    assert [s["secret_set"] for s in listed.data["secret_sets"]] == [set_path]
    called = await seen.call(
        client, "http_request", secret_set=set_path, method="POST", path="/echo/via-mcp", body="hi"
    )
    assert body_of(called)["body"] == "hi"
    refused = await seen.call(
        client, "http_request", secret_set="generic/test/absent", method="GET", path="/echo"
    )
    assert refused.error
    assert "not among this agent's grants" in refused.text


def _clean(*texts: str, token: str) -> None:
    for text in texts:
        assert CANARY not in text
        assert token not in text
        assert not TOKEN_SHAPE.search(text), TOKEN_SHAPE.search(text)


async def test_stdio(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream, tmp_path: Path
) -> None:
    from mcp import Client, StdioServerParameters, stdio_client  # see conftest's note

    p, agent_id = granted(operator, upstream)
    token_file = tmp_path / "agent-token"
    token_file.write_text(p.agent_token + "\n")
    token_file.chmod(stat.S_IRUSR | stat.S_IWUSR)
    command = keyfob_mcp("--token-file", str(token_file))
    params = StdioServerParameters(
        command=command[0],
        args=command[1:],
        env=mcp_env(server.url),  # no KEYFOB_TOKEN
    )
    seen = Recorder()
    errlog = tmp_path / "stderr.log"
    with errlog.open("w") as err:
        async with Client(stdio_client(params, errlog=err)) as client:
            await _session(client, seen, p.set_path)

    (use,) = uses_by(operator, agent_id, p.set_path)
    assert use["details"]["path"] == "/echo/via-mcp"
    assert use["actor"] == f"agent:{agent_id}"
    hit = [s for s in upstream.seen if s.path == "/echo/via-mcp"][-1]
    assert hit.header("authorization") == f"Bearer {CANARY}"
    _clean(seen.text(), errlog.read_text(), server.log_text(), token=p.agent_token)


async def test_streamable_http(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream, start_http_mcp: Any
) -> None:
    from mcp import Client

    p, agent_id = granted(operator, upstream)
    mcp = start_http_mcp(server.url, p.agent_token)
    seen = Recorder()
    async with Client(mcp.url) as client:
        await _session(client, seen, p.set_path)

    (use,) = uses_by(operator, agent_id, p.set_path)
    assert use["details"]["path"] == "/echo/via-mcp"
    assert use["actor"] == f"agent:{agent_id}"
    # A page that rebinds its DNS name to loopback cannot drive the endpoint.
    rebound = loopback.post(
        mcp.url,
        headers={"Host": "attacker.example:8765", "Content-Type": "application/json"},
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
    )
    assert rebound.status_code in (400, 403, 421), rebound.text
    mcp.process.terminate()
    mcp.process.wait(timeout=10)
    _clean(seen.text(), mcp.log.read_text(), server.log_text(), token=p.agent_token)


def test_http_binds_loopback_only_and_the_token_comes_from_a_file_or_env(
    server: LiveServer, tmp_path: Path
) -> None:
    def run(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            keyfob_mcp(*args),
            env=mcp_env(server.url, token),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    public = run("--http", "0.0.0.0:8765", token="kfa_" + "x" * 43)
    assert public.returncode != 0
    assert "loopback only" in public.stderr
    missing = run()
    assert missing.returncode != 0
    assert "needs an agent token" in missing.stderr
    operator_token = run(token=server.operator_token)
    assert operator_token.returncode != 0
    assert "operator token" in operator_token.stderr
    assert server.operator_token not in operator_token.stderr + operator_token.stdout
    unusable = subprocess.run(
        keyfob_mcp(),
        env={
            **mcp_env("https://127.0.0.1:9", "kfa_" + "x" * 43),
            "KEYFOB_CA_FILE": str(tmp_path / "missing.pem"),
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unusable.returncode == 1
    assert unusable.stderr == (
        f"error: cannot use {tmp_path / 'missing.pem'} as the CA file (KEYFOB_CA_FILE): "
        "No such file or directory\n"
    )
    for result in (public, missing, operator_token, unusable):
        assert "Traceback" not in result.stderr
