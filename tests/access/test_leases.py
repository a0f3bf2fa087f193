"""Leases under an injected clock: TTLs and their boundaries, use caps, rate limits, approval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from keyfob.app import create_app
from keyfob.clock import FrozenClock, isoformat
from keyfob.settings import Settings
from keyfob.vault import Vault
from tests.access.factories import (
    SET,
    audit,
    audit_count,
    audit_export,
    bearer,
    check,
    export,
    make_agent,
    make_grant,
    make_lease,
    make_secret_set,
    mint,
)
from tests.support.http import assert_problem

EXPORTING = {"actions": ["proxy", "export"]}


@pytest.fixture
async def timed(settings: Settings, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    """The app over a vault whose clock only moves when the test says so (operator client)."""
    vault, done = await Vault.initialise(settings, clock=clock)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, vault=vault)),
            base_url="http://keyfob.test",
            headers=bearer(done.operator_token.reveal()),
        ) as http:
            yield http
    finally:
        await vault.close()


@pytest.fixture
async def bot(timed: httpx.AsyncClient) -> dict[str, Any]:
    """An agent (with ``token``) and a secret set it has no grant on yet."""
    await make_secret_set(timed, SET)
    return await make_agent(timed, "billing-bot")


def at(clock: FrozenClock, seconds: float) -> str:
    """The clock's time plus ``seconds``, as keyfob writes times."""
    return isoformat(clock.now() + timedelta(seconds=seconds))


async def reason_of(answer: httpx.Response, status: int = 403) -> str:
    body = assert_problem(answer, status, "forbidden" if status == 403 else "rate-limited")
    reason: str = body["reason"]
    return reason


async def lease_view(client: httpx.AsyncClient, lease_id: str) -> dict[str, Any]:
    items = (await client.get("/v1/leases", params={"all": "true"})).json()["items"]
    (view,) = [v for v in items if v["id"] == lease_id]
    return view


async def grant_uses(client: httpx.AsyncClient, grant: dict[str, Any]) -> int:
    uses: int = (await client.get(f"/v1/grants/{grant['id']}")).json()["uses"]
    return uses


# -- lifetimes ------------------------------------------------------------------------


async def test_request_lease_lives_sixty_seconds(
    timed: httpx.AsyncClient, bot: dict[str, Any], clock: FrozenClock
) -> None:
    await make_grant(timed, bot, SET, **EXPORTING)
    early = await make_lease(timed, bot["token"])
    late = await make_lease(timed, bot["token"])
    assert (early["ttl"], early["expires_at"]) == (60, at(clock, 60))
    assert (early["scope"], early["max_uses"], early["status"]) == ("request", 1, "active")

    clock.advance(59.999)
    assert (await export(timed, early["token"])).status_code == 200
    clock.advance(0.001)
    refused = await export(timed, late["token"])

    assert await reason_of(refused) == "expired"
    assert (await lease_view(timed, late["id"]))["status"] == "expired"
    assert (await timed.get("/v1/leases")).json()["items"] == []
    (denial,) = await audit(timed, "lease.deny")
    assert (denial["details"]["reason"], denial["details"]["lease_id"]) == ("expired", late["id"])


async def test_workflow_lease_lives_fifteen_minutes(
    timed: httpx.AsyncClient, bot: dict[str, Any], clock: FrozenClock
) -> None:
    await make_grant(timed, bot, SET, scopes=["workflow"])
    lease = await make_lease(timed, bot["token"], scope="workflow")
    assert (lease["ttl"], lease["expires_at"], lease["max_uses"]) == (900, at(clock, 900), None)

    clock.advance(899.999)
    before = (await check(timed, lease["token"])).json()
    clock.advance(0.001)
    after = (await check(timed, lease["token"])).json()

    assert (before["allowed"], before["reason"]) == (True, None)
    assert (after["allowed"], after["reason"]) == (False, "expired")
    assert after["lease"]["status"] == "expired"


async def test_ttl_is_capped_by_the_grant(
    timed: httpx.AsyncClient, bot: dict[str, Any], clock: FrozenClock
) -> None:
    await make_grant(timed, bot, SET, scopes=["request", "workflow"], max_lease_ttl=120)

    long = await make_lease(timed, bot["token"], scope="workflow", ttl=3600)
    default = await make_lease(timed, bot["token"], scope="workflow")
    short = await make_lease(timed, bot["token"], ttl=30)
    request = await make_lease(timed, bot["token"], ttl=600)

    assert [x["ttl"] for x in (long, default, short, request)] == [120, 120, 30, 120]
    assert long["expires_at"] == at(clock, 120)
    clock.advance(120)
    assert (await check(timed, long["token"])).json()["reason"] == "expired"


