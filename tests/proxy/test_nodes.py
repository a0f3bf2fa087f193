"""Two keyfob processes on one PostgreSQL: revocations, single use and rate limits hold
across them on the proxy path."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from keyfob.app.bootstrap import init_vault
from keyfob.settings import Settings
from tests.conftest import CANARY
from tests.proxy.factories import Proxied, local_profile, proxied, unique
from tests.support.backends import PG_SKIP_REASON, PG_URL, reset_postgres
from tests.support.http import assert_problem
from tests.support.server import start_server
from tests.support.upstream import FakeUpstream

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(PG_URL is None, reason=PG_SKIP_REASON),
]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Operator clients of two keyfob servers on one PostgreSQL database."""
    workdir: Path = tmp_path_factory.mktemp("proxy-nodes")
    settings = Settings(data_dir=workdir / "data", database_url=reset_postgres())
    init = init_vault(settings)
    assert init.operator_token is not None
    token = init.operator_token.reveal()
    env = {"KEYFOB_PROXY_READ_TIMEOUT": "5"}
    with ThreadPoolExecutor(2) as pool:
        starting = [
            pool.submit(start_server, settings, token, workdir / f"{n}.log", env) for n in "12"
        ]
        servers = [f.result() for f in starting]
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with (
            httpx.Client(base_url=servers[0].url, headers=auth, timeout=30) as one,
            httpx.Client(base_url=servers[1].url, headers=auth, timeout=30) as two,
        ):
            yield one, two
    finally:
        for server in servers:
            server.stop()


def call(node: httpx.Client, p: Proxied, lease: str, rest: str) -> httpx.Response:
    return httpx.get(
        f"{node.base_url}".rstrip("/") + f"/proxy/{p.set_path}{rest}",
        headers={"Authorization": f"Bearer {lease}"},
        timeout=30,
    )


def mint(p: Proxied, scope: str = "workflow") -> dict[str, str]:
    answer = httpx.post(
        f"{p.server_url}/v1/leases",
        json={"secret_set": p.set_path, "scope": scope},
        headers={"Authorization": f"Bearer {p.agent_token}"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    return {"id": answer.json()["id"], "token": answer.json()["token"]}


def reason(response: httpx.Response, status: int = 403) -> str:
    slug = "rate-limited" if status == 429 else "forbidden"
    body = assert_problem(response, status, slug)
    assert CANARY not in response.text
    return str(body["reason"])


def test_revocation_on_one_node_stops_the_next_use_on_the_other(
    nodes: tuple[httpx.Client, httpx.Client], upstream: FakeUpstream
) -> None:
    one, two = nodes
    p = proxied(one, local_profile(upstream))
    lease = mint(p)
    marker = unique("revoke")

    used = call(one, p, lease["token"], f"/echo/{marker}")
    used_two = call(two, p, lease["token"], f"/echo/{marker}")
    revoked = one.delete(f"/v1/leases/{lease['id']}")
    refused = call(two, p, lease["token"], f"/echo/{marker}")

    assert used.status_code == used_two.status_code == 200, (used.text, used_two.text)
    assert revoked.status_code == 200, revoked.text
    assert reason(refused) == "revoked"
    assert upstream.count(marker) == 2


def test_single_use_lease_spent_on_one_node_is_spent_on_the_other(
    nodes: tuple[httpx.Client, httpx.Client], upstream: FakeUpstream
) -> None:
    one, two = nodes
    p = proxied(two, local_profile(upstream))
    lease = mint(p, "request")
    marker = unique("single")

    first = call(one, p, lease["token"], f"/echo/{marker}")
    second = call(two, p, lease["token"], f"/echo/{marker}")

    assert first.status_code == 200, first.text
    assert reason(second) == "exhausted"
    assert upstream.count(marker) == 1


def test_grant_rate_limit_is_shared_by_the_nodes(
    nodes: tuple[httpx.Client, httpx.Client], upstream: FakeUpstream
) -> None:
    one, two = nodes
    p = proxied(one, local_profile(upstream), grant={"rate_limit": 3})
    lease = mint(p)
    marker = unique("rate")
    left = 60 - time.time() % 60
    if left < 8:  # the limit is per wall-clock minute: start in a fresh one
        time.sleep(left + 0.2)

    answers = [call((one, two)[i % 2], p, lease["token"], f"/echo/{marker}") for i in range(6)]

    assert sum(a.status_code == 200 for a in answers) == 3, [a.status_code for a in answers]
    assert [reason(a, 429) for a in answers if a.status_code != 200] == ["rate_limited"] * 3
    assert upstream.count(marker) == 3
