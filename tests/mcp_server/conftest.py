"""Fixtures for ``keyfob mcp``: a live keyfob, a fake upstream, and MCP clients that drive the
server in this process (in memory) or as ``keyfob mcp`` over stdio and streamable HTTP."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from keyfob.app.bootstrap import init_vault
from keyfob.mcp.config import McpConfig
from keyfob.secret import Secret
from keyfob.settings import Settings
from tests.proxy import factories
from tests.proxy.factories import Proxied
from tests.support.hashing import FAST_HASHING
from tests.support.server import LiveServer, free_port, serve_in_thread
from tests.support.upstream import FakeUpstream

if TYPE_CHECKING:
    from mcp import Client
    from mcp.types import CallToolResult

# The mcp SDK (and keyfob.mcp.server, built on it) is imported where a client or server is
# made: every xdist worker collects these modules, and importing it costs ~1 s of CPU.

# Anything shaped like a keyfob token: none may appear in what MCP returns, prints or logs.
TOKEN_SHAPE = re.compile(r"kf[oal]_[0-9A-Za-z]{20,}")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("mcp-keyfob")
    settings = Settings(data_dir=workdir / "data", **FAST_HASHING)
    init = init_vault(settings)
    assert init.operator_token is not None
    live = serve_in_thread(settings, init.operator_token.reveal(), workdir / "server.log")
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def operator(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {server.operator_token}"},
        timeout=30,
    ) as client:
        yield client
    factories.close_clients()


def granted(operator: httpx.Client, upstream: FakeUpstream, **grant: Any) -> tuple[Proxied, str]:
    """A set on the fake upstream (its key is the canary), an agent granted it, the agent's id."""
    p = factories.proxied(operator, factories.local_profile(upstream), grant=grant)
    agent_id = operator.get(f"/v1/agents/{p.agent_name}").json()["id"]
    return p, agent_id


@dataclass
class Called:
    """One tool call's result as the model sees it."""

    error: bool
    text: str
    data: dict[str, Any] | None

    @classmethod
    def of(cls, result: CallToolResult) -> Called:
        text = "\n".join(getattr(block, "text", "") for block in result.content)
        data = result.structured_content if not result.is_error else None
        return cls(bool(result.is_error), text, data)


class Recorder:
    """Every byte an MCP client got back, for the leak scan."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def call(self, client: Client, tool: str, **arguments: Any) -> Called:
        result = await client.call_tool(tool, arguments)
        self.seen.append(result.model_dump_json())
        return Called.of(result)

    async def tools(self, client: Client) -> list[Any]:
        listed = await client.list_tools()
        self.seen.append(listed.model_dump_json())
        return list(listed.tools)

    def text(self) -> str:
        return "\n".join(self.seen)


@asynccontextmanager
async def in_memory(addr: str, token: str, **limits: Any) -> AsyncIterator[Client]:
    """The MCP server in this process, reached in memory through the SDK's client."""
    from mcp import Client

    from keyfob.mcp.server import KeyfobTools, build_server

    tools = KeyfobTools(McpConfig(addr=addr, token=Secret(token), **limits))
    try:
        async with Client(build_server(tools)) as client:
            yield client
    finally:
        await tools.aclose()


def mcp_env(addr: str, token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYFOB_")}
    env["KEYFOB_ADDR"] = addr
    if token is not None:
        env["KEYFOB_TOKEN"] = token
    return env


def keyfob_mcp(*args: str) -> list[str]:
    return [sys.executable, "-m", "keyfob.cli.main", "mcp", *args]


@dataclass
class HttpMcp:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def start_http_mcp(tmp_path: Path) -> Iterator[Any]:
    """Start ``keyfob mcp --http`` as a child process; stopped after the test."""
    started: list[HttpMcp] = []

    def start(addr: str, token: str) -> HttpMcp:
        port = free_port()
        log = tmp_path / f"mcp-http-{port}.log"
        announced = tmp_path / f"mcp-http-{port}.json"
        with log.open("wb") as err, announced.open("wb") as out:
            process = subprocess.Popen(
                keyfob_mcp("--http", f"127.0.0.1:{port}", "--json"),
                env=mcp_env(addr, token),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        started.append(HttpMcp("", process, log))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                # --json announced where it listens, on stdout, before serving.
                line = json.loads(announced.read_text().splitlines()[0])
                assert line == {"transport": "streamable-http", "url": line["url"], "addr": addr}
                assert line["url"] == f"http://127.0.0.1:{port}/mcp"
                return HttpMcp(line["url"], process, log)
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"keyfob mcp --http did not start: {log.read_text()}")

    yield start
    for server in started:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def audit(operator: httpx.Client, **filters: Any) -> list[dict[str, Any]]:
    return factories.audit(operator, **filters)


def uses_by(operator: httpx.Client, agent_id: str, set_path: str) -> list[dict[str, Any]]:
    """The agent's ``lease.use`` records on ``set_path`` (the proxy's audit of each call)."""
    return [
        e
        for e in audit(operator, action="lease.use", actor=f"agent:{agent_id}")
        if e["target"] == f"secret_set:{set_path}"
    ]


def body_of(called: Called) -> dict[str, Any]:
    """The upstream's JSON answer inside an http_request result."""
    assert not called.error, called.text
    assert called.data is not None
    assert called.data["body_encoding"] == "text", called.data
    parsed: dict[str, Any] = json.loads(called.data["body"])
    return parsed
