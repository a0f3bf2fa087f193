"""The official OpenAI and Anthropic clients from ``keyfob.sdk.openai()`` /
``anthropic()`` reach a fake provider through a running keyfob: each call on its own
lease, the key injected by keyfob, no key or lease anywhere on the agent's side."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from keyfob import sdk
from tests.conftest import CANARY
from tests.sdk.conftest import preset_set
from tests.support.server import LiveServer
from tests.support.upstream import FakeUpstream
from tests.test_leak import leaks

# openai and anthropic are imported in the one test that names their errors: every xdist
# worker collects this module, and importing them costs ~3 s of CPU (see test_sdks.py).
MESSAGES = [{"role": "user", "content": "hi"}]


def _lease_uses(operator: httpx.Client, set_path: str) -> list[str]:
    events = operator.get(
        "/v1/audit",
        params={"action": "lease.use", "target": f"secret_set:{set_path}", "limit": 1000},
    ).json()["items"]
    return [e["details"]["lease_id"] for e in events]


def test_openai_calls_each_on_a_fresh_lease(
    server: LiveServer,
    operator: httpx.Client,
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = preset_set(operator, upstream, "openai", "OPENAI_API_KEY")
    mark = len(upstream.seen)
    saw: dict[str, bytes] = {}
    with caplog.at_level(logging.DEBUG):
        with sdk.openai(world.set_path, addr=server.url, token=world.agent_token) as client:
            for i in range(3):
                answer = client.chat.completions.create(model="gpt-fake", messages=MESSAGES)
                assert answer.choices[0].message.content == "hello from upstream"
                saw[f"completion {i}"] = f"{answer!r} {answer.model_dump_json()}".encode()
            stream = client.chat.completions.create(
                model="gpt-fake", messages=MESSAGES, stream=True, extra_body={"chunks": 3}
            )
            with stream:
                chunks = [c.choices[0].delta.content for c in stream if c.choices]
            saw["stream"] = repr(chunks).encode()
            saw["client"] = repr(client).encode()
    seen = upstream.seen[mark:]
    assert [s.path for s in seen] == ["/v1/chat/completions"] * 4
    assert all(s.header("authorization") == f"Bearer {CANARY}" for s in seen)
    assert all("keyfob-lease" not in repr(s.headers) for s in seen)  # the placeholder key
    uses = _lease_uses(operator, world.set_path)
    assert len(uses) == len(set(uses)) == 4
    saw["log"] = caplog.text.encode()
    assert leaks([CANARY, world.agent_token], saw) == []


def test_anthropic_and_async_openai(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    world = preset_set(operator, upstream, "anthropic", "ANTHROPIC_API_KEY")
    mark = len(upstream.seen)
    with sdk.anthropic(world.set_path, addr=server.url, token=world.agent_token) as client:
        message = client.messages.create(model="claude-fake", max_tokens=16, messages=MESSAGES)
    assert message.content[0].text == "hello from upstream"
    (seen,) = upstream.seen[mark:]
    assert seen.path == "/v1/messages"
    assert [v for k, v in seen.headers if k.lower() == "x-api-key"] == [CANARY]

    other = preset_set(operator, upstream, "openai", "OPENAI_API_KEY")

    async def calls() -> list[str]:
        async with sdk.async_openai(
            other.set_path, addr=server.url, token=other.agent_token
        ) as aclient:
            answers = await asyncio.gather(
                *(aclient.chat.completions.create(model="m", messages=MESSAGES) for _ in range(5))
            )
        return [a.choices[0].message.content for a in answers]

    assert asyncio.run(calls()) == ["hello from upstream"] * 5
    assert len(set(_lease_uses(operator, other.set_path))) == 5


def test_keyfob_refusals_reach_the_caller_typed(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    import anthropic
    import openai

    world = preset_set(operator, upstream, "openai", "OPENAI_API_KEY", methods=["GET"])
    with sdk.openai(world.set_path, addr=server.url, token=world.agent_token) as client:
        # The proxy's refusal is an HTTP answer: the SDK's own error, with keyfob's problem.
        with pytest.raises(openai.PermissionDeniedError) as denied:
            client.chat.completions.create(model="m", messages=MESSAGES, timeout=5)
        assert "method_not_allowed" in denied.value.response.text
        with pytest.raises(sdk.Denied) as typed:
            sdk.raise_for_keyfob(denied.value.response)
        assert typed.value.reason == "method_not_allowed"
    # A mint that fails happens before the request: the typed error, or the provider
    # SDK's connection error caused by it (releases differ in whether they wrap).
    with sdk.openai(
        "openai/test/nosuch", addr=server.url, token=world.agent_token, max_retries=0
    ) as client:
        with pytest.raises((sdk.UnknownSecretSet, openai.APIConnectionError)) as unknown:
            client.models.list()
    assert isinstance(_typed(unknown.value), sdk.UnknownSecretSet)
    with sdk.anthropic(
        world.set_path, addr=server.url, token="kfa_" + "n" * 43, max_retries=0
    ) as aclient:
        with pytest.raises((sdk.AuthenticationFailed, anthropic.APIConnectionError)) as refused:
            aclient.models.list()
    assert isinstance(_typed(refused.value), sdk.AuthenticationFailed)


def _typed(exc: BaseException) -> BaseException | None:
    return exc if isinstance(exc, sdk.KeyfobError) else exc.__cause__
