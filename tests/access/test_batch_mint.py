"""Batch mint (issue 12): ``count`` leases in one call, each its own row, token and audit
record, under exactly the rules of a single mint, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keyfob import tokens
from keyfob.errors import Unauthorized
from keyfob.vault import Vault
from keyfob.vault.context import Context
from tests.access.factories import (
    SET,
    audit,
    audit_count,
    audit_export,
    bearer,
    make_grant,
    mint,
)
from tests.conftest import CANARY
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
    minted = await audit(client, "lease.mint")
    assert sorted(e["details"]["lease_id"] for e in minted) == sorted(
        lease["id"] for lease in leases
    )
    exported = await audit_export(client)
    assert not any(lease["token"] in exported for lease in leases)
    assert CANARY not in answer.text
    listed = (await client.get("/v1/leases", params={"agent": agent["name"]})).json()["items"]
    assert len(listed) == 5


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
