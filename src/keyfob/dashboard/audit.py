"""Dashboard pages: the audit log (filter, page back in time), chain verification, export.

Times in the filter form are ``datetime-local`` values read as UTC. Pages go newest
first, 25 at a time, by keyset (never OFFSET): "Older" carries the last shown record's
``seq`` (``after``: records below it), "Newer" the first shown one's (``newer``: records
above it). With the (column, seq) indexes a page reads only its own rows, however deep.
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
from keyfob.errors import NotFound
from keyfob.text import digits
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


def cursor_of(request: Request, name: str = "after") -> int:
    raw = request.query_params.get(name, "")
    return int(raw) if digits(raw) else 0


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


async def _actor(request: Request, actor: str | None) -> str | None:
    """A bare name searches as the agent (or else the user) of that name; ``kind:id`` as is."""
    if not actor or ":" in actor:
        return actor
    vault = vault_of(request)
    try:
        return f"agent:{(await vault.agents.get(actor)).id}"
    except NotFound:
        pass
    try:
        return f"user:{(await vault.users.get(actor))['id']}"
    except NotFound:
        return actor


async def _render(
    request: Request,
    user: Principal,
    *,
    report: dict[str, Any] | None = None,
) -> Response:
    filters = filters_of(request)
    after, newer = cursor_of(request), cursor_of(request, "newer")
    error = None
    rows: list[dict[str, Any]] = []
    older = newer_link = None
    kept = {k: v for k, v in filters.items() if v}
    newest = "/ui/audit?" + urlencode(kept) if after or newer else None
    try:
        query = query_of(filters)
    except BadFilter as exc:
        error = str(exc)
    else:
        query["actor"] = await _actor(request, query["actor"])
        audit = vault_of(request).audit
        if newer:
            # The page just above the cursor: read upwards, show newest first.
            events = await audit.query(**query, after=newer, limit=PER_PAGE + 1)
            rows = [row_of(e) for e in reversed(events[:PER_PAGE])]
            more_newer, more_older = len(events) > PER_PAGE, True
        else:
            events = await audit.query(**query, after=after, limit=PER_PAGE + 1, newest_first=True)
            rows = [row_of(e) for e in events[:PER_PAGE]]
            more_newer, more_older = bool(after), len(events) > PER_PAGE
        if rows and more_older:
            older = "/ui/audit?" + urlencode({**kept, "after": rows[-1]["seq"]})
        if rows and more_newer:
            newer_link = "/ui/audit?" + urlencode({**kept, "newer": rows[0]["seq"]})
        if not rows and newer:
            newest = "/ui/audit?" + urlencode(kept)
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
        newer=newer_link,
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
