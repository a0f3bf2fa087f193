"""Agents: a token shown once, disable/enable, rotation and deletion, each audited."""

from __future__ import annotations

from typing import Any

import httpx

from tests.access.factories import (
    SET,
    audit,
    audit_count,
    audit_export,
    bearer,
    export,
    make_agent,
    make_grant,
    make_lease,
    mint,
    without_request_id,
)
from tests.support.http import assert_problem

UNKNOWN_AGENT_TOKEN = "kfa_" + "Q" * 43


async def test_create_shows_the_token_once(client: httpx.AsyncClient, operator_actor: str) -> None:
    created = await client.post("/v1/agents", json={"name": "billing-bot"})

    assert created.status_code == 201, created.text
    view = created.json()
    token = view.pop("token")
    assert token.startswith("kfa_")
    assert len(token) == 47
    assert view["name"] == "billing-bot"
    assert view["status"] == "active"
    assert view["disabled_at"] is None
    assert view["created_by"] == operator_actor
    listing = await client.get("/v1/agents")
    assert listing.json()["items"] == [view]
    assert token not in listing.text
    for ref in (view["id"], "billing-bot"):
        shown = await client.get(f"/v1/agents/{ref}")
        assert shown.status_code == 200, shown.text
        assert shown.json() == view
        assert "token" not in shown.json()


async def test_every_agent_has_its_own_token(client: httpx.AsyncClient) -> None:
    one = await make_agent(client, "one")
    two = await make_agent(client, "two")

    assert one["token"] != two["token"]
    assert one["id"] != two["id"]
    names = [a["name"] for a in (await client.get("/v1/agents")).json()["items"]]
    assert sorted(names) == ["one", "two"]


async def test_unknown_agent_is_not_found(client: httpx.AsyncClient) -> None:
    for method, path in (
        ("GET", "/v1/agents/nobody"),
        ("POST", "/v1/agents/nobody/disable"),
        ("POST", "/v1/agents/nobody/enable"),
        ("POST", "/v1/agents/nobody/rotate-token"),
        ("DELETE", "/v1/agents/nobody"),
    ):
        assert_problem(await client.request(method, path), 404, "not-found")


async def test_duplicate_name_is_a_conflict(client: httpx.AsyncClient) -> None:
    first = await make_agent(client, "billing-bot")
    before = await audit_count(client)

    again = await client.post("/v1/agents", json={"name": "billing-bot"})

    assert_problem(again, 409, "conflict")
    assert "kfa_" not in again.text
    assert (await client.get("/v1/agents")).json()["items"] == [
        {k: v for k, v in first.items() if k != "token"}
    ]
    assert await audit_count(client) == before
    # The first agent's token is untouched by the failed attempt.
    assert (await client.get("/v1/me/grants", headers=bearer(first["token"]))).status_code == 200


BAD_NAMES = ["Billing-Bot", "billing bot", "-bot", "bot/x", "b" * 65, "", "bot\n", "bøt"]


async def test_bad_names_are_refused(client: httpx.AsyncClient) -> None:
    before = await audit_count(client)

    for name in BAD_NAMES:
        answer = await client.post("/v1/agents", json={"name": name})
        body = assert_problem(answer, 422, "validation-failed")
        assert body["errors"][0]["loc"][-1] == "name", (name, body)

    assert (await client.get("/v1/agents")).json()["items"] == []
    assert await audit_count(client) == before


async def test_disable_stops_the_token_and_revokes_leases(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, SET, actions=["proxy", "export"], scopes=["workflow"])
    lease = await make_lease(client, agent["token"], SET, scope="workflow")
    assert (await export(client, lease["token"])).status_code == 200

    disabled = await client.post(f"/v1/agents/{agent['name']}/disable")

    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["status"] == "disabled"
    assert disabled.json()["disabled_at"] is not None
    refused = await client.get("/v1/me/grants", headers=bearer(agent["token"]))
    unknown = await client.get("/v1/me/grants", headers=bearer(UNKNOWN_AGENT_TOKEN))
    assert without_request_id(assert_problem(refused, 401, "unauthorized")) == without_request_id(
        assert_problem(unknown, 401, "unauthorized")
    )
    assert_problem(await mint(client, agent["token"], SET, scope="workflow"), 401, "unauthorized")
    body = assert_problem(await export(client, lease["token"]), 403, "forbidden")
    assert body["reason"] == "revoked"
    (view,) = (await client.get("/v1/leases", params={"all": "true"})).json()["items"]
    assert (view["status"], view["revoke_reason"]) == ("revoked", "agent_disabled")
    (event,) = await audit(client, "agent.disable")
    assert event["details"]["leases_revoked"] == 1
    failures = await audit(client, "auth.failed")
    assert [e["details"]["reason"] for e in failures][:2] == ["agent_disabled", "unknown"]


