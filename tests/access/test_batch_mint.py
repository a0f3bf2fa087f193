"""Batch mint (issue 12): ``count`` leases in one call, each its own row and token, under
one ``lease.mint`` record and exactly the rules of a single mint, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import httpx
import pytest

from keyfob import tokens
from keyfob.api.leases import batch_json, issued_json, render
from keyfob.errors import Unauthorized
from keyfob.secret import Secret
from keyfob.settings import Settings
from keyfob.vault import Vault
from keyfob.vault.context import Context
from keyfob.vault.leases import IssuedBatch, LeaseView
from tests.access.factories import (
    SET,
    audit,
    audit_count,
    audit_export,
    bearer,
    export,
    make_grant,
    mint,
)
from tests.conftest import CANARY
from tests.proxy.test_fail_closed import drop_trigger, make_audit_unwritable
from tests.support.http import assert_problem


def leases_of(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 201, answer.text
    found: list[dict[str, Any]] = answer.json()["leases"]
    return found


async def test_batch_mint_gives_distinct_single_use_leases(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, scopes=["request"])

    answer = await mint(client, agent["token"], scope="request", count=5)
    leases = leases_of(answer)

    assert len(leases) == 5
    assert len({lease["id"] for lease in leases}) == 5
    assert len({lease["token"] for lease in leases}) == 5
    assert all(tokens.looks_like(lease["token"], tokens.LEASE) for lease in leases)
    assert {(lease["scope"], lease["max_uses"], lease["status"]) for lease in leases} == {
        ("request", 1, "active")
    }
    # One record for the batch, naming every lease in the answer's order.
    (record,) = await audit(client, "lease.mint")
    assert record["details"]["lease_ids"] == [lease["id"] for lease in leases]
    assert record["details"]["count"] == 5
    assert "lease_id" not in record["details"]
    assert record["request_id"] == answer.headers["x-request-id"]
    assert (record["details"]["agent_id"], record["details"]["scope"]) == (agent["id"], "request")
    exported = await audit_export(client)
    assert not any(lease["token"] in exported for lease in leases)
    assert CANARY not in exported
    assert CANARY not in answer.text
    await audit_count(client)  # the chain verifies
    listed = (await client.get("/v1/leases", params={"agent": agent["name"]})).json()["items"]
    assert sorted(v["id"] for v in listed) == sorted(lease["id"] for lease in leases)


async def test_every_token_of_a_batch_works_exactly_once(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, scopes=["request"], actions=["proxy", "export"])
    leases = leases_of(await mint(client, agent["token"], scope="request", count=6))

    first = [await export(client, lease["token"]) for lease in leases]
    again = [await export(client, lease["token"]) for lease in leases]

    assert [a.status_code for a in first] == [200] * 6
    assert [a.status_code for a in again] == [403] * 6
    assert {a.json()["reason"] for a in again} == {"exhausted"}
    listed = (await client.get("/v1/leases", params={"all": "true"})).json()["items"]
    assert {(v["id"], v["uses"], v["status"]) for v in listed} == {
        (lease["id"], 1, "exhausted") for lease in leases
    }
    # Each token is the lease the answer pairs it with.
    used = await audit(client, "secret_set.export")
    assert [e["details"]["lease_id"] for e in used] == [lease["id"] for lease in leases]


async def test_a_batch_whose_record_cannot_be_written_is_not_minted(
    client: httpx.AsyncClient, agent: dict[str, Any], settings: Settings
) -> None:
    """Fail closed: no record, no leases, no tokens; with storage back, a batch mints."""
    await make_grant(client, agent, scopes=["request"])
    await make_audit_unwritable(settings)
    try:
        refused = await mint(client, agent["token"], scope="request", count=4)
    finally:
        await drop_trigger(settings)

    assert_problem(refused, 503, "unavailable")
    assert "kfl_" not in refused.text
    assert (await client.get("/v1/leases", params={"all": "true"})).json()["items"] == []
    assert await audit(client, "lease.mint") == []
    assert len(leases_of(await mint(client, agent["token"], scope="request", count=4))) == 4
    await audit_count(client)


async def test_batches_never_repeat_a_token_or_an_id(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, scopes=["request"])

    leases = [
        lease
        for _ in range(12)
        for lease in leases_of(await mint(client, agent["token"], scope="request", count=100))
    ]

    assert len({lease["token"] for lease in leases}) == 1200
    assert len({lease["id"] for lease in leases}) == 1200
    assert all(tokens.looks_like(lease["token"], tokens.LEASE) for lease in leases)
    records = await audit(client, "lease.mint")
    assert [r["details"]["count"] for r in records] == [100] * 12
    assert [i for r in records for i in r["details"]["lease_ids"]] == [
        lease["id"] for lease in leases
    ]
    assert await audit_count(client) == records[-1]["seq"]


async def test_metrics_count_every_lease_of_a_batch(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, scopes=["request"])

    await mint(client, agent["token"], scope="request", count=7)
    await mint(client, agent["token"], scope="request")

    text = (await client.get("/metrics")).text
    (line,) = [x for x in text.splitlines() if x.startswith("keyfob_lease_mints_total ")]
    assert float(line.split()[1]) == 8


async def test_no_token_or_value_reaches_the_log(
    client: httpx.AsyncClient, agent: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    await make_grant(client, agent, scopes=["request"])
    caplog.set_level(logging.DEBUG)

    leases = leases_of(await mint(client, agent["token"], scope="request", count=20))

    logged = caplog.text + "".join(repr(r.args) + repr(r.__dict__) for r in caplog.records)
    assert not any(lease["token"] in logged for lease in leases)
    assert CANARY not in logged


def _batch(ids: list[str], secrets: list[str], **changes: Any) -> IssuedBatch:
    view = LeaseView(
        ids[0],
        "agent-1",
        "grant-1",
        "openai/prod/d\u00e9j\u00e0",
        "request",
        ["proxy"],
        None,
        1,
        0,
        "active",
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:01:00Z",
        None,
        None,
        [{"unit": "usd", "limit": 1.5, "window": "day"}],
    )
    return IssuedBatch(replace(view, **changes), tuple(ids), Secret(tuple(secrets)), 60)


@pytest.mark.parametrize(
    ("ids", "secrets"),
    [
        ([tokens.new_id() for _ in range(3)], tokens.new_tokens(tokens.LEASE, 3)),
        (["a"], ["kfl_x"]),
        # Never minted, but should one ever need escaping, the answer is still right.
        (["ab", 'c"d'], ["kfl_1", "kfl_2"]),
        (["ab", "cd"], ["kfl_\\", "kfl_\u2028<"]),
        (["\0id\0", "x"], ["\0token\0", "y"]),
    ],
)
@pytest.mark.parametrize(
    "changes",
    # A shared value that is the template's own stand-in for an id or a token.
    [{}, {"secret_set": "\0token\0"}, {"keys": ["\0id\0", "\0token\0"]}],
)
def test_batch_answer_is_the_lease_by_lease_rendering(
    ids: list[str], secrets: list[str], changes: dict[str, Any]
) -> None:
    batch = _batch(ids, secrets, **changes)

    rendered = batch_json(batch)

    assert rendered == render({"leases": [issued_json(lease) for lease in batch.leases()]})
    assert [
        (lease["id"], lease["token"])
        for lease in httpx.Response(200, content=rendered).json()["leases"]
    ] == list(zip(ids, secrets, strict=True))
    assert not any(s in repr(batch) or s in str(batch) for s in secrets if len(s) > 3)


async def test_batch_answer_has_the_single_mint_fields_in_order(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, scopes=["request", "workflow"], max_lease_uses=4)

    single = (await mint(client, agent["token"], scope="workflow", max_uses=2)).json()
    many = leases_of(await mint(client, agent["token"], scope="workflow", max_uses=2, count=3))

    assert [list(lease) for lease in many] == [list(single)] * 3
    shared = {
        k: v for k, v in single.items() if k not in ("id", "token", "created_at", "expires_at")
    }
    assert all({k: lease[k] for k in shared} == shared for lease in many)


@pytest.mark.parametrize("count", [0, 101, -1, "many"])
async def test_batch_count_out_of_range_is_422_and_changes_nothing(
    client: httpx.AsyncClient, agent: dict[str, Any], count: Any
) -> None:
    await make_grant(client, agent, scopes=["request"])
    before = await audit_count(client)

    answer = await mint(client, agent["token"], scope="request", count=count)

    assert_problem(answer, 422, "validation-failed")
    assert await audit_count(client) == before
    assert (await client.get("/v1/leases")).json()["items"] == []


async def test_batch_under_approval_is_refused(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, scopes=["request"], approval="required")

    answer = await mint(client, agent["token"], scope="request", count=3)

    body = assert_problem(answer, 403, "forbidden")
    assert body["reason"] == "approval_required"
    (deny,) = await audit(client, "lease.deny")
    assert deny["details"]["reason"] == "approval_required"
    assert (await client.get("/v1/lease-requests")).json()["items"] == []
    assert (await client.get("/v1/leases")).json()["items"] == []
    # One lease at a time still files a request.
    assert (await mint(client, agent["token"], scope="request")).status_code == 202


async def test_grant_limits_apply_to_each_lease_of_a_batch(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, scopes=["workflow"], max_lease_ttl=30, max_lease_uses=3)

    refused = await mint(client, agent["token"], scope="request", count=2)
    leases = leases_of(
        await mint(client, agent["token"], scope="workflow", ttl=900, max_uses=10, count=4)
    )

    assert assert_problem(refused, 403, "forbidden")["reason"] == "scope_not_allowed"
    assert len(leases) == 4
    assert {(lease["ttl"], lease["max_uses"]) for lease in leases} == {(30, 3)}


async def test_request_batch_must_be_single_use(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, scopes=["request"])

    answer = await mint(client, agent["token"], scope="request", max_uses=2, count=2)

    assert_problem(answer, 422, "validation-failed")


@pytest.mark.parametrize("count", [None, 3])
async def test_mint_rechecks_a_disabled_agent_inside_the_commit(
    client: httpx.AsyncClient, vault: Vault, agent: dict[str, Any], count: int | None
) -> None:
    """The agent authenticated before it was disabled: the grouped mint still refuses."""
    await make_grant(client, agent, scopes=["request"])
    ctx = Context("anonymous", "req-stale", None)
    principal = await vault.agents.authenticate(agent["token"], ctx, "/v1/leases")
    disabled = await client.post(f"/v1/agents/{agent['name']}/disable")
    assert disabled.status_code == 200, disabled.text
    acting = Context(principal.actor, "req-stale", None)

    leases = vault.leases
    minting = (
        leases.mint(principal, acting, secret_set=SET)
        if count is None
        else leases.mint_many(principal, acting, secret_set=SET, count=count)
    )
    with pytest.raises(Unauthorized):
        await minting

    assert (await client.get("/v1/leases", params={"all": "true"})).json()["items"] == []
    failed = [e for e in await audit(client, "auth.failed") if e["request_id"] == "req-stale"]
    assert [e["details"]["reason"] for e in failed] == ["agent_disabled"]
    assert (await client.get("/v1/me/grants", headers=bearer(agent["token"]))).status_code == 401
