"""The canary leak scan for ``keyfob mcp``: a set whose key is the canary, on a grant that
even allows export, driven over stdio through every tool and every error path the model
can reach (echoed credentials, binary and cut answers, steering attempts at keyfob's own
routes, unknown sets). Every byte the server returned, printed or logged — and the keyfob
server's log — is searched for the canary in raw, JSON, URL, hex and base64 form, and for
anything shaped like a keyfob token. Zero hits."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import CANARY
from tests.mcp_server.conftest import TOKEN_SHAPE, Recorder, granted, keyfob_mcp, mcp_env
from tests.support.server import LiveServer
from tests.support.upstream import FakeUpstream
from tests.test_leak import forms


async def test_nothing_mcp_returns_prints_or_logs_holds_the_key(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream, tmp_path: Path
) -> None:
    from mcp import Client, StdioServerParameters, stdio_client  # see conftest's note

    p, _ = granted(operator, upstream, actions=["proxy", "export"])
    command = keyfob_mcp()
    params = StdioServerParameters(
        command=command[0], args=command[1:], env=mcp_env(server.url, p.agent_token)
    )
    seen = Recorder()
    errlog = tmp_path / "stderr.log"
    calls = [
        # The upstream echoes the injected Authorization, in JSON and compressed.
        {"method": "POST", "path": "/echo/leak", "body": {"q": 1}},
        {"method": "GET", "path": "/gzip"},
        {"method": "GET", "path": "/bytes?n=2000"},
        {"method": "GET", "path": "/big?n=200000"},
        # Attempts at keyfob's own routes through the proxy, and at another host.
        {"method": "POST", "path": f"/../../v1/secret-sets/{p.set_path}/export"},
        {"method": "POST", "path": f"/%2e%2e/%2e%2e/v1/secret-sets/{p.set_path}/export"},
        {"method": "GET", "path": "https://api.openai.com/v1/models"},
        {"method": "GET", "path": "/echo/x", "headers": {"X-Keyfob-Lease": "kfl_guess"}},
    ]
    with errlog.open("w") as err:
        async with Client(stdio_client(params, errlog=err)) as client:
            await seen.tools(client)
            await seen.call(client, "list_secret_sets")
            for call in calls:
                await seen.call(client, "http_request", secret_set=p.set_path, **call)
            await seen.call(
                client, "http_request", secret_set="openai/prod/none", method="GET", path="/"
            )
            await seen.call(client, "request_access", secret_set=p.set_path, reason=CANARY[:6])
    echoed = [s for s in upstream.seen if s.path == "/echo/leak"]
    assert echoed[-1].header("authorization") == f"Bearer {CANARY}"  # the key did go out

    everything = "\n".join([seen.text(), errlog.read_text(), server.log_text()]).encode()
    hits = [form for form in forms(CANARY) if form in everything]
    assert hits == []
    assert p.agent_token.encode() not in everything
    assert not TOKEN_SHAPE.search(everything.decode(errors="replace"))
