"""Out-of-range grant and lease input is a 422 problem naming the field, never a 500.

Regression tests for issue 10 item 13. The bounds come from the grant-constraint spec
(``keyfob.constraints``), so the API, CLI and dashboard refuse the same values.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.access.factories import SET, audit_count, make_grant, mint
from tests.support.http import assert_problem

INT64_PAST = 2**63
HUGE = 10**40

# Each value is outside its field's range; each one is refused on create and on update.
OUT_OF_RANGE: list[tuple[str, Any]] = [
    ("max_lease_ttl", INT64_PAST),
    ("max_lease_ttl", HUGE),
    ("max_lease_uses", INT64_PAST),
    ("rate_limit", INT64_PAST),
    ("max_uses", INT64_PAST),
    ("max_uses", HUGE),
    # Was a 500: converting year 9999 with a negative offset to UTC overflowed.
    ("expires_at", "9999-12-31T23:59:59-14:00"),
    # Was a 500: converting year 1 with a positive offset to UTC overflowed.
    ("not_before", "0001-01-01T00:00:00+14:00"),
    # Was stored (201): a window in year 9999 or before 1970 is not a time anyone meant.
    ("expires_at", "9999-12-31T23:59:59Z"),
    ("not_before", "1969-12-31T23:59:59Z"),
    ("not_before", "0001-01-01T00:00:00Z"),
]


async def _grant_count(client: httpx.AsyncClient) -> int:
    answer = await client.get("/v1/grants", params={"include_revoked": "true"})
    return len(answer.json()["items"])


@pytest.mark.parametrize(("field", "value"), OUT_OF_RANGE)
async def test_create_refuses_out_of_range_constraints(
    client: httpx.AsyncClient, agent: dict[str, Any], field: str, value: Any
) -> None:
    """Fails before the fix for the timestamps: 500 (offsets) or 201 (year 9999, pre-1970)."""
    before = await audit_count(client)
    answer = await client.post(
        "/v1/grants", json={"agent": agent["name"], "secret_set": SET, field: value}
    )
    body = assert_problem(answer, 422, "validation-failed")
    assert body["errors"][0]["loc"][-1] == field
    assert field in body["detail"]
    assert await _grant_count(client) == 0
    assert await audit_count(client) == before


@pytest.mark.parametrize(("field", "value"), OUT_OF_RANGE)
async def test_update_refuses_out_of_range_constraints(
    client: httpx.AsyncClient, agent: dict[str, Any], field: str, value: Any
) -> None:
    """Fails before the fix for the timestamps: 500 (offsets) or 200 (year 9999, pre-1970)."""
    grant = await make_grant(client, agent)
    before = await audit_count(client)
    answer = await client.patch(f"/v1/grants/{grant['id']}", json={field: value})
    body = assert_problem(answer, 422, "validation-failed")
    assert body["errors"][0]["loc"][-1] == field
    assert (await client.get(f"/v1/grants/{grant['id']}")).json() == grant
    assert await audit_count(client) == before


async def test_window_bounds_are_inclusive_of_1970_and_year_9998(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    """The edges of the range are accepted: the bound is not off by one."""
    grant = await make_grant(
        client, agent, not_before="1970-01-01T00:00:00Z", expires_at="9998-12-31T23:59:59Z"
    )
    assert grant["not_before"].startswith("1970-01-01T00:00:00")
    assert grant["expires_at"].startswith("9998-12-31T23:59:59")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # Was a 500: the use cap overflowed the database's integer column.
        ({"scope": "workflow", "max_uses": INT64_PAST}, "max_uses"),
        ({"scope": "workflow", "max_uses": 2**31}, "max_uses"),
        # Was a 201 (capped): a TTL past int64 is refused, not silently cut.
        ({"ttl": INT64_PAST}, "ttl"),
    ],
)
async def test_mint_refuses_out_of_range_numbers(
    client: httpx.AsyncClient, agent: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    """Fails before the fix: 500 for the use caps, 201 for the TTL."""
    await make_grant(client, agent, scopes=["request", "workflow"])
    before = await audit_count(client)
    answer = await mint(client, agent["token"], **body)
    problem = assert_problem(answer, 422, "validation-failed")
    assert problem["errors"][0]["loc"][-1] == field
    assert (await client.get("/v1/leases", params={"all": "true"})).json()["items"] == []
    assert await audit_count(client) == before