async def test_ttl_is_capped_by_the_grant_expiry(
    timed: httpx.AsyncClient, bot: dict[str, Any], clock: FrozenClock
) -> None:
    ends = at(clock, 200)
    await make_grant(timed, bot, SET, scopes=["request", "workflow"], expires_at=ends)
    clock.advance(150)

    workflow = await make_lease(timed, bot["token"], scope="workflow")
    request = await make_lease(timed, bot["token"])

    assert (workflow["ttl"], workflow["expires_at"]) == (50, ends)
    assert (request["ttl"], request["expires_at"]) == (50, ends)


async def test_grant_validity_window_boundaries(
    timed: httpx.AsyncClient, bot: dict[str, Any], clock: FrozenClock
) -> None:
    await make_grant(
        timed,
        bot,
        SET,
        scopes=["workflow"],
        not_before=at(clock, 100),
        expires_at=at(clock, 200),
        **EXPORTING,
    )

    clock.advance(99.999)
    assert await reason_of(await mint(timed, bot["token"], scope="workflow")) == "not_yet_valid"
    clock.advance(0.001)
    lease = await make_lease(timed, bot["token"], scope="workflow")
    assert lease["ttl"] == 100
    clock.advance(99.999)
    assert (await export(timed, lease["token"])).status_code == 200
    clock.advance(0.001)
    assert await reason_of(await export(timed, lease["token"])) == "expired"
    assert await reason_of(await mint(timed, bot["token"], scope="workflow")) == "expired"
    reasons = [e["details"]["reason"] for e in await audit(timed, "lease.deny")]
    assert reasons == ["not_yet_valid", "expired", "expired"]


# -- use caps -------------------------------------------------------------------------


async def test_request_lease_is_single_use(timed: httpx.AsyncClient, bot: dict[str, Any]) -> None:
    await make_grant(timed, bot, SET, **EXPORTING)
    lease = await make_lease(timed, bot["token"])

    first = await export(timed, lease["token"])
    second = await export(timed, lease["token"])

    assert first.status_code == 200, first.text
    assert await reason_of(second) == "exhausted"
    view = await lease_view(timed, lease["id"])
    assert (view["uses"], view["status"]) == (1, "exhausted")
    assert len(await audit(timed, "secret_set.export")) == 1
    assert [e["details"]["reason"] for e in await audit(timed, "lease.deny")] == ["exhausted"]


async def test_request_lease_cannot_ask_for_more_uses(
    timed: httpx.AsyncClient, bot: dict[str, Any]
) -> None:
    await make_grant(timed, bot, SET)
    before = await audit_count(timed)

    for uses in (2, 0, -1):
        answer = await mint(timed, bot["token"], max_uses=uses)
        body = assert_problem(answer, 422, "validation-failed")
        assert body["errors"][0]["loc"][-1] == "max_uses"

    assert await audit_count(timed) == before
    assert (await timed.get("/v1/leases", params={"all": "true"})).json()["items"] == []
    assert (await make_lease(timed, bot["token"], max_uses=1))["max_uses"] == 1


async def test_workflow_uses_are_capped_by_the_grant(
    timed: httpx.AsyncClient, bot: dict[str, Any]
) -> None:
    await make_grant(timed, bot, SET, scopes=["workflow"], max_lease_uses=3, **EXPORTING)

    greedy = await make_lease(timed, bot["token"], scope="workflow", max_uses=10)
    modest = await make_lease(timed, bot["token"], scope="workflow", max_uses=2)
    silent = await make_lease(timed, bot["token"], scope="workflow")

    assert [x["max_uses"] for x in (greedy, modest, silent)] == [3, 2, 3]
    answers = [await export(timed, greedy["token"]) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 403]
    assert await reason_of(answers[-1]) == "exhausted"
    assert (await lease_view(timed, greedy["id"]))["status"] == "exhausted"


async def test_grant_max_uses_is_a_lifetime_cap(
    timed: httpx.AsyncClient, bot: dict[str, Any]
) -> None:
    grant = await make_grant(timed, bot, SET, scopes=["workflow"], max_uses=2, **EXPORTING)
    one = await make_lease(timed, bot["token"], scope="workflow")
    two = await make_lease(timed, bot["token"], scope="workflow")

    assert (await export(timed, one["token"])).status_code == 200
    assert (await export(timed, two["token"])).status_code == 200
    used_up = await export(timed, one["token"])
    late_mint = await mint(timed, bot["token"], scope="workflow")

    assert await reason_of(used_up) == "exhausted"
    assert await reason_of(late_mint) == "exhausted"
    assert await grant_uses(timed, grant) == 2
    assert (await lease_view(timed, one["id"]))["uses"] == 1


