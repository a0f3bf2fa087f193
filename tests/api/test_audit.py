"""``/v1/audit``: query with filters and pages, JSONL export, chain verification."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from keyfob.vault import Vault
from tests.api.conftest import SEEDED
from tests.conftest import CANARY
from tests.support.http import assert_problem

URL = f"/v1/secret-sets/{SEEDED}"
RANGE = "1970-01-01T00:00:00Z and 9998-12-31T23:59:59Z"
EVENT_KEYS = {
    "seq",
    "ts",
    "actor",
    "action",
    "target",
    "outcome",
    "request_id",
    "details",
    "prev_hash",
    "hash",
}


async def events(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/v1/audit", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_each_write_is_one_event_carrying_the_request_id(
    client: httpx.AsyncClient, seeded: dict[str, Any], operator_actor: str
) -> None:
    patched = await client.patch(URL, json={"entries": {"OPENAI_API_KEY": CANARY + "2"}})
    deleted = await client.delete(URL)

    family = await events(client, target=f"secret_set:{SEEDED}")

    assert all(set(e) == EVENT_KEYS for e in family)
    assert [e["action"] for e in family] == [
        "secret_set.create",
        "secret_set.update",
        "secret_set.delete",
    ]
    assert {(e["actor"], e["outcome"]) for e in family} == {(operator_actor, "ok")}
    assert family[1]["request_id"] == patched.headers["x-request-id"]
    assert family[2]["request_id"] == deleted.headers["x-request-id"]
    assert family[1]["details"]["keys_set"] == ["OPENAI_API_KEY"]
    assert [e["seq"] for e in family] == sorted(e["seq"] for e in family)
    assert CANARY not in json.dumps(family)


async def test_action_filter_is_exact_unless_it_ends_in_a_dot(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    await client.patch(URL, json={"entries": {"OPENAI_ORG": "o"}})
    await client.post("/v1/keys/rotate")

    family = await events(client, action="secret_set.")
    assert {e["action"] for e in family} == {
        "secret_set.create",
        "secret_set.update",
        "secret_set.delete",
    }
    assert len(family) == 4  # two creates, the seeded delete, one update
    assert [e["action"] for e in await events(client, action="secret_set.update")] == [
        "secret_set.update"
    ]
    assert await events(client, action="secret_set") == []
    assert [e["action"] for e in await events(client, action="keys.")] == ["keys.rotate"]


async def test_actor_target_and_outcome_filters(
    client: httpx.AsyncClient, seeded: dict[str, Any], operator_actor: str
) -> None:
    await client.get("/v1/keys", headers={"Authorization": "Bearer kfo_wrong"})

    denied = await events(client, outcome="denied")
    assert [(e["action"], e["actor"], e["target"]) for e in denied] == [
        ("auth.failed", "anonymous", "route:/v1/keys")
    ]
    assert await events(client, actor="anonymous") == denied
    mine = await events(client, actor=operator_actor)
    assert mine
    assert {e["outcome"] for e in mine} == {"ok"}
    stripe = await events(client, target="secret_set:stripe/prod/billing")
    assert [e["action"] for e in stripe] == ["secret_set.create", "secret_set.delete"]
    assert await events(client, target="secret_set:nothing/here/at-all") == []


async def test_since_and_until_bound_by_timestamp(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    for n in range(4):
        await client.patch(URL, json={"entries": {"OPENAI_ORG": f"org-{n}"}})
    everything = await events(client)
    middle = everything[len(everything) // 2]["ts"]
    last = everything[-1]["ts"]

    since = await events(client, since=middle)
    until = await events(client, until=middle)
    window = await events(client, since=everything[1]["ts"], until=last)

    assert since == [e for e in everything if e["ts"] >= middle]
    assert until == [e for e in everything if e["ts"] < middle]
    assert since
    assert until
    assert window == [e for e in everything if everything[1]["ts"] <= e["ts"] < last]
    assert await events(client, since="2000-01-01T00:00:00Z", until="2000-01-02T00:00:00Z") == []


async def test_pages_follow_next_cursor_without_gaps(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    for n in range(6):
        await client.patch(URL, json={"entries": {"OPENAI_ORG": f"org-{n}"}})
    everything = await events(client)

    collected: list[dict[str, Any]] = []
    after = 0
    for _ in range(20):
        body = (await client.get("/v1/audit", params={"after": after, "limit": 4})).json()
        assert len(body["items"]) <= 4
        collected.extend(body["items"])
        if body["next_cursor"] is None:
            break
        after = int(body["next_cursor"])
    else:
        raise AssertionError("the audit cursor never ends")

    assert collected == everything
    assert [e["seq"] for e in collected] == list(range(1, len(everything) + 1))


async def test_after_skips_what_was_already_seen(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    everything = await events(client)
    assert await events(client, after=2) == everything[2:]
    assert await events(client, after=everything[-1]["seq"]) == []


async def test_a_time_without_an_offset_is_utc_whatever_the_servers_zone(
    client: httpx.AsyncClient, seeded: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: ``since`` without an offset was read in the server's local time."""
    for n in range(3):
        await client.patch(URL, json={"entries": {"OPENAI_ORG": f"org-{n}"}})
    everything = await events(client)
    middle = everything[len(everything) // 2]["ts"]
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    try:
        naive = await events(client, since=middle.removesuffix("Z"))
        minutes = await events(client, until=middle[:16])
    finally:
        monkeypatch.undo()
        time.tzset()

    assert naive == [e for e in everything if e["ts"] >= middle]
    assert naive != everything
    assert minutes == [e for e in everything if e["ts"] < middle[:16] + ":00.000000Z"]


async def test_bad_query_parameters_are_refused(client: httpx.AsyncClient) -> None:
    body = assert_problem(
        await client.get("/v1/audit", params={"since": "yesterday"}), 422, "validation-failed"
    )
    assert body["errors"] == [{"loc": ["query", "since"], "msg": body["errors"][0]["msg"]}]
    assert "such as 2026-12-01T10:00:00Z" in body["detail"]
    for params in (
        {"until": "soon"},
        {"since": "2026-02-30T00:00:00Z"},
        {"limit": 0},
        {"limit": 1001},
        {"after": -1},
        {"after": "x"},
    ):
        assert_problem(await client.get("/v1/audit", params=params), 422, "validation-failed")


@pytest.mark.parametrize(
    "moment",
    [
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+01:00",
        "1969-12-31T23:59:59Z",
        "9999-01-01",
    ],
)
async def test_a_time_out_of_range_is_a_422_not_a_500(
    client: httpx.AsyncClient, moment: str
) -> None:
    """The first two were a 500 (the offset overflowed a datetime)."""
    for name in ("since", "until"):
        body = assert_problem(
            await client.get("/v1/audit", params={name: moment}), 422, "validation-failed"
        )
        assert body["detail"] == f"{name}: must be between {RANGE}"


async def test_export_is_jsonl_matching_the_query(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    await client.patch(URL, json={"entries": {"OPENAI_API_KEY": CANARY + "-2"}})

    response = await client.get("/v1/audit/export")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.text.endswith("\n")
    lines = response.text.splitlines()
    exported = [json.loads(line) for line in lines]
    assert exported == await events(client)
    assert len(exported) >= 5
    assert CANARY not in response.text


async def test_verify_vouches_for_the_whole_chain(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    everything = await events(client)

    report = (await client.get("/v1/audit/verify")).json()

    assert report["ok"] is True
    assert report["first_bad"] is None
    assert report["count"] == len(everything)
    assert report["head"] == everything[-1]["hash"]
    assert report["checkpoint"]["count"] == len(everything)
    assert report["checkpoint"]["head"] == everything[-1]["hash"]
    assert report["public_key"] == (await client.get("/v1/keys")).json()["audit_public_key"]
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(everything))


async def test_verify_reports_an_edited_record(
    client: httpx.AsyncClient, vault: Vault, seeded: dict[str, Any]
) -> None:
    async with vault.db.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_events SET actor = 'someone-else' WHERE seq = 3"))

    report = (await client.get("/v1/audit/verify")).json()

    assert report["ok"] is False
    assert report["first_bad"]["seq"] == 3
    assert "edited" in report["first_bad"]["reason"]