async def test_disable_twice_changes_nothing_more(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    first = await client.post(f"/v1/agents/{agent['id']}/disable")
    before = await audit_count(client)

    second = await client.post(f"/v1/agents/{agent['id']}/disable")

    assert second.status_code == 200
    assert second.json() == first.json()
    assert await audit_count(client) == before


async def test_enable_restores_the_token_but_not_old_leases(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, SET, actions=["export"])
    old = await make_lease(client, agent["token"], SET)
    assert (await client.post(f"/v1/agents/{agent['id']}/disable")).status_code == 200

    enabled = await client.post(f"/v1/agents/{agent['id']}/enable")

    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["status"] == "active"
    assert enabled.json()["disabled_at"] is None
    fresh = await make_lease(client, agent["token"], SET)
    assert (await export(client, fresh["token"])).status_code == 200
    assert assert_problem(await export(client, old["token"]), 403, "forbidden")["reason"] == (
        "revoked"
    )


async def test_rotate_token_replaces_the_old_one_at_once(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    rotated = await client.post(f"/v1/agents/{agent['name']}/rotate-token")

    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["token"]
    assert new.startswith("kfa_")
    assert new != agent["token"]
    assert rotated.json()["id"] == agent["id"]
    old_answer = await client.get("/v1/me/grants", headers=bearer(agent["token"]))
    assert_problem(old_answer, 401, "unauthorized")
    new_answer = await client.get("/v1/me/grants", headers=bearer(new))
    assert new_answer.status_code == 200, new_answer.text
    assert new_answer.json()["agent"] == "billing-bot"
    assert new not in (await client.get(f"/v1/agents/{agent['id']}")).text


async def test_delete_revokes_grants_and_leases(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    grant = await make_grant(client, agent, SET, actions=["export"], scopes=["workflow"])
    lease = await make_lease(client, agent["token"], SET, scope="workflow")

    deleted = await client.delete(f"/v1/agents/{agent['name']}")

    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted"] is True
    assert deleted.json()["id"] == agent["id"]
    assert_problem(await client.get(f"/v1/agents/{agent['id']}"), 404, "not-found")
    assert (await client.get("/v1/agents")).json()["items"] == []
    assert (await client.get(f"/v1/grants/{grant['id']}")).json()["revoked_at"] is not None
    assert (await client.get("/v1/grants")).json()["items"] == []
    assert_problem(
        await client.get("/v1/me/grants", headers=bearer(agent["token"])), 401, "unauthorized"
    )
    body = assert_problem(await export(client, lease["token"]), 403, "forbidden")
    assert body["reason"] == "revoked"
    (view,) = (await client.get("/v1/leases", params={"all": "true"})).json()["items"]
    assert view["revoke_reason"] == "agent_deleted"
    (event,) = await audit(client, "agent.delete")
    assert (event["details"]["grants_revoked"], event["details"]["leases_revoked"]) == (1, 1)


async def test_a_deleted_name_can_be_reused_without_the_old_grants(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, SET)
    assert (await client.delete(f"/v1/agents/{agent['id']}")).status_code == 200

    again = await make_agent(client, agent["name"])

    assert again["id"] != agent["id"]
    mine = await client.get("/v1/me/grants", headers=bearer(again["token"]))
    assert mine.json()["items"] == []
    body = assert_problem(await mint(client, again["token"], SET), 403, "forbidden")
    assert body["reason"] == "not_granted"


async def test_every_change_is_audited_with_the_operator_as_actor(
    client: httpx.AsyncClient, operator_actor: str
) -> None:
    agent = await make_agent(client, "billing-bot")
    for step in ("disable", "enable", "rotate-token"):
        assert (await client.post(f"/v1/agents/{agent['id']}/{step}")).status_code == 200
    assert (await client.delete(f"/v1/agents/{agent['id']}")).status_code == 200

    events = await audit(client, "agent.")

    assert [e["action"] for e in events] == [
        "agent.create",
        "agent.disable",
        "agent.enable",
        "agent.rotate_token",
        "agent.delete",
    ]
    assert {(e["actor"], e["target"], e["outcome"]) for e in events} == {
        (operator_actor, f"agent:{agent['id']}", "ok")
    }
    assert all(e["details"]["name"] == "billing-bot" for e in events)
    assert "kfa_" not in await audit_export(client)