async def test_rate_limit_refuses_with_retry_after_and_recovers(
    timed: httpx.AsyncClient, bot: dict[str, Any], clock: FrozenClock
) -> None:
    grant = await make_grant(timed, bot, SET, scopes=["workflow"], rate_limit=3, **EXPORTING)
    lease = await make_lease(timed, bot["token"], scope="workflow")
    other = await make_lease(timed, bot["token"], scope="workflow")
    clock.advance(10)

    allowed = [await export(timed, lease["token"]) for _ in range(3)]
    limited = await export(timed, lease["token"])
    limited_other = await export(timed, other["token"])
    checked = (await check(timed, other["token"])).json()

    assert [a.status_code for a in allowed] == [200, 200, 200]
    assert await reason_of(limited, 429) == "rate_limited"
    assert limited.headers["retry-after"] == "50"
    assert await reason_of(limited_other, 429) == "rate_limited"
    assert (checked["allowed"], checked["reason"]) == (False, "rate_limited")
    # The refusals did not cost the leases or the grant a use.
    assert (await lease_view(timed, lease["id"]))["uses"] == 3
    assert (await lease_view(timed, other["id"]))["uses"] == 0
    assert await grant_uses(timed, grant) == 3
    reasons = [e["details"]["reason"] for e in await audit(timed, "lease.deny")]
    assert reasons == ["rate_limited", "rate_limited"]

    clock.advance(49.999)
    assert (await export(timed, other["token"])).status_code == 429
    clock.advance(0.001)
    assert (await export(timed, other["token"])).status_code == 200
    assert (await export(timed, lease["token"])).status_code == 200


# -- approval -------------------------------------------------------------------------


async def _pending(client: httpx.AsyncClient, bot: dict[str, Any]) -> dict[str, Any]:
    answer = await mint(client, bot["token"], scope="workflow")
    assert answer.status_code == 202, answer.text
    view: dict[str, Any] = answer.json()
    return view


async def test_approval_issues_the_lease_on_the_first_poll_only(
    timed: httpx.AsyncClient, bot: dict[str, Any], clock: FrozenClock
) -> None:
    await make_grant(timed, bot, SET, scopes=["workflow"], approval="required", **EXPORTING)
    request = await _pending(timed, bot)
    assert request["status"] == "pending"
    assert request["poll"] == f"/v1/me/lease-requests/{request['id']}"
    assert "token" not in request
    assert "lease" not in request
    assert request["expires_at"] == at(clock, 600)
    waiting = (await timed.get(request["poll"], headers=bearer(bot["token"]))).json()
    assert (waiting["status"], waiting["lease_id"]) == ("pending", None)
    queue = (await timed.get("/v1/lease-requests")).json()["items"]
    assert [r["id"] for r in queue] == [request["id"]]

    approved = await timed.post(f"/v1/lease-requests/{request['id']}/approve")
    first = await timed.get(request["poll"], headers=bearer(bot["token"]))
    second = await timed.get(request["poll"], headers=bearer(bot["token"]))

    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert approved.json()["decided_by"].startswith("operator:")
    issued = first.json()
    assert issued["status"] == "issued"
    assert issued["lease"]["token"].startswith("kfl_")
    assert issued["lease_id"] == issued["lease"]["id"]
    assert (await export(timed, issued["lease"]["token"])).status_code == 200
    assert second.json()["status"] == "issued"
    assert second.json()["lease_id"] == issued["lease_id"]
    assert "kfl_" not in second.text
    assert_problem(await timed.post(f"/v1/lease-requests/{request['id']}/approve"), 409, "conflict")
    (minted,) = await audit(timed, "lease.mint")
    assert minted["details"]["request"] == request["id"]
    assert (await timed.get("/v1/lease-requests")).json()["items"] == []


async def test_denied_request_stays_denied(timed: httpx.AsyncClient, bot: dict[str, Any]) -> None:
    await make_grant(timed, bot, SET, scopes=["workflow"], approval="required")
    request = await _pending(timed, bot)

    denied = await timed.post(f"/v1/lease-requests/{request['id']}/deny")
    polled = await timed.get(request["poll"], headers=bearer(bot["token"]))

    assert denied.status_code == 200, denied.text
    assert polled.json()["status"] == "denied"
    assert "kfl_" not in polled.text
    assert_problem(await timed.post(f"/v1/lease-requests/{request['id']}/approve"), 409, "conflict")
    assert (await timed.get("/v1/leases", params={"all": "true"})).json()["items"] == []
    assert [e["action"] for e in await audit(timed, "lease.")] == ["lease.request", "lease.reject"]


async def test_revoking_the_grant_denies_pending_requests(
    timed: httpx.AsyncClient, bot: dict[str, Any]
) -> None:
    grant = await make_grant(timed, bot, SET, scopes=["workflow"], approval="required")
    request = await _pending(timed, bot)

    revoked = await timed.delete(f"/v1/grants/{grant['id']}")

    assert revoked.status_code == 200
    polled = (await timed.get(request["poll"], headers=bearer(bot["token"]))).json()
    assert polled["status"] == "denied"
    (event,) = await audit(timed, "grant.revoke")
    assert event["details"]["requests_denied"] == 1


