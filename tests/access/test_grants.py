"""Grants: least-privilege defaults, validated constraints, revocation, allowlists, rules."""

from __future__ import annotations

from typing import Any

import httpx

from tests.access.factories import (
    ENTRIES,
    OTHER_SET,
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
from tests.conftest import CANARY
from tests.support.http import assert_problem

PAST = "2020-01-01T00:00:00Z"
# Each of these is wrong in exactly one field; create and update must refuse them all.
BAD_CONSTRAINTS: list[dict[str, Any]] = [
    {"actions": ["delete"]},
    {"actions": []},
    {"actions": ["proxy", "export", "admin"]},
    {"actions": None},
    {"scopes": ["forever"]},
    {"scopes": []},
    {"keys": ["NOT_IN_THE_SET"]},
    {"keys": ["OPENAI_API_KEY", "ALSO_MISSING"]},
    {"keys": []},
    {"methods": ["FETCH"]},
    {"methods": []},
    {"paths": ["v1/no-leading-slash"]},
    {"paths": ["/v1//double"]},
    {"paths": ["/v1/../escape"]},
    {"paths": ["/v1/chat/*\n"]},
    {"paths": ["/v1/with space"]},
    {"paths": []},
    {"expires_at": PAST},
    {"expires_at": "next tuesday"},
    {"expires_at": "9999-12-31T23:59:59-01:00"},  # was a 500: overflowed a datetime
    {"expires_at": "0001-01-01T00:00:00+01:00"},  # was a 500 too
    {"not_before": "1969-12-31T23:59:59Z"},
    {"expires_at": "9999-01-01T00:00:00Z"},
    {"expires_at": "2099-02-30T00:00:00Z"},
    {"not_before": "2099-06-01T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z"},
    {"not_before": "2099-01-01T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z"},
    {"max_lease_ttl": -1},
    {"max_lease_ttl": 0},
    {"max_lease_ttl": 86_401},
    {"max_lease_uses": -3},
    {"max_lease_uses": 0},
    {"rate_limit": -1},
    {"rate_limit": 0},
    {"max_uses": -5},
    {"max_uses": 0},
    {"approval": "maybe"},
    {"colour": "blue"},
]


async def _grants(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    answer = await client.get("/v1/grants", params={"include_revoked": "true"})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def _lease_view(client: httpx.AsyncClient, lease_id: str) -> dict[str, Any]:
    items = (await client.get("/v1/leases", params={"all": "true"})).json()["items"]
    (view,) = [v for v in items if v["id"] == lease_id]
    return view


async def test_defaults_are_least_privilege(
    client: httpx.AsyncClient, agent: dict[str, Any], operator_actor: str
) -> None:
    created = await client.post("/v1/grants", json={"agent": agent["id"], "secret_set": SET})

    assert created.status_code == 201, created.text
    grant = created.json()
    assert {k: grant[k] for k in ("actions", "scopes", "max_lease_ttl", "approval")} == {
        "actions": ["proxy"],
        "scopes": ["request"],
        "max_lease_ttl": 900,
        "approval": "none",
    }
    unlimited = ("keys", "not_before", "expires_at", "max_lease_uses", "rate_limit", "max_uses")
    assert all(grant[k] is None for k in (*unlimited, "methods", "paths", "revoked_at"))
    assert (grant["agent"], grant["agent_id"], grant["secret_set"]) == (
        "billing-bot",
        agent["id"],
        SET,
    )
    assert (grant["uses"], grant["created_by"]) == (0, operator_actor)
    assert (await client.get(f"/v1/grants/{grant['id']}")).json() == grant
    (event,) = await audit(client, "grant.create")
    assert (event["actor"], event["target"]) == (operator_actor, f"grant:{grant['id']}")
    assert event["details"]["actions"] == ["proxy"]
    # The defaults in action: request scope only, and no export.
    refused = await mint(client, agent["token"], SET, scope="workflow")
    assert assert_problem(refused, 403, "forbidden")["reason"] == "scope_not_allowed"
    lease = await make_lease(client, agent["token"], SET)
    assert (lease["scope"], lease["max_uses"], lease["actions"]) == ("request", 1, ["proxy"])


async def test_every_bad_constraint_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    existing = await make_grant(client, agent, SET)
    newcomer = await make_agent(client, "newcomer")
    grants_before = await _grants(client)
    count_before = await audit_count(client)

    for spec in BAD_CONSTRAINTS:
        created = await client.post(
            "/v1/grants", json={"agent": newcomer["name"], "secret_set": SET, **spec}
        )
        updated = await client.patch(f"/v1/grants/{existing['id']}", json=spec)

        for answer in (created, updated):
            body = assert_problem(answer, 422, "validation-failed")
            assert body["errors"], (spec, body)
            assert body["errors"][0]["loc"][-1] in spec, (spec, body)

    assert await _grants(client) == grants_before
    assert await audit_count(client) == count_before


async def test_grant_needs_a_live_agent_and_set(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_secret_set(client, OTHER_SET, {"STRIPE_API_KEY": "sk-other"})
    assert (await client.delete(f"/v1/secret-sets/{OTHER_SET}")).status_code == 200

    for body in (
        {"agent": "nobody", "secret_set": SET},
        {"agent": agent["name"], "secret_set": "nope/prod/none"},
        {"agent": agent["name"], "secret_set": OTHER_SET},
    ):
        assert_problem(await client.post("/v1/grants", json=body), 404, "not-found")
    assert_problem(
        await client.post("/v1/grants", json={"agent": agent["name"], "secret_set": "no-slashes"}),
        422,
        "validation-failed",
    )
    assert await _grants(client) == []


async def test_one_live_grant_per_agent_and_set(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    first = await make_grant(client, agent, SET)

    again = await client.post("/v1/grants", json={"agent": agent["name"], "secret_set": SET})

    assert_problem(again, 409, "conflict")
    assert [g["id"] for g in await _grants(client)] == [first["id"]]
    assert (await client.delete(f"/v1/grants/{first['id']}")).status_code == 200
    replacement = await make_grant(client, agent, SET, actions=["export"])
    assert replacement["id"] != first["id"]
    live = (await client.get("/v1/grants")).json()["items"]
    assert [g["id"] for g in live] == [replacement["id"]]


async def test_patch_changes_constraints_and_is_audited(
    client: httpx.AsyncClient, agent: dict[str, Any], operator_actor: str
) -> None:
    grant = await make_grant(client, agent, SET)
    assert_problem(
        await export(client, (await make_lease(client, agent["token"]))["token"]), 403, "forbidden"
    )

    patched = await client.patch(
        f"/v1/grants/{grant['id']}",
        json={"actions": ["export", "proxy"], "methods": ["get", "post"], "rate_limit": 5},
    )

    assert patched.status_code == 200, patched.text
    view = patched.json()
    assert (view["actions"], view["methods"], view["rate_limit"]) == (
        ["proxy", "export"],
        ["GET", "POST"],
        5,
    )
    assert view["scopes"] == ["request"]  # untouched fields stay
    assert view["updated_at"] > grant["updated_at"]
    assert (await client.get(f"/v1/grants/{grant['id']}")).json() == view
    (event,) = await audit(client, "grant.update")
    assert event["actor"] == operator_actor
    assert event["details"]["changed"] == ["actions", "methods", "rate_limit"]
    assert event["details"]["actions"] == ["proxy", "export"]
    lease = await make_lease(client, agent["token"])
    assert (await export(client, lease["token"])).status_code == 200


async def test_patch_cannot_move_a_grant_or_touch_a_revoked_one(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    grant = await make_grant(client, agent, SET)
    for body in ({"agent": "someone-else"}, {"secret_set": OTHER_SET}):
        answer = await client.patch(f"/v1/grants/{grant['id']}", json=body)
        assert_problem(answer, 422, "validation-failed")
    assert_problem(
        await client.patch("/v1/grants/0000000000000000", json={"rate_limit": 1}), 404, "not-found"
    )
    assert (await client.delete(f"/v1/grants/{grant['id']}")).status_code == 200

    late = await client.patch(f"/v1/grants/{grant['id']}", json={"rate_limit": 1})

    assert_problem(late, 409, "conflict")
    assert_problem(await client.delete(f"/v1/grants/{grant['id']}"), 409, "conflict")
    assert (await client.get(f"/v1/grants/{grant['id']}")).json()["rate_limit"] is None


async def test_narrowing_a_grant_binds_leases_already_out(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    grant = await make_grant(client, agent, SET, actions=["proxy", "export"], scopes=["workflow"])
    lease = await make_lease(client, agent["token"], SET, scope="workflow")
    assert (await export(client, lease["token"])).json()["entries"] == ENTRIES

    await client.patch(f"/v1/grants/{grant['id']}", json={"keys": ["OPENAI_API_KEY"]})
    narrowed = await export(client, lease["token"])
    asked = await export(client, lease["token"], keys=["OPENAI_ORG_ID"])
    await client.patch(f"/v1/grants/{grant['id']}", json={"actions": ["proxy"]})
    stopped = await export(client, lease["token"])

    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["entries"] == {"OPENAI_API_KEY": CANARY}
    assert assert_problem(asked, 403, "forbidden")["reason"] == "key_not_allowed"
    assert assert_problem(stopped, 403, "forbidden")["reason"] == "action_not_allowed"
    assert CANARY not in stopped.text


async def test_revoke_revokes_outstanding_leases_at_once(
    client: httpx.AsyncClient, agent: dict[str, Any], operator_actor: str
) -> None:
    grant = await make_grant(client, agent, SET, actions=["export"], scopes=["request", "workflow"])
    leases = [
        await make_lease(client, agent["token"], SET, scope="workflow"),
        await make_lease(client, agent["token"], SET),
    ]
    spent = await make_lease(client, agent["token"], SET)
    assert (await export(client, spent["token"])).status_code == 200

    revoked = await client.delete(f"/v1/grants/{grant['id']}")

    assert revoked.status_code == 200, revoked.text
    when = revoked.json()["revoked_at"]
    assert when is not None
    for lease in leases:
        view = await _lease_view(client, lease["id"])
        assert (view["status"], view["revoked_at"], view["revoke_reason"]) == (
            "revoked",
            when,
            "grant_revoked",
        )
        body = assert_problem(await export(client, lease["token"]), 403, "forbidden")
        assert body["reason"] == "revoked"
    assert (await _lease_view(client, spent["id"]))["revoked_at"] is None
    (event,) = await audit(client, "grant.revoke")
    assert event["actor"] == operator_actor
    assert event["details"]["leases_revoked"] == 2
    assert (await client.get("/v1/leases")).json()["items"] == []
    refused = await mint(client, agent["token"], SET)
    assert assert_problem(refused, 403, "forbidden")["reason"] == "not_granted"
    mine = await client.get("/v1/me/grants", headers=bearer(agent["token"]))
    assert mine.json()["items"] == []


async def test_deleting_a_set_revokes_its_leases(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, SET, actions=["export"], scopes=["workflow"])
    lease = await make_lease(client, agent["token"], SET, scope="workflow")

    assert (await client.delete(f"/v1/secret-sets/{SET}")).status_code == 200

    body = assert_problem(await export(client, lease["token"]), 403, "forbidden")
    assert body["reason"] == "revoked"
    assert (await _lease_view(client, lease["id"]))["revoke_reason"] == "set_deleted"
    (event,) = await audit(client, "secret_set.delete")
    assert event["details"]["leases_revoked"] == 1
    refused = await mint(client, agent["token"], SET)
    assert assert_problem(refused, 403, "forbidden")["reason"] == "not_granted"
    # A soft delete keeps the grant: once restored, the agent may mint again.
    assert (await client.post(f"/v1/secret-sets/{SET}/restore")).status_code == 200
    fresh = await make_lease(client, agent["token"], SET, scope="workflow")
    assert (await export(client, fresh["token"])).status_code == 200


async def test_purging_a_set_revokes_its_grants(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    grant = await make_grant(client, agent, SET)
    assert (await client.delete(f"/v1/secret-sets/{SET}")).status_code == 200

    assert (await client.post(f"/v1/secret-sets/{SET}/purge")).status_code == 200

    assert (await client.get(f"/v1/grants/{grant['id']}")).json()["revoked_at"] is not None
    assert (await client.get("/v1/grants")).json()["items"] == []
    (event,) = await audit(client, "secret_set.purge")
    assert event["details"]["grants_revoked"] == 1
    # A new set under the old name does not inherit the old grant.
    await make_secret_set(client, SET)
    refused = await mint(client, agent["token"], SET)
    assert assert_problem(refused, 403, "forbidden")["reason"] == "not_granted"


async def test_key_allowlist_limits_export(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(
        client, agent, SET, keys=["OPENAI_API_KEY"], actions=["export"], scopes=["workflow"]
    )
    lease = await make_lease(client, agent["token"], SET, scope="workflow")

    everything = await export(client, lease["token"])
    named = await export(client, lease["token"], keys=["OPENAI_API_KEY"])
    other = await export(client, lease["token"], keys=["OPENAI_ORG_ID"])
    mixed = await export(client, lease["token"], keys=["OPENAI_API_KEY", "OPENAI_ORG_ID"])

    assert everything.status_code == 200, everything.text
    assert everything.json() == {"secret_set": SET, "entries": {"OPENAI_API_KEY": CANARY}}
    assert named.json()["entries"] == {"OPENAI_API_KEY": CANARY}
    for refused in (other, mixed):
        assert assert_problem(refused, 403, "forbidden")["reason"] == "key_not_allowed"
        assert CANARY not in refused.text
    assert lease["keys"] == ["OPENAI_API_KEY"]
    mine = (await client.get("/v1/me/grants", headers=bearer(agent["token"]))).json()["items"]
    assert mine[0]["keys"] == ["OPENAI_API_KEY"]
    assert (await _lease_view(client, lease["id"]))["uses"] == 2


async def test_export_needs_the_export_action(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, SET)
    lease = await make_lease(client, agent["token"], SET)

    refused = await export(client, lease["token"])

    body = assert_problem(refused, 403, "forbidden")
    assert body["reason"] == "action_not_allowed"
    assert CANARY not in refused.text
    (denial,) = await audit(client, "lease.deny")
    assert (denial["actor"], denial["outcome"]) == (f"agent:{agent['id']}", "denied")
    assert denial["details"]["reason"] == "action_not_allowed"
    assert denial["details"]["lease_id"] == lease["id"]
    assert await audit(client, "secret_set.export") == []
    view = await client.get(f"/v1/secret-sets/{SET}")
    assert view.json()["exported_at"] is None
    # The refusal consumed nothing: the single use is still there.
    assert (await _lease_view(client, lease["id"]))["status"] == "active"


async def test_export_is_marked_and_audited_without_values(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, SET, actions=["export"], scopes=["workflow"])
    lease = await make_lease(client, agent["token"], SET, scope="workflow")
    assert (await client.get(f"/v1/secret-sets/{SET}")).json()["exported_at"] is None

    everything = await export(client, lease["token"])
    one = await export(client, lease["token"], keys=["OPENAI_ORG_ID"])

    assert everything.json() == {"secret_set": SET, "entries": ENTRIES}
    assert one.json()["entries"] == {"OPENAI_ORG_ID": ENTRIES["OPENAI_ORG_ID"]}
    exported_at = (await client.get(f"/v1/secret-sets/{SET}")).json()["exported_at"]
    assert exported_at is not None
    events = await audit(client, "secret_set.export")
    assert [e["details"]["keys"] for e in events] == [sorted(ENTRIES), ["OPENAI_ORG_ID"]]
    assert {(e["actor"], e["target"], e["outcome"]) for e in events} == {
        (f"agent:{agent['id']}", f"secret_set:{SET}", "ok")
    }
    assert {e["details"]["lease_id"] for e in events} == {lease["id"]}
    assert events[0]["ts"] < exported_at <= events[-1]["ts"]
    log = await audit_export(client)
    assert CANARY not in log
    assert lease["token"] not in log


async def test_method_and_path_rules_through_check(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    grant = await make_grant(
        client, agent, SET, methods=["GET", "POST"], paths=["/v1/chat/*", "/v1/files/**"]
    )
    lease = await make_lease(client, agent["token"], SET)
    cases = [
        ("POST", "/v1/chat/completions", None),
        ("post", "/v1/chat/completions", None),
        ("POST", "/v1/chat/completions/stream", "path_not_allowed"),
        ("GET", "/v1/files/a", None),
        ("GET", "/v1/files/a/b/c.txt", None),
        ("GET", "/v1/models", "path_not_allowed"),
        ("GET", "/v2/chat/completions", "path_not_allowed"),
        ("GET", "/v1/chatter/x", "path_not_allowed"),
        ("DELETE", "/v1/chat/completions", "method_not_allowed"),
        ("PUT", "/v1/files/a", "method_not_allowed"),
    ]

    for method, path, reason in cases:
        answer = await check(client, lease["token"], method=method, path=path)
        assert answer.status_code == 200, answer.text
        assert (answer.json()["allowed"], answer.json()["reason"]) == (reason is None, reason), (
            method,
            path,
        )

    elsewhere = await check(client, lease["token"], secret_set=OTHER_SET)
    assert elsewhere.json()["reason"] == "not_granted"
    # Checking consumed nothing, on the lease or on the grant.
    view = await _lease_view(client, lease["id"])
    assert (view["uses"], view["status"]) == (0, "active")
    assert (await client.get(f"/v1/grants/{grant['id']}")).json()["uses"] == 0
    assert await audit(client, "lease.use") == []
    assert await audit(client, "lease.deny") == []


async def test_bulk_revoke_by_set_or_agent(
    client: httpx.AsyncClient, agent: dict[str, Any], operator_actor: str
) -> None:
    await make_secret_set(client, OTHER_SET, {"STRIPE_API_KEY": "sk-other"})
    await make_grant(client, agent, SET, scopes=["workflow"])
    await make_grant(client, agent, OTHER_SET, scopes=["workflow"])
    on_set = [await make_lease(client, agent["token"], SET, scope="workflow") for _ in range(2)]
    elsewhere = await make_lease(client, agent["token"], OTHER_SET, scope="workflow")

    by_set = await client.post("/v1/leases/revoke", json={"secret_set": OTHER_SET})
    by_agent = await client.post("/v1/leases/revoke", json={"agent": agent["name"]})
    nothing = await client.post("/v1/leases/revoke", json={})

    assert by_set.json() == {"revoked": 1, "lease_ids": [elsewhere["id"]]}
    assert by_agent.json()["revoked"] == 2
    assert sorted(by_agent.json()["lease_ids"]) == sorted(x["id"] for x in on_set)
    assert_problem(nothing, 422, "validation-failed")
    assert (await client.get("/v1/leases")).json()["items"] == []
    events = await audit(client, "lease.revoke")
    assert [len(e["details"]["lease_ids"]) for e in events] == [1, 2]
    assert {e["actor"] for e in events} == {operator_actor}


async def test_a_time_without_an_offset_is_utc(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    """Before: refused here, read as UTC by the dashboard and as local time by ``/v1/audit``."""
    body = {"agent": agent["id"], "secret_set": SET}
    created = await client.post(
        "/v1/grants", json={**body, "not_before": "2099-01-01T00:00", "expires_at": "2099-01-02"}
    )

    assert created.status_code == 201, created.text
    grant = created.json()
    assert grant["not_before"] == "2099-01-01T00:00:00.000000Z"
    assert grant["expires_at"] == "2099-01-02T00:00:00.000000Z"
