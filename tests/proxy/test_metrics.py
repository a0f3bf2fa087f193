"""``/metrics``: operator-only, parsed by prometheus-client's own parser, and leak-free."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CANARY
from tests.proxy.factories import local_profile, proxied
from tests.support import loopback
from tests.support.server import LiveServer
from tests.support.upstream import FakeUpstream
from tests.test_leak import leaks

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(operator: httpx.Client) -> tuple[str, Samples]:
    answer = operator.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return answer.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_metrics_are_for_operators_only(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    anonymous = loopback.get(f"{server.url}/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert "keyfob_" not in anonymous.text
    wrong = loopback.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {CANARY}"})
    assert wrong.status_code == 401
    p = proxied(operator, local_profile(upstream))
    as_agent = loopback.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {p.agent_token}"}
    )
    assert as_agent.status_code == 403
    assert as_agent.headers["content-type"] == "application/problem+json"


def test_proxied_requests_mints_and_denials_are_counted_without_secrets(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p = proxied(operator, local_profile(upstream))
    _, before = scrape(operator)
    lease = p.lease()
    auth = {"Authorization": f"Bearer {lease}"}
    for _ in range(3):
        assert loopback.get(p.url("/echo/x"), headers=auth).status_code == 200
    assert loopback.get(p.url("/slow?delay=0.2"), headers=auth).status_code == 200
    assert loopback.get(p.url("/status/503"), headers=auth).status_code == 503
    # Refused before any use: a made-up lease, and a lease-looking string in the route.
    bogus = "kfl_" + CANARY
    assert (
        loopback.get(p.url("/echo"), headers={"Authorization": f"Bearer {bogus}"}).status_code
        == 401
    )
    elsewhere = loopback.get(f"{server.url}/proxy/{bogus}/x/y/z", headers=auth)
    assert elsewhere.status_code == 403, elsewhere.text
    # A mint for a set the agent has no grant for is denied (and audited).
    other = proxied(operator, local_profile(upstream))
    denied = loopback.post(
        f"{server.url}/v1/leases",
        json={"secret_set": other.set_path},
        headers={"Authorization": f"Bearer {p.agent_token}"},
    )
    assert denied.status_code == 403, denied.text

    text, after = scrape(operator)
    name = "keyfob_proxy_requests_total"
    assert value(after, name, set=p.set_path, status_class="2xx", outcome="ok") == 4
    assert value(after, name, set=p.set_path, status_class="5xx", outcome="ok") == 1
    refused = {"set": "none", "status_class": "4xx", "outcome": "refused"}
    assert value(after, name, **refused) - value(before, name, **refused) == 2
    upstream_count = value(after, "keyfob_proxy_upstream_seconds_count", set=p.set_path)
    assert upstream_count == 5
    assert value(after, "keyfob_proxy_upstream_seconds_sum", set=p.set_path) >= 0.2
    overhead = "keyfob_proxy_overhead_seconds_count"
    assert value(after, overhead) - value(before, overhead) == 5
    # keyfob's own share is far below the slow upstream's 0.2 s.
    added = value(after, "keyfob_proxy_overhead_seconds_sum") - value(
        before, "keyfob_proxy_overhead_seconds_sum"
    )
    assert 0 < added < 5 * 0.2
    mints = "keyfob_lease_mints_total"
    assert value(after, mints) - value(before, mints) == 1  # p.lease(); the denied one is not
    denials = total(after, "keyfob_lease_denials_total", stage="mint") - total(
        before, "keyfob_lease_denials_total", stage="mint"
    )
    assert denials == 1
    failures = total(after, "keyfob_auth_failures_total") - total(
        before, "keyfob_auth_failures_total"
    )
    assert failures == 1
    uses = total(after, "keyfob_lease_denials_total", stage="use") - total(
        before, "keyfob_lease_denials_total", stage="use"
    )
    assert uses == 1
    commits = "keyfob_audit_commit_seconds_count"
    assert value(after, commits) > value(before, commits)
    assert ("keyfob_audit_queue_depth", ()) in after
    assert value(after, "keyfob_proxy_open_streams") == 0
    # No value, token or lease in any label or line.
    secrets = [CANARY, lease, bogus, p.agent_token, server.operator_token]
    assert leaks(secrets, {"metrics": text.encode()}) == []


def test_an_open_stream_is_counted_until_it_ends(
    operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p = proxied(operator, local_profile(upstream))
    auth = {"Authorization": f"Bearer {p.lease()}"}
    with (
        httpx.Client(timeout=10) as agent,
        agent.stream("GET", p.url("/sse?events=3&delay=0.4"), headers=auth) as stream,
    ):
        chunks = stream.iter_raw()
        next(chunks)
        _, during = scrape(operator)
        assert value(during, "keyfob_proxy_open_streams") == 1
        for _ in chunks:
            pass
    deadline = time.monotonic() + 5
    while value(scrape(operator)[1], "keyfob_proxy_open_streams") != 0:
        assert time.monotonic() < deadline, "the finished stream is still counted"
        time.sleep(0.05)


def test_credential_refreshes_are_counted_by_grant_and_result(
    operator: httpx.Client,
) -> None:
    from tests.proxy.test_oauth import call, refresh_set
    from tests.support.oauth_server import FakeAuthServer

    name = "keyfob_credential_refreshes_total"
    auth = FakeAuthServer().start()
    try:
        _, before = scrape(operator)
        assert call(refresh_set(operator, auth)).status_code == 200
        auth.fail_next = 3  # every bounded retry fails: one error
        down = call(refresh_set(operator, auth))
        assert down.status_code == 502, down.text
        dead = refresh_set(operator, auth)
        auth.revoke_all()
        assert call(dead).status_code == 502
        text, after = scrape(operator)
    finally:
        auth.stop()

    def added(**labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert added(grant="refresh_token", result="ok") == 1
    assert total(after, name, result="error") - total(before, name, result="error") == 1
    assert added(grant="refresh_token", result="reconnect_needed") == 1
    assert leaks([auth.client_secret], {"metrics": text.encode()}) == []