async def test_pending_requests_expire_after_ten_minutes(
    timed: httpx.AsyncClient, bot: dict[str, Any], clock: FrozenClock
) -> None:
    await make_grant(timed, bot, SET, scopes=["workflow"], approval="required")
    request = await _pending(timed, bot)

    clock.advance(599.999)
    still = (await timed.get(request["poll"], headers=bearer(bot["token"]))).json()
    clock.advance(0.001)
    expired = (await timed.get(request["poll"], headers=bearer(bot["token"]))).json()
    late = await timed.post(f"/v1/lease-requests/{request['id']}/approve")

    assert still["status"] == "pending"
    assert expired["status"] == "expired"
    assert_problem(late, 409, "conflict")
    assert (await timed.get("/v1/lease-requests")).json()["items"] == []
    assert (await timed.get("/v1/leases", params={"all": "true"})).json()["items"] == []


async def test_long_poll_returns_as_soon_as_the_request_is_approved(
    timed: httpx.AsyncClient, bot: dict[str, Any]
) -> None:
    await make_grant(timed, bot, SET, scopes=["workflow"], approval="required")
    request = await _pending(timed, bot)
    started = time.monotonic()
    waiting = asyncio.create_task(
        timed.get(request["poll"], params={"wait": 20}, headers=bearer(bot["token"]))
    )
    await asyncio.sleep(0.3)
    assert not waiting.done()

    assert (await timed.post(f"/v1/lease-requests/{request['id']}/approve")).status_code == 200
    answer = await asyncio.wait_for(waiting, timeout=10)

    assert answer.json()["status"] == "issued"
    assert answer.json()["lease"]["token"].startswith("kfl_")
    assert time.monotonic() - started < 5


async def test_long_poll_gives_up_after_wait_seconds(
    timed: httpx.AsyncClient, bot: dict[str, Any]
) -> None:
    await make_grant(timed, bot, SET, scopes=["workflow"], approval="required")
    request = await _pending(timed, bot)
    started = time.monotonic()

    answer = await asyncio.wait_for(
        timed.get(request["poll"], params={"wait": 1}, headers=bearer(bot["token"])), timeout=10
    )

    assert answer.json()["status"] == "pending"
    assert 0.9 <= time.monotonic() - started < 5
    assert_problem(
        await timed.get(request["poll"], params={"wait": 31}, headers=bearer(bot["token"])),
        422,
        "validation-failed",
    )


# -- audit ----------------------------------------------------------------------------


async def test_lease_audit_names_lease_ids_never_tokens(
    timed: httpx.AsyncClient, bot: dict[str, Any]
) -> None:
    await make_grant(timed, bot, SET, scopes=["request", "workflow"], **EXPORTING)
    used = await make_lease(timed, bot["token"])
    revoked = await make_lease(timed, bot["token"], scope="workflow")
    assert (await export(timed, used["token"])).status_code == 200
    assert (await export(timed, used["token"])).status_code == 403
    assert (await timed.delete(f"/v1/leases/{revoked['id']}")).status_code == 200
    assert (await export(timed, revoked["token"])).status_code == 403
    assert_problem(await timed.delete(f"/v1/leases/{revoked['id']}"), 409, "conflict")
    patched = await timed.patch(
        f"/v1/grants/{(await timed.get('/v1/grants')).json()['items'][0]['id']}",
        json={"approval": "required"},
    )
    assert patched.status_code == 200
    request = await _pending(timed, bot)
    assert (await timed.post(f"/v1/lease-requests/{request['id']}/approve")).status_code == 200
    approved = (await timed.get(request["poll"], headers=bearer(bot["token"]))).json()["lease"]

    events = {e["action"]: e for e in await audit(timed, "lease.")}
    deny = await audit(timed, "lease.deny")

    assert set(events) >= {"lease.mint", "lease.deny", "lease.revoke", "lease.approve"}
    mints = await audit(timed, "lease.mint")
    assert [e["details"]["lease_id"] for e in mints] == [used["id"], revoked["id"], approved["id"]]
    assert [(e["details"]["lease_id"], e["details"]["reason"]) for e in deny] == [
        (used["id"], "exhausted"),
        (revoked["id"], "revoked"),
    ]
    assert events["lease.revoke"]["details"]["lease_id"] == revoked["id"]
    assert events["lease.approve"]["details"]["request"] == request["id"]
    (exported,) = await audit(timed, "secret_set.export")
    assert exported["details"]["lease_id"] == used["id"]
    log = await audit_export(timed)
    assert "kfl_" not in log
    for token in (used["token"], revoked["token"], approved["token"]):
        assert token[4:] not in log
