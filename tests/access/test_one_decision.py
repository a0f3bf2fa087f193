"""One table of cases through the three ways a lease is used — the proxy (the real route,
in-process, to a fake upstream), export, and the dry run (``POST /v1/leases/check``) —
with the same answers: each path calls the one ``decide``.

Every case builds a fresh set, agent, grant and lease, changes one thing (often the
grant, after the lease was minted: narrowing applies at the next use), asks the dry run
and then uses the lease, for the ``proxy`` action and for ``export``.

On the commit before the one decision path (30e7c86^) nine cases fail: narrowing the
grant's lease TTL, lease use cap or scopes did not reach minted leases (issue 10, item
10), and the dry run disagreed with the proxy about a set without a profile and a grant
whose keys leave out the injected one.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from keyfob.app import create_app
from keyfob.clock import FrozenClock
from keyfob.settings import Settings
from keyfob.vault import Vault
from tests.access.factories import bearer
from tests.conftest import CANARY
from tests.support.upstream import FakeUpstream

_names = itertools.count(1)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture
async def app(sqlite_settings: Settings, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    vault, done = await Vault.initialise(sqlite_settings, clock=clock)
    served = create_app(sqlite_settings, vault=vault)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=served),
            base_url="http://keyfob.test",
            headers=bearer(done.operator_token.reveal()),
        ) as http:
            yield http
    finally:
        await served.aclose()  # the proxy's upstream session
        await vault.close()


@dataclass
class World:
    http: httpx.AsyncClient
    clock: FrozenClock
    set_path: str
    other_path: str
    agent: dict[str, Any]
    grant_id: str
    lease: dict[str, Any]
    action: str

    async def patch_grant(self, **fields: Any) -> None:
        answer = await self.http.patch(f"/v1/grants/{self.grant_id}", json=fields)
        assert answer.status_code == 200, answer.text

    async def use(self, set_path: str | None = None) -> str | None:
        """Use the lease for the world's action; None if allowed, else the refusal reason."""
        path = set_path or self.set_path
        auth = bearer(self.lease["token"])
        if self.action == "export":
            answer = await self.http.post(f"/v1/secret-sets/{path}/export", headers=auth)
        else:
            answer = await self.http.get(f"/proxy/{path}/echo/one", headers=auth)
        if answer.status_code == 200:
            return None
        assert answer.status_code in (403, 429), answer.text
        reason: str = answer.json()["reason"]
        return reason

    async def check(self, set_path: str | None = None) -> str | None:
        # The same method and path for export too: an export has neither, so they must
        # not change the dry run's answer about one.
        body: dict[str, Any] = {
            "action": self.action,
            "secret_set": set_path or self.set_path,
            "method": "GET",
            "path": "/echo/one",
        }
        answer = await self.http.post(
            "/v1/leases/check", json=body, headers=bearer(self.lease["token"])
        )
        assert answer.status_code == 200, answer.text
        verdict = answer.json()
        assert verdict["allowed"] is (verdict["reason"] is None)
        reason: str | None = verdict["reason"]
        return reason


async def world(
    http: httpx.AsyncClient,
    clock: FrozenClock,
    fake: FakeUpstream,
    action: str,
    *,
    profile: bool = True,
    lease: dict[str, Any] | None = None,
) -> World:
    n = next(_names)
    paths = []
    for name in (f"set{n}", f"other{n}"):
        body: dict[str, Any] = {
            "provider": "generic",
            "environment": "test",
            "name": name,
            "entries": {"API_KEY": CANARY, "OTHER_KEY": "sk-other-value"},
        }
        if profile:
            body["profile"] = {
                "base_url": fake.url,
                "hosts": [fake.host],
                "inject": {"kind": "bearer", "key": "API_KEY"},
                "allow_private_upstream": True,
            }
        created = await http.post("/v1/secret-sets", json=body)
        assert created.status_code == 201, created.text
        paths.append(f"generic/test/{name}")
    agent = (await http.post("/v1/agents", json={"name": f"bot{n}"})).json()
    for path in paths:
        granted = await http.post(
            "/v1/grants",
            json={
                "agent": agent["name"],
                "secret_set": path,
                "actions": ["proxy", "export"],
                "scopes": ["request", "workflow"],
            },
        )
        assert granted.status_code == 201, granted.text
        if path == paths[0]:
            grant_id = granted.json()["id"]
    minted = await http.post(
        "/v1/leases",
        json={"secret_set": paths[0], "scope": "workflow", **(lease or {})},
        headers=bearer(agent["token"]),
    )
    assert minted.status_code == 201, minted.text
    return World(http, clock, paths[0], paths[1], agent, grant_id, minted.json(), action)


