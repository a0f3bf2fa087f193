"""The three tools, driven through the MCP SDK's client in memory against a live keyfob:
what the model sees, what reaches the upstream, what keyfob audits, and every refusal as a
tool error the model can read (never a traceback, a token or a value)."""

from __future__ import annotations

import base64

import httpx

from tests.conftest import CANARY
from tests.mcp_server.conftest import TOKEN_SHAPE, Recorder, body_of, granted, in_memory, uses_by
from tests.support.server import LiveServer, free_port
from tests.support.upstream import FakeUpstream

TOOLS = {"list_secret_sets", "http_request", "request_access"}


async def test_tools_are_listed_and_say_keys_stay_hidden(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p, _ = granted(operator, upstream)
    seen = Recorder()
    async with in_memory(server.url, p.agent_token) as client:
        tools = {t.name: t for t in await seen.tools(client)}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert "never visible" in (tool.description or ""), tool.name
    schema = tools["http_request"].input_schema
    assert set(schema["required"]) == {"secret_set", "method", "path"}
    # The agent token is the server's own: no tool takes a token or a lease.
    for tool in tools.values():
        assert not {"token", "lease", "agent_token"} & set(tool.input_schema["properties"])
    assert not TOKEN_SHAPE.search(seen.text())


async def test_list_secret_sets_names_keys_hosts_and_limits_never_values(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p, _ = granted(
        operator, upstream, methods=["GET", "POST"], paths=["/echo/**"], max_uses=5, rate_limit=30
    )
    seen = Recorder()
    async with in_memory(server.url, p.agent_token) as client:
        listed = await seen.call(client, "list_secret_sets")
    assert not listed.error, listed.text
    assert listed.data is not None
    (entry,) = listed.data["secret_sets"]
    assert entry["secret_set"] == p.set_path
    assert entry["keys"] == ["API_KEY"]
    assert entry["hosts"] == [upstream.host]
    assert entry["base_url"] == upstream.url
    assert entry["methods"] == ["GET", "POST"]
    assert entry["paths"] == ["/echo/**"]
    assert entry["remaining_uses"] == 5
    assert entry["rate_limit_per_minute"] == 30
    assert entry["approval"] == "none"
    assert CANARY not in seen.text()
    assert not TOKEN_SHAPE.search(seen.text())


async def test_http_request_goes_through_the_proxy_on_a_fresh_lease_each_time(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p, agent_id = granted(operator, upstream)
    seen = Recorder()
    async with in_memory(server.url, p.agent_token) as client:
        first = await seen.call(
            client,
            "http_request",
            secret_set=p.set_path,
            method="POST",
            path="/echo/mcp?x=1",
            headers={"X-Trace": "t1"},
            body={"hello": "world"},
        )
        second = await seen.call(
            client, "http_request", secret_set=p.set_path, method="get", path="echo/again"
        )
    echoed = body_of(first)
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/echo/mcp"
    assert echoed["query"] == "x=1"
    assert echoed["body"] == '{"hello":"world"}'
    sent = dict((k.lower(), v) for k, v in echoed["headers"])
    assert sent["x-trace"] == "t1"
    assert sent["content-type"] == "application/json"
    assert first.data is not None
    assert first.data["status"] == 200
    assert first.data["truncated"] is False
    assert body_of(second)["method"] == "GET"
    # The upstream got the real key, injected by keyfob; the model got it scrubbed.
    hits = [s for s in upstream.seen if s.path.startswith("/echo/") and s.header("x-trace")]
    assert hits[-1].header("authorization") == f"Bearer {CANARY}"
    assert CANARY not in seen.text()
    assert not TOKEN_SHAPE.search(seen.text())
    # Audited as the agent's own uses, each on its own single-use lease.
    uses = uses_by(operator, agent_id, p.set_path)
    assert [u["details"]["path"] for u in uses] == ["/echo/mcp", "/echo/again"]
    assert len({u["details"]["lease_id"] for u in uses}) == 2


async def test_the_model_cannot_steer_the_lease_or_the_credential(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p, agent_id = granted(operator, upstream)
    other, _ = granted(operator, upstream)
    foreign_lease = other.lease("request")
    async with in_memory(server.url, p.agent_token) as client:
        called = await Recorder().call(
            client,
            "http_request",
            secret_set=p.set_path,
            method="GET",
            path="/echo/steer",
            headers={
                "Authorization": "Bearer sk-from-the-model",
                "x-keyfob-lease": foreign_lease,
                "x-api-key": "sk-from-the-model",
            },
        )
    sent = dict((k.lower(), v) for k, v in body_of(called)["headers"])
    assert sent["authorization"] == "Bearer [REDACTED]" or CANARY not in sent["authorization"]
    hit = [s for s in upstream.seen if s.path == "/echo/steer"][-1]
    assert hit.header("authorization") == f"Bearer {CANARY}"
    assert hit.header("x-api-key") is None
    # The call used this agent's own lease on its own set, not the one the model passed.
    assert [u["details"]["path"] for u in uses_by(operator, agent_id, p.set_path)] == [
        "/echo/steer"
    ]
    listed = operator.get("/v1/leases", params={"agent": other.agent_name, "all": "true"})
    assert all(item["uses"] == 0 for item in listed.json()["items"])


async def test_binary_bodies_come_back_base64_and_big_ones_are_cut(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p, _ = granted(operator, upstream)
    async with in_memory(server.url, p.agent_token, max_response_bytes=1024) as client:
        binary = await Recorder().call(
            client, "http_request", secret_set=p.set_path, method="GET", path="/bytes?n=300"
        )
        big = await Recorder().call(
            client, "http_request", secret_set=p.set_path, method="GET", path="/big?n=5000"
        )
    assert binary.data is not None
    assert binary.data["body_encoding"] == "base64"
    assert binary.data["content_type"] == "image/png"
    assert base64.b64decode(binary.data["body"]) == bytes(i % 256 for i in range(300))
    assert binary.data["truncated"] is False
    assert big.data is not None
    assert big.data["truncated"] is True
    assert big.data["body_bytes"] == 1024
    assert base64.b64decode(big.data["body"]) == b"x" * 1024


async def test_refusals_are_tool_errors_the_model_can_read(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p, _ = granted(operator, upstream, methods=["GET"], paths=["/echo/**"], max_uses=1)
    seen = Recorder()
    async with in_memory(server.url, p.agent_token) as client:

        async def call(**arguments: object) -> str:
            called = await seen.call(client, "http_request", **arguments)
            assert called.error, called.text
            assert "Traceback" not in called.text
            return called.text

        unknown = await call(secret_set="generic/test/nothing", method="GET", path="/echo/x")
        bad_method = await call(secret_set=p.set_path, method="BREW", path="/echo/x")
        absolute = await call(secret_set=p.set_path, method="GET", path="http://evil.test/x")
        wrong_method = await call(secret_set=p.set_path, method="POST", path="/echo/x")
        wrong_path = await call(secret_set=p.set_path, method="GET", path="/status/200")
        ok = await seen.call(
            client, "http_request", secret_set=p.set_path, method="GET", path="/echo/1"
        )
        spent = await call(secret_set=p.set_path, method="GET", path="/echo/2")
    assert "not among this agent's grants" in unknown
    assert "method must be one of" in bad_method
    assert "relative to the secret set's base URL" in absolute
    assert "keyfob refused the request (HTTP 403)" in wrong_method
    assert "method_not_allowed" in wrong_method
    assert "path_not_allowed" in wrong_path
    assert not ok.error, ok.text
    assert "exhausted" in spent or "no uses left" in spent
    assert CANARY not in seen.text()
    assert not TOKEN_SHAPE.search(seen.text())


async def test_a_revoked_agent_token_and_an_unreachable_keyfob_are_named(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p, _ = granted(operator, upstream)
    assert operator.post(f"/v1/agents/{p.agent_name}/disable").status_code == 200
    seen = Recorder()
    async with in_memory(server.url, p.agent_token) as client:
        refused = await seen.call(client, "list_secret_sets")
    async with in_memory(f"http://127.0.0.1:{free_port()}", p.agent_token) as client:
        down = await seen.call(
            client, "http_request", secret_set=p.set_path, method="GET", path="/echo/x"
        )
    assert refused.error
    assert "agent token" in refused.text
    assert down.error
    assert "unreachable" in down.text
    assert not TOKEN_SHAPE.search(seen.text())
