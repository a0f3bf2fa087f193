"""The canary scan over what the SDK returns, raises and logs: no secret value, no agent
token and no lease token in any of it (reprs, messages, problem bodies, log records)."""

from __future__ import annotations

import logging
import traceback

import pytest

from keyfob import sdk
from tests.conftest import CANARY
from tests.sdk.conftest import InProcess, generic_set
from tests.support.upstream import FakeUpstream
from tests.test_leak import leaks


def test_nothing_the_sdk_returns_raises_or_logs_holds_a_secret(
    inproc: InProcess, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    world = generic_set(inproc.operator, upstream, methods=["GET"])
    seen: dict[str, bytes] = {}
    tokens: list[str] = []

    def keep(name: str, thing: object) -> None:
        seen[name] = f"{thing!r}\n{thing}".encode()

    with caplog.at_level(logging.DEBUG):
        agent = inproc.agent(world.agent_token)
        keep("agent", agent)
        keep("grants", agent.grants())
        lease = agent.mint_lease(world.set_path)
        workflow = agent.mint_lease(world.set_path, scope="workflow")
        batch = agent.mint_lease(world.set_path, count=3)
        tokens += [lease.token.reveal(), workflow.token.reveal()]
        tokens += [b.token.reveal() for b in batch]
        keep("leases", [lease, workflow, batch])
        keep("check", agent.check(lease, method="POST"))
        keep("renewed", agent.renew(workflow))
        with sdk.http_client(world.set_path, agent=agent) as http:
            answer = http.get("/echo")
            keep("auth", http.auth)
            keep("answer", (answer.headers, answer.text))
            refused = http.post("/echo")
        failures: list[BaseException] = []
        for attempt in (
            lambda: sdk.raise_for_keyfob(refused),
            lambda: agent.mint_lease("generic/test/nosuch"),
            lambda: agent.renew(lease),
            lambda: inproc.agent("kfa_" + "z" * 43).grants(),
        ):
            with pytest.raises(sdk.KeyfobError) as caught:
                attempt()
            failures.append(caught.value)
        agent.revoke(workflow)
        used = inproc.proxy(world.set_path, workflow.token.reveal())
        with pytest.raises(sdk.LeaseRevoked) as revoked:
            sdk.raise_for_keyfob(used)
        failures.append(revoked.value)
        for i, exc in enumerate(failures):
            text = "".join(traceback.format_exception(exc))
            seen[f"failure {i}"] = f"{exc!r}\n{exc}\n{exc.problem}\n{text}".encode()
    seen["log"] = caplog.text.encode()
    assert len(failures) == 5
    # The echo answer carries the agent's request back: keyfob injected the key upstream,
    # and the proxy masks it in the answer.
    assert leaks([CANARY, world.agent_token, *tokens], seen) == []
