"""Token kinds stay in their lane, and agents cannot see or use each other's things."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.access.factories import (
    OTHER_SET,
    SET,
    audit,
    audit_export,
    bearer,
    check,
    export,
    make_agent,
    make_grant,
    make_lease,
    make_secret_set,
    mint,
    without_request_id,
)
from tests.support.http import assert_problem

AGENT_ROUTES = {
    ("POST", "/v1/leases"),
    ("GET", "/v1/me/grants"),
    ("GET", "/v1/me/lease-requests/{request_id}"),
    ("POST", "/v1/me/leases/{lease_id}/renew"),
    ("DELETE", "/v1/me/leases/{lease_id}"),
}
# Open to operators and agents alike: an agent fetches the CA its forward-proxy clients trust.
SHARED_ROUTES = {("GET", "/v1/ca")}
LEASE_ROUTES = {
    ("POST", "/v1/leases/check"),
    ("POST", "/v1/secret-sets/{provider}/{environment}/{name}/export"),
}
# Bodies that an operator could send successfully, so only the token kind stops them.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/agents"): {"name": "sneaky"},
    ("POST", "/v1/tokens"): {"name": "sneaky"},
    ("POST", "/v1/grants"): {"agent": "billing-bot", "secret_set": SET, "actions": ["export"]},
    ("POST", "/v1/leases/revoke"): {"agent": "billing-bot"},
}


def _fill(path: str) -> str:
    """A concrete URL for a route template: dummy values for every path parameter."""
    return re.sub(r"\{(\w+)\}", lambda m: "1" if m.group(1) == "term" else "dummy", path)


async def _routes(client: httpx.AsyncClient) -> set[tuple[str, str]]:
    document = (await client.get("/openapi.json")).json()
    return {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}


async def _operator_routes(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    """Every /v1 route that is neither an agent route nor a lease route, in a stable order."""
    routes = await _routes(client)
    assert AGENT_ROUTES <= routes
    assert LEASE_ROUTES <= routes
    assert SHARED_ROUTES <= routes
    found = sorted(
        r
        for r in routes
        if r[1].startswith("/v1/") and r not in AGENT_ROUTES | LEASE_ROUTES | SHARED_ROUTES
    )
    assert len(found) >= 35, found
    return found


async def _refusals(
    client: httpx.AsyncClient, routes: list[tuple[str, str]], headers: dict[str, str]
) -> list[dict[str, Any]]:
    bodies = []
    for method, path in routes:
        answer = await client.request(
            method, _fill(path), json=BODIES.get((method, path)), headers=headers
        )
        bodies.append(without_request_id(assert_problem(answer, 403, "forbidden")))
    return bodies


async def test_an_agent_token_opens_no_operator_route(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, SET)
    routes = await _operator_routes(client)

    bodies = await _refusals(client, routes, bearer(agent["token"]))

    assert bodies[0]["detail"] == "this route needs an operator token"
    assert all(b == bodies[0] for b in bodies), bodies
    denied = await audit(client, "access.denied")
    assert [e["target"] for e in denied] == [f"route:{_fill(p)}" for _, p in routes]
    assert {(e["actor"], e["outcome"]) for e in denied} == {(f"agent:{agent['id']}", "denied")}
    # Nothing the bodies asked for happened.
    assert [a["name"] for a in (await client.get("/v1/agents")).json()["items"]] == ["billing-bot"]
    assert len((await client.get("/v1/tokens")).json()["items"]) == 1
    (grant,) = (await client.get("/v1/grants")).json()["items"]
    assert grant["actions"] == ["proxy"]


async def test_a_lease_token_opens_no_operator_route(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, SET, scopes=["workflow"])
    lease = await make_lease(client, agent["token"], SET, scope="workflow")
    routes = await _operator_routes(client)

    bodies = await _refusals(client, routes, bearer(lease["token"]))

    assert bodies[0]["detail"] == "this route needs an operator token"
    assert all(b == bodies[0] for b in bodies), bodies
    denied = await audit(client, "access.denied")
    assert len(denied) == len(routes)
    assert lease["token"] not in await audit_export(client)
    (view,) = (await client.get("/v1/leases")).json()["items"]
    assert (view["status"], view["uses"]) == ("active", 0)


async def test_an_operator_token_opens_no_agent_route(
    client: httpx.AsyncClient, operator_actor: str, secret_set: dict[str, Any]
) -> None:
    bodies = []
    for method, path in sorted(AGENT_ROUTES):
        body = {"secret_set": SET} if method == "POST" else None
        answer = await client.request(method, _fill(path), json=body)
        bodies.append(without_request_id(assert_problem(answer, 403, "forbidden")))

    assert bodies[0]["detail"] == "this route needs an agent token"
    assert all(b == bodies[0] for b in bodies), bodies
    denied = await audit(client, "access.denied")
    assert {(e["actor"], e["details"]["needs"]) for e in denied} == {(operator_actor, "an agent")}
    assert len(denied) == len(AGENT_ROUTES)
    assert (await client.get("/v1/leases", params={"all": "true"})).json()["items"] == []


async def test_not_granted_looks_the_same_whatever_the_cause(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_secret_set(client, OTHER_SET, {"STRIPE_API_KEY": "sk-other-canary"})
    await make_secret_set(client, "github/prod/gone", {"GITHUB_TOKEN": "ghp-canary"})
    assert (await client.delete("/v1/secret-sets/github/prod/gone")).status_code == 200
    await make_grant(client, agent, SET, actions=["export"], scopes=["workflow"])
    lease = await make_lease(client, agent["token"], SET, scope="workflow")
    stranger = await make_agent(client, "stranger")
    # The stranger may export the other set: a lease of SET still must not reach it.
    await make_grant(client, stranger, OTHER_SET, actions=["export"])

    answers = [
        await mint(client, agent["token"], OTHER_SET),  # exists, no grant
        await mint(client, agent["token"], "nope/prod/none"),  # does not exist
        await mint(client, agent["token"], "github/prod/gone"),  # soft-deleted
        await mint(client, stranger["token"], SET),  # someone else's grant
        await export(client, lease["token"], OTHER_SET),  # lease of SET, export of another
        await export(client, lease["token"], "nope/prod/none"),
    ]

    bodies = [without_request_id(assert_problem(a, 403, "forbidden")) for a in answers]
    assert bodies[0]["reason"] == "not_granted"
    assert all(b == bodies[0] for b in bodies), bodies
    assert all("sk-other-canary" not in a.text for a in answers)
    denials = await audit(client, "lease.deny")
    assert [e["details"]["reason"] for e in denials] == ["not_granted"] * len(answers)
    # The refused exports consumed nothing: the lease still has all its uses.
    (view,) = (await client.get("/v1/leases")).json()["items"]
    assert view["uses"] == 0
    assert (await export(client, lease["token"], SET)).status_code == 200


async def test_agents_see_only_their_own_grants_and_requests(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_secret_set(client, OTHER_SET, {"STRIPE_API_KEY": "sk-other-canary"})
    await make_grant(client, agent, SET, approval="required")
    other = await make_agent(client, "other-bot")
    await make_grant(client, other, OTHER_SET)
    pending = await mint(client, agent["token"], SET)
    assert pending.status_code == 202, pending.text
    poll = pending.json()["poll"]

    mine = (await client.get("/v1/me/grants", headers=bearer(agent["token"]))).json()
    theirs = (await client.get("/v1/me/grants", headers=bearer(other["token"]))).json()
    snooped = await client.get(poll, headers=bearer(other["token"]))

    assert (mine["agent"], [g["secret_set"] for g in mine["items"]]) == ("billing-bot", [SET])
    assert (theirs["agent"], [g["secret_set"] for g in theirs["items"]]) == (
        "other-bot",
        [OTHER_SET],
    )
    assert_problem(snooped, 404, "not-found")
    assert_problem(
        await client.get("/v1/me/lease-requests/0000000000000000", headers=bearer(agent["token"])),
        404,
        "not-found",
    )
    own = await client.get(poll, headers=bearer(agent["token"]))
    assert own.status_code == 200, own.text
    assert own.json()["status"] == "pending"


async def test_bad_tokens_are_unauthorized_and_audited_without_the_token(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, SET)
    agent_tokens: dict[str, tuple[dict[str, str], str | None]] = {
        "missing": ({}, None),
        "unknown": (bearer("kfa_" + "Z" * 43), "kfa_"),
        "malformed": (bearer("kfa_short-canary-9"), "kfa_"),
        "garbage": (bearer("garbage-canary-9"), None),
    }
    lease_tokens: dict[str, tuple[dict[str, str], str | None]] = {
        "unknown": (bearer("kfl_" + "Y" * 43), "kfl_"),
        "unknown-api-key": ({"x-api-key": "kfl_" + "X" * 43}, "kfl_"),
        "unknown-lease-header": ({"X-Keyfob-Lease": "kfl_" + "W" * 43}, "kfl_"),
        "malformed": (bearer("kfl_short-canary-9"), "kfl_"),
    }

    agent_bodies = []
    for headers, _ in agent_tokens.values():
        answer = await anonymous.post("/v1/leases", json={"secret_set": SET}, headers=headers)
        agent_bodies.append(without_request_id(assert_problem(answer, 401, "unauthorized")))
        assert answer.headers["www-authenticate"].startswith("Bearer")
    lease_bodies = []
    for headers, _ in lease_tokens.values():
        answer = await anonymous.post("/v1/leases/check", json={}, headers=headers)
        lease_bodies.append(without_request_id(assert_problem(answer, 401, "unauthorized")))
        answer = await anonymous.post(f"/v1/secret-sets/{SET}/export", headers=headers)
        lease_bodies.append(without_request_id(assert_problem(answer, 401, "unauthorized")))

    assert all(b == agent_bodies[0] for b in agent_bodies), agent_bodies
    assert all(b == lease_bodies[0] for b in lease_bodies), lease_bodies
    failed = await audit(client, "auth.failed")
    assert [e["details"]["token_kind"] for e in failed] == [
        kind for _, kind in agent_tokens.values()
    ] + [kind for _, kind in lease_tokens.values() for _ in range(2)]
    assert {(e["actor"], e["outcome"]) for e in failed} == {("anonymous", "denied")}
    exported = await audit_export(client)
    for secret in ("Z" * 43, "Y" * 43, "X" * 43, "W" * 43, "short-canary-9", "garbage-canary"):
        assert secret not in exported
    assert (await client.get("/v1/leases", params={"all": "true"})).json()["items"] == []


async def test_a_lease_cannot_mint_and_an_agent_token_cannot_export(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, SET, actions=["export"], scopes=["workflow"])
    lease = await make_lease(client, agent["token"], SET, scope="workflow")

    minted = await mint(client, lease["token"], SET)
    exported = await export(client, agent["token"], SET)
    checked = await check(client, agent["token"], action="export")

    assert minted.status_code in (401, 403), minted.text
    assert exported.status_code in (401, 403), exported.text
    assert checked.status_code in (401, 403), checked.text
    assert "OPENAI" not in exported.text
    assert (await client.get("/v1/leases")).json()["items"][0]["uses"] == 0
