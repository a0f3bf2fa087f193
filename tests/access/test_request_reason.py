"""A lease request under approval keeps the agent's reason, for the person who decides."""

from __future__ import annotations

import httpx

from tests.access.factories import audit, make_agent, make_grant, make_secret_set, mint
from tests.support.http import assert_problem


async def test_the_reason_travels_with_the_request(client: httpx.AsyncClient) -> None:
    await make_secret_set(client)
    agent = await make_agent(client)
    await make_grant(client, agent, approval="required")
    filed = await mint(client, agent["token"], reason="summarise\nthis week's\x1b[31m invoices  ")
    assert filed.status_code == 202, filed.text
    # One printable line: a reason cannot forge rows or colours on the approver's screen.
    assert filed.json()["reason"] == "summarise this week's [31m invoices"
    (pending,) = (await client.get("/v1/lease-requests")).json()["items"]
    assert pending["reason"] == "summarise this week's [31m invoices"
    (record,) = await audit(client, "lease.request")
    assert record["details"]["reason"] == "summarise this week's [31m invoices"

    plain = await mint(client, agent["token"])
    assert plain.json()["reason"] is None


async def test_a_reason_is_bounded_and_changes_nothing_when_refused(
    client: httpx.AsyncClient,
) -> None:
    await make_secret_set(client)
    agent = await make_agent(client)
    await make_grant(client, agent, approval="required")
    too_long = await mint(client, agent["token"], reason="x" * 501)
    assert_problem(too_long, 422, "validation-failed")
    assert (await client.get("/v1/lease-requests")).json()["items"] == []
