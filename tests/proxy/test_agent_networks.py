"""Agent network binding: a bound agent's token and leases work only from its networks.

The rule sits where the agent is checked: ``decision.decide`` for every lease use (proxy,
export, dry run) and the agent re-check of a mint; the client address is the one the
edge resolved (a trusted proxy's ``X-Forwarded-For``, else the peer).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keyfob.app.bootstrap import init_vault
from keyfob.settings import Settings
from keyfob.vault.rules import check_networks, network_allowed
from tests.proxy.factories import audit, local_profile, proxied, unique
from tests.support import loopback
from tests.support.hashing import FAST_HASHING
from tests.support.server import LiveServer, serve_in_thread
from tests.support.upstream import FakeUpstream


def bind(operator: httpx.Client, agent: str, networks: list[str] | None) -> dict[str, object]:
    answer = operator.patch(f"/v1/agents/{agent}", json={"allowed_networks": networks})
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def mint(server_url: str, agent_token: str, set_path: str, **headers: str) -> httpx.Response:
    return loopback.post(
        f"{server_url}/v1/leases",
        json={"secret_set": set_path, "scope": "workflow"},
        headers={"Authorization": f"Bearer {agent_token}", **headers},
    )


def test_the_rule() -> None:
    assert network_allowed(None, None)
    assert network_allowed("10.0.0.0/8", "10.1.2.3")
    assert not network_allowed("10.0.0.0/8", "11.1.2.3")
    assert not network_allowed("10.0.0.0/8", None)  # no address: not inside
    assert not network_allowed("10.0.0.0/8", "testclient")
    assert network_allowed("10.0.0.0/8,fd00::/8", "::ffff:10.0.0.1")
    assert network_allowed("10.0.0.0/8,fd00::/8", "fd00::1")
    assert check_networks(["10.1.2.3", "10.0.0.0/8", "10.1.2.3/32"]) == "10.1.2.3/32,10.0.0.0/8"
    with pytest.raises(ValueError, match="CIDR"):
        check_networks(["10.0.0.0/33"])


def test_a_token_from_outside_its_networks_is_refused_and_audited(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p = proxied(operator, local_profile(upstream))
    view = bind(operator, p.agent_name, ["10.9.0.0/16"])
    assert view["allowed_networks"] == ["10.9.0.0/16"]
    refused = mint(server.url, p.agent_token, p.set_path)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    # Every other agent route refuses the token too.
    me = loopback.get(
        f"{server.url}/v1/me/grants", headers={"Authorization": f"Bearer {p.agent_token}"}
    )
    assert me.status_code == 401
    failed = [
        e
        for e in audit(operator, action="auth.failed")
        if e["details"].get("reason") == "network_not_allowed"
    ]
    assert len(failed) >= 2
    assert all(e["details"]["client"] == "127.0.0.1" for e in failed)
    # Loopback added: the same token mints and proxies.
    bind(operator, p.agent_name, ["10.9.0.0/16", "127.0.0.0/8"])
    assert mint(server.url, p.agent_token, p.set_path).status_code == 201
    assert loopback.get(p.url("/echo"), headers={"Authorization": f"Bearer {p.lease()}"}).is_success


def test_a_lease_is_refused_once_its_agent_is_bound_elsewhere(
    server: LiveServer, operator: httpx.Client, upstream: FakeUpstream
) -> None:
    p = proxied(operator, local_profile(upstream))
    lease = p.lease()
    auth = {"Authorization": f"Bearer {lease}"}
    assert loopback.get(p.url("/echo"), headers=auth).status_code == 200
    bind(operator, p.agent_name, ["10.9.0.0/16"])
    refused = loopback.get(p.url("/echo"), headers=auth)
    assert refused.status_code == 403
    assert refused.json()["reason"] == "network_not_allowed"
    # The dry run judges the same way.
    check = loopback.post(f"{server.url}/v1/leases/check", json={"action": "proxy"}, headers=auth)
    assert check.status_code == 200, check.text
    assert check.json()["reason"] == "network_not_allowed"
    denies = audit(operator, action="lease.deny", target=f"secret_set:{p.set_path}")
    assert [e["details"]["reason"] for e in denies] == ["network_not_allowed"]
    # Unbound again: the lease works (it was never revoked, only refused).
    assert bind(operator, p.agent_name, None)["allowed_networks"] is None
    assert loopback.get(p.url("/echo"), headers=auth).status_code == 200
    updates = audit(operator, action="agent.update")
    assert updates[-1]["details"]["allowed_networks"] is None
    assert updates[-1]["details"]["previous_allowed_networks"] == ["10.9.0.0/16"]


def test_bad_networks_are_refused_and_change_nothing(operator: httpx.Client) -> None:
    name = unique("agent")
    bad = operator.post("/v1/agents", json={"name": name, "allowed_networks": ["10.0.0.0/33"]})
    assert bad.status_code in (400, 422)
    assert bad.headers["content-type"] == "application/problem+json"
    assert operator.get(f"/v1/agents/{name}").status_code == 404
    made = operator.post("/v1/agents", json={"name": name, "allowed_networks": ["10.0.0.0/8"]})
    assert made.status_code == 201
    assert made.json()["allowed_networks"] == ["10.0.0.0/8"]
    worse = operator.patch(f"/v1/agents/{name}", json={"allowed_networks": ["nope"]})
    assert worse.status_code in (400, 422)
    assert operator.get(f"/v1/agents/{name}").json()["allowed_networks"] == ["10.0.0.0/8"]


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """keyfob behind a TLS proxy on loopback: X-Forwarded-For names the client."""
    workdir: Path = tmp_path_factory.mktemp("behind-proxy")
    settings = Settings(data_dir=workdir / "data", trusted_proxies=["127.0.0.1"], **FAST_HASHING)
    init = init_vault(settings)
    assert init.operator_token is not None
    live = serve_in_thread(settings, init.operator_token.reveal(), workdir / "server.log")
    try:
        yield live
    finally:
        live.stop()


def test_the_client_address_comes_from_the_trusted_proxy(
    behind_proxy: LiveServer, upstream: FakeUpstream
) -> None:
    with httpx.Client(
        base_url=behind_proxy.url,
        headers={"Authorization": f"Bearer {behind_proxy.operator_token}"},
    ) as operator:
        p = proxied(operator, local_profile(upstream))
        bind(operator, p.agent_name, ["10.9.0.0/16"])
        inside = {"X-Forwarded-For": "10.9.1.2"}
        outside = {"X-Forwarded-For": "10.8.1.2"}
        assert mint(behind_proxy.url, p.agent_token, p.set_path, **outside).status_code == 401
        minted = mint(behind_proxy.url, p.agent_token, p.set_path, **inside)
        assert minted.status_code == 201, minted.text
        auth = {"Authorization": f"Bearer {minted.json()['token']}"}
        assert loopback.get(p.url("/echo"), headers={**auth, **inside}).status_code == 200
        refused = loopback.get(p.url("/echo"), headers={**auth, **outside})
        assert refused.status_code == 403
        assert refused.json()["reason"] == "network_not_allowed"
        # Without the header the client is the proxy itself (127.0.0.1): outside too.
        assert loopback.get(p.url("/echo"), headers=auth).status_code == 403
