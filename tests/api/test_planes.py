"""Split planes: the operator listener answers only the control plane, the agent
listener only the agent surface; each answers 404 for the other's routes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from keyfob.app.bootstrap import init_vault
from keyfob.settings import Settings
from tests.support import loopback
from tests.support.hashing import FAST_HASHING
from tests.support.server import free_port, start_server

pytestmark = pytest.mark.slow  # a child process with two listeners


def test_each_listener_answers_only_its_own_routes(tmp_path: Path) -> None:
    operator_port, agent_port = free_port(), free_port()
    settings = Settings(data_dir=tmp_path / "data", **FAST_HASHING)
    init = init_vault(settings)
    assert init.operator_token is not None
    token = init.operator_token.reveal()
    server = start_server(
        settings,
        token,
        tmp_path / "server.log",
        {
            "KEYFOB_OPERATOR_LISTEN": f"127.0.0.1:{operator_port}",
            "KEYFOB_AGENT_LISTEN": f"127.0.0.1:{agent_port}",
        },
        port=operator_port,  # where start_server waits for /healthz
    )
    operator_url = f"http://127.0.0.1:{operator_port}"
    agent_url = f"http://127.0.0.1:{agent_port}"
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(timeout=10, headers=auth) as http:
            assert http.get(f"{operator_url}/v1/agents").status_code == 200
            agent = http.post(f"{operator_url}/v1/agents", json={"name": "planes"})
            assert agent.status_code == 201, agent.text
            for url in (operator_url, agent_url):
                assert http.get(f"{url}/healthz").status_code == 200
                # Readiness on both, for an operator and for a load balancer (no token).
                assert http.get(f"{url}/readyz").json() == {"status": "ready"}
                assert loopback.get(f"{url}/readyz", timeout=10).json() == {"status": "ready"}
            # The control plane is not on the agent listener, nor the dashboard.
            for path in ("/v1/agents", "/v1/secret-sets", "/ui/", "/v1/audit", "/docs"):
                refused = http.get(f"{agent_url}{path}")
                assert refused.status_code == 404, path
                assert refused.headers["content-type"] == "application/problem+json"
            assert http.get(f"{agent_url}/v1/leases").status_code == 404  # list: operator's
            kfa = {"Authorization": f"Bearer {agent.json()['token']}"}
            # The agent surface is on the agent listener, and not on the operator's.
            mine = http.get(f"{agent_url}/v1/me/grants", headers=kfa)
            assert mine.status_code == 200, mine.text
            assert http.get(f"{operator_url}/v1/me/grants", headers=kfa).status_code == 404
            assert http.post(f"{operator_url}/v1/leases", headers=kfa, json={}).status_code == 404
            assert http.get(f"{operator_url}/proxy/a/b/c/x").status_code == 404
            assert http.post(f"{agent_url}/v1/leases", headers=kfa, json={}).status_code == 422
    finally:
        server.stop()
