"""The dry run judges the method and path the proxy would check, normalised by the same
function (``keyfob.paths``), not the text it was sent (issue 10, item 9).

Fails on the commit before the fix (30e7c86^): the dry run matched the raw path, so it
refused ``/v1/chat/%63ompletions`` (which the proxy allows as ``/v1/chat/completions``)
and allowed ``/v1/../admin`` (which the proxy refuses).
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.access.factories import SET, check, make_grant, make_lease
from tests.support.http import assert_problem


async def test_the_dry_run_normalises_like_the_proxy(
    client: httpx.AsyncClient, agent: dict[str, Any]
) -> None:
    await make_grant(client, agent, SET, methods=["POST"], paths=["/v1/chat/completions"])
    lease = (await make_lease(client, agent["token"], SET))["token"]

    encoded = await check(client, lease, method="POST", path="/v1/chat/%63ompletions")
    lower = await check(client, lease, method="post", path="/v1/chat/completions")
    dotted = await check(client, lease, method="POST", path="/v1/chat/../../admin")
    slashed = await check(client, lease, method="POST", path="/v1/chat%2Fcompletions")
    odd = await check(client, lease, method="TRACE", path="/v1/chat/completions")

    assert (encoded.json()["allowed"], encoded.json()["reason"]) == (True, None)
    assert (lower.json()["allowed"], lower.json()["reason"]) == (True, None)
    for refused, field in ((dotted, "path"), (slashed, "path"), (odd, "method")):
        body = assert_problem(refused, 422, "validation-failed")
        assert body["errors"][0]["loc"] == [field]
