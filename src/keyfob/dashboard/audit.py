"""Dashboard pages: the audit log (filter, page back in time), chain verification, export.

Times in the filter form are ``datetime-local`` values read as UTC. Pages go newest
first, 25 at a time; the "older" link carries the last shown record's ``seq`` as cursor.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.responses import Response

from keyfob.audit import Event
from keyfob.clock import BadTime, isoformat, parse_iso
from keyfob.dashboard.render import page
from keyfob.dashboard.security import checked_form, current_user, vault_of
from keyfob.vault import Principal

router = APIRouter()

PER_PAGE = 25
FIELDS = ("actor", "action", "set", "outcome", "since", "until")
OUTCOMES = ("ok", "denied", "pending")
DETAILS_MAX = 400


class BadFilter(ValueError):
    """A filter value the log cannot be queried with; shown next to the form."""


def utc_moment(value: str, name: str) -> str | None:
    """A ``datetime-local`` value (or RFC 3339 time) as keyfob writes times; naive is UTC."""
    if not value:
        return None
    try:
        return isoformat(parse_iso(value))
    except BadTime as exc:
        raise BadFilter(f"{name} {exc}") from None


def filters_of(request: Request) -> dict[str, str]:
    """The filter form's values as sent (trimmed, capped), for the query and for the form."""
    return {k: request.query_params.get(k, "").strip()[:300] for k in FIELDS}


def query_of(filters: dict[str, str]) -> dict[str, Any]:
    """``vault.audit.query`` arguments for the form's values; ``BadFilter`` if one is wrong."""
    outcome = filters["outcome"]
    if outcome and outcome not in OUTCOMES:
        raise BadFilter(f"outcome must be one of {', '.join(OUTCOMES)}")
    return {
        "actor": filters["actor"] or None,
        "action": filters["action"] or None,
        "target": f"secret_set:{filters['set']}" if filters["set"] else None,
        "outcome": outcome or None,
        "since": utc_moment(filters["since"], "since"),
        "until": utc_moment(filters["until"], "until"),
    }


def cursor_of(request: Request) -> int:
    raw = request.query_params.get("after", "")
    return int(raw) if raw.isdigit() and len(raw) < 19 else 0


def row_of(event: Event) -> dict[str, Any]:
    details = json.dumps(event.details, sort_keys=True, separators=(",", ":"), default=str)
    if len(details) > DETAILS_MAX:
        details = details[: DETAILS_MAX - 1] + "…"
    return {
        "seq": event.seq,
        "ts": event.ts[:19].replace("T", " "),
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "outcome": event.outcome,
        "details": "" if details == "{}" else details,
    }


async def _render(
    request: Request,
    user: Principal,
    *,
    report: dict[str, Any] | None = None,
) -> Response:
    filters = filters_of(request)
    after = cursor_of(request)
    error = None
    rows: list[dict[str, Any]] = []
    older = None
    kept = {k: v for k, v in filters.items() if v}
    newest = "/ui/audit?" + urlencode(kept) if after else None
    try:
        query = query_of(filters)
    except BadFilter as exc:
        error = str(exc)
    else:
        events = await vault_of(request).audit.query(
            **query, after=after, limit=PER_PAGE + 1, newest_first=True
        )
        rows = [row_of(e) for e in events[:PER_PAGE]]
        if len(events) > PER_PAGE:
            older = "/ui/audit?" + urlencode({**kept, "after": rows[-1]["seq"]})
    return page(
        request,
        "audit_log.html",
        user,
        section="audit",
        status_code=400 if error else 200,
        filters=filters,
        outcomes=OUTCOMES,
        error=error,
        rows=rows,
        newest=newest,
        older=older,
        report=report,
    )


@router.get("/audit")
async def audit_page(request: Request) -> Response:
    return await _render(request, await current_user(request))


@router.post("/audit/verify")
async def verify(request: Request) -> Response:
    user = await current_user(request)
    await checked_form(request)
    report = await vault_of(request).audit.verify()
    return await _render(request, user, report=report)


@router.get("/audit/export")
async def export(request: Request) -> Response:
    await current_user(request)
    vault = vault_of(request)

    async def lines() -> AsyncIterator[bytes]:
        async for event in vault.audit.export():
            yield (json.dumps(event.as_dict(), separators=(",", ":")) + "\n").encode()

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={
            "Content-Disposition": 'attachment; filename="keyfob-audit.jsonl"',
            "Cache-Control": "no-store",
        },
    )
