"""Three keyfob processes on one database race to refresh one expired OAuth token.

SQLite (one data dir) and PostgreSQL (KEYFOB_TEST_DATABASE_URL): 64 concurrent proxied
requests, spread over the three nodes, arrive while the access token is expired (issue
#18: refresh is single-flight across nodes). Exactly one refresh may happen, every
request must succeed with the new token, and the refresh token the set now holds must
be the rotated one (live, never used).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from keyfob.app.bootstrap import init_vault
from keyfob.settings import Settings
from tests.proxy.factories import proxied
from tests.proxy.test_oauth import oauth_profile
from tests.support import loopback
from tests.support.backends import BACKENDS, reset_postgres
from tests.support.oauth_server import CLIENT_ID, FakeAuthServer
from tests.support.server import ProcessServer, start_server

pytestmark = pytest.mark.slow

NODES = 3


@pytest.fixture(scope="module")
def auth() -> Iterator[FakeAuthServer]:
    fake = FakeAuthServer().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def nodes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ProcessServer]]:
    workdir = tmp_path_factory.mktemp(f"oauth-nodes-{request.param}")
    url = reset_postgres() if request.param == "postgresql" else None
    settings = Settings(data_dir=workdir / "data", database_url=url)
    init = init_vault(settings)
    assert init.operator_token is not None
    token = init.operator_token.reveal()
    with ThreadPoolExecutor(NODES) as pool:
        starting = [
            pool.submit(start_server, settings, token, workdir / f"{n}.log") for n in range(NODES)
        ]
        servers = [f.result() for f in starting]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_64_requests_on_three_nodes_refresh_once_and_store_the_rotated_token(
    nodes: list[ProcessServer], auth: FakeAuthServer
) -> None:
    one, two, _ = nodes
    headers = {"Authorization": f"Bearer {one.operator_token}"}
    with httpx.Client(base_url=one.url, headers=headers, timeout=30) as operator:
        entries = {
            "CLIENT_ID": CLIENT_ID,
            "CLIENT_SECRET": auth.client_secret,
            "REFRESH_TOKEN": auth.new_refresh_token(),
        }
        target = proxied(
            operator,
            oauth_profile(auth),
            entries,
            provider="oauth",
            grant={"actions": ["proxy", "export"]},
        )
    lease = target.lease(max_uses=200)
    urls = [f"{node.url}/proxy/{target.set_path}/things" for node in nodes]

    def call(n: int) -> httpx.Response:
        return loopback.get(
            urls[n % NODES], headers={"Authorization": f"Bearer {lease}"}, timeout=60
        )

    auth.lifetime = 1  # the first token is expired a second from now
    for n in range(NODES):  # every node has the first token in memory
        assert call(n).status_code == 200
    auth.lifetime = 3600
    time.sleep(1.1)  # the nodes run on the real clock
    refreshes = auth.refreshes
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(call, range(64)))
    assert [a.status_code for a in answers] == [200] * 64, [a.text for a in answers][:3]
    assert auth.refreshes == refreshes + 1
    assert auth.reused == []
    assert len({a.json()["token"] for a in answers}) == 1

    exported = loopback.post(
        f"{two.url}/v1/secret-sets/{target.set_path}/export",
        headers={"Authorization": f"Bearer {lease}"},
        timeout=30,
    )
    assert exported.status_code == 200, exported.text
    stored = exported.json()["entries"]["REFRESH_TOKEN"]
    assert stored in auth.refresh_tokens
    assert auth.uses[stored] == 0
