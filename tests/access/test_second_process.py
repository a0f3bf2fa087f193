"""Two server processes on one database: revocation, single use and disabling hold across them."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from keyfob.app.bootstrap import init_vault
from keyfob.settings import Settings
from tests.access.factories import ENTRIES, bearer
from tests.conftest import make_set
from tests.support.backends import BACKENDS, reset_postgres
from tests.support.http import assert_problem
from tests.support.server import start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=BACKENDS)
def nodes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Operator clients of two keyfob servers sharing one database (and data dir)."""
    workdir = tmp_path_factory.mktemp(f"nodes-{request.param}")
    url = reset_postgres() if request.param == "postgresql" else None
    settings = Settings(data_dir=workdir / "data", database_url=url)
    init = init_vault(settings)
    assert init.operator_token is not None
    token = init.operator_token.reveal()
    # Start both at once: each start is mostly imports, and the two overlap well.
    with ThreadPoolExecutor(2) as pool:
        starting = [
            pool.submit(start_server, settings, token, workdir / f"{n}.log") for n in ("1", "2")
        ]
        servers = [f.result() for f in starting]
    try:
        with (
            httpx.Client(base_url=servers[0].url, headers=bearer(token), timeout=30) as one,
            httpx.Client(base_url=servers[1].url, headers=bearer(token), timeout=30) as two,
        ):
            yield one, two
    finally:
        for server in servers:
            server.stop()


def _setup(node: httpx.Client, name: str, **grant: Any) -> str:
    """A set ``multi/prod/<name>`` and an agent ``<name>`` granted it; the agent's token."""
    created = node.post("/v1/secret-sets", json=make_set("multi", "prod", name, dict(ENTRIES)))
    assert created.status_code == 201, created.text
    agent = node.post("/v1/agents", json={"name": name})
    assert agent.status_code == 201, agent.text
    body = {"agent": name, "secret_set": f"multi/prod/{name}", "actions": ["export"], **grant}
    assert node.post("/v1/grants", json=body).status_code == 201
    token: str = agent.json()["token"]
    return token


def _mint(node: httpx.Client, agent_token: str, name: str, **body: Any) -> httpx.Response:
    return node.post(
        "/v1/leases",
        json={"secret_set": f"multi/prod/{name}", **body},
        headers=bearer(agent_token),
    )


def _export(node: httpx.Client, lease_token: str, name: str) -> httpx.Response:
    return node.post(f"/v1/secret-sets/multi/prod/{name}/export", headers=bearer(lease_token))


def test_revocation_on_one_node_stops_the_next_use_on_the_other(
    nodes: tuple[httpx.Client, httpx.Client],
) -> None:
    one, two = nodes
    agent = _setup(one, "revoke", scopes=["workflow"])
    minted = _mint(one, agent, "revoke", scope="workflow")
    assert minted.status_code == 201, minted.text
    lease = minted.json()

    used = _export(two, lease["token"], "revoke")
    revoked = one.delete(f"/v1/leases/{lease['id']}")
    refused = _export(two, lease["token"], "revoke")

    assert used.status_code == 200, used.text
    assert used.json()["entries"] == ENTRIES
    assert revoked.status_code == 200, revoked.text
    assert assert_problem(refused, 403, "forbidden")["reason"] == "revoked"
    assert ENTRIES["OPENAI_API_KEY"] not in refused.text


def test_single_use_lease_spent_on_one_node_is_spent_on_the_other(
    nodes: tuple[httpx.Client, httpx.Client],
) -> None:
    one, two = nodes
    agent = _setup(two, "single")
    minted = _mint(two, agent, "single")
    assert minted.status_code == 201, minted.text
    lease = minted.json()

    first = _export(one, lease["token"], "single")
    second = _export(two, lease["token"], "single")

    assert first.status_code == 200, first.text
    assert assert_problem(second, 403, "forbidden")["reason"] == "exhausted"
    audited = one.get("/v1/audit", params={"action": "secret_set.export"}).json()["items"]
    assert [e["details"]["lease_id"] for e in audited].count(lease["id"]) == 1


def test_agent_disabled_on_one_node_cannot_mint_on_the_other(
    nodes: tuple[httpx.Client, httpx.Client],
) -> None:
    one, two = nodes
    agent = _setup(one, "disabled")
    assert _mint(one, agent, "disabled").status_code == 201

    assert two.post("/v1/agents/disabled/disable").status_code == 200
    refused = _mint(one, agent, "disabled")

    assert_problem(refused, 401, "unauthorized")
    assert two.post("/v1/agents/disabled/enable").status_code == 200
    assert _mint(one, agent, "disabled").status_code == 201


def test_both_nodes_append_to_one_intact_audit_chain(
    nodes: tuple[httpx.Client, httpx.Client],
) -> None:
    one, two = nodes
    agent = _setup(one, "chain", scopes=["workflow"])
    lease = _mint(two, agent, "chain", scope="workflow").json()
    for node in (one, two, one, two):
        assert _export(node, lease["token"], "chain").status_code == 200

    for node in (one, two):
        verify = node.get("/v1/audit/verify").json()
        assert verify["ok"] is True, verify
    events = one.get("/v1/audit", params={"action": "secret_set.export", "limit": 1000}).json()
    assert sum(e["details"]["lease_id"] == lease["id"] for e in events["items"]) == 4
