"""Operator routes for the audit log: query, verify, export."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from keyfob.api.deps import OperatorDep, VaultDep
from keyfob.clock import BadTime, isoformat, parse_iso
from keyfob.errors import ValidationFailed

router = APIRouter(prefix="/v1/audit", tags=["audit"])


def _moment(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    try:
        return isoformat(parse_iso(value))
    except BadTime as exc:
        raise ValidationFailed(
            f"{name}: {exc}", errors=[{"loc": ["query", name], "msg": str(exc)}]
        ) from None


@router.get("", summary="Query audit events (oldest first; newest first with order=desc)")
async def query(
    ctx: OperatorDep,
    vault: VaultDep,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    outcome: str | None = None,
    since: str | None = None,
    until: str | None = None,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
) -> dict[str, Any]:
    events = await vault.audit.query(
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        since=_moment(since, "since"),
        until=_moment(until, "until"),
        after=after,
        limit=limit,
        newest_first=order == "desc",
    )
    next_cursor = str(events[-1].seq) if len(events) == limit else None
    return {"items": [e.as_dict() for e in events], "next_cursor": next_cursor}


@router.get("/verify", summary="Verify the hash chain and the signed checkpoint")
async def verify(ctx: OperatorDep, vault: VaultDep) -> dict[str, Any]:
    return await vault.audit.verify()


@router.get("/export", summary="Every event as JSON lines, oldest first")
async def export(ctx: OperatorDep, vault: VaultDep) -> StreamingResponse:
    async def lines() -> AsyncIterator[bytes]:
        async for event in vault.audit.export():
            yield (json.dumps(event.as_dict(), separators=(",", ":")) + "\n").encode()

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="keyfob-audit.jsonl"'},
    )