Change = Callable[[World], Awaitable[None]]


async def nothing(w: World) -> None:
    pass


async def use_once(w: World) -> None:
    assert await w.use() is None


def patch(**fields: Any) -> Change:
    async def change(w: World) -> None:
        await w.patch_grant(**fields)

    return change


def then(*changes: Change) -> Change:
    async def change(w: World) -> None:
        for one in changes:
            await one(w)

    return change


async def revoke_lease(w: World) -> None:
    assert (await w.http.delete(f"/v1/leases/{w.lease['id']}")).status_code == 200


async def revoke_grant(w: World) -> None:
    assert (await w.http.delete(f"/v1/grants/{w.grant_id}")).status_code == 200


async def disable_agent(w: World) -> None:
    answer = await w.http.post(f"/v1/agents/{w.agent['name']}/disable")
    assert answer.status_code == 200


async def rotate_token(w: World) -> None:
    answer = await w.http.post(f"/v1/agents/{w.agent['name']}/rotate-token")
    assert answer.status_code == 200


async def delete_set(w: World) -> None:
    assert (await w.http.delete(f"/v1/secret-sets/{w.set_path}")).status_code == 200


def advance(seconds: float) -> Change:
    async def change(w: World) -> None:
        w.clock.advance(seconds)

    return change


@dataclass(frozen=True)
class Case:
    name: str
    change: Change
    proxy: str | None  # the refusal reason for the proxy action (None: allowed)
    export: str | None  # and for export
    lease: dict[str, Any] | None = None
    profile: bool = True
    elsewhere: bool = False  # use the lease on the other set's route


CASES = [
    Case("allowed", nothing, None, None),
    Case("another set", nothing, "not_granted", "not_granted", elsewhere=True),
    Case("lease revoked", revoke_lease, "revoked", "revoked"),
    Case("grant revoked", revoke_grant, "revoked", "revoked"),
    Case("agent disabled", disable_agent, "revoked", "revoked"),
    Case("set deleted", delete_set, "revoked", "revoked"),
    Case("agent token rotated", rotate_token, "revoked", "revoked"),
    Case("lease expired", advance(900), "expired", "expired"),
    Case("grant TTL lowered", then(patch(max_lease_ttl=60), advance(60)), "expired", "expired"),
    Case("grant ended", patch(expires_at="2026-01-01T00:00:30Z"), None, None),
    Case(
        "grant ended, later",
        then(patch(expires_at="2026-01-01T00:00:30Z"), advance(30)),
        "expired",
        "expired",
    ),
    Case(
        "grant not yet valid",
        patch(not_before="2026-01-02T00:00:00Z"),
        "not_yet_valid",
        "not_yet_valid",
    ),
    Case("lease used up", use_once, "exhausted", "exhausted", lease={"max_uses": 1}),
    Case(
        "grant lease cap lowered",
        then(use_once, patch(max_lease_uses=1)),
        "exhausted",
        "exhausted",
        lease={"max_uses": 5},
    ),
    Case("grant used up", then(use_once, patch(max_uses=1)), "exhausted", "exhausted"),
    Case("scope taken away", patch(scopes=["request"]), "scope_not_allowed", "scope_not_allowed"),
    Case("export taken away", patch(actions=["proxy"]), None, "action_not_allowed"),
    Case("proxy taken away", patch(actions=["export"]), "action_not_allowed", None),
    Case("injected key taken away", patch(keys=["OTHER_KEY"]), "key_not_allowed", None),
    Case("method taken away", patch(methods=["POST"]), "method_not_allowed", None),
    Case("path taken away", patch(paths=["/v1/**"]), "path_not_allowed", None),
    Case("no profile", nothing, "no_profile", None, profile=False),
    Case("rate limited", then(patch(rate_limit=1), use_once), "rate_limited", "rate_limited"),
    Case("rate lowered", then(use_once, patch(rate_limit=1)), "rate_limited", "rate_limited"),
]


@pytest.mark.parametrize("action", ["proxy", "export"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_the_three_paths_answer_alike(
    app: httpx.AsyncClient, clock: FrozenClock, fake: FakeUpstream, case: Case, action: str
) -> None:
    w = await world(app, clock, fake, action, profile=case.profile, lease=case.lease)
    await case.change(w)
    where = w.other_path if case.elsewhere else None
    expected = case.proxy if action == "proxy" else case.export

    dry_run = await w.check(where)
    before = fake.count(f"/{w.lease['id']}")
    used = await w.use(where)

    assert (dry_run, used) == (expected, expected)
    # The dry run consumed nothing: the use it predicted happened as predicted.
    assert fake.count(f"/{w.lease['id']}") == before
