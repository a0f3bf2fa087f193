"""Dashboard pages: grants — list and filter, create, edit (only changed fields), revoke.

The form is parsed into the same spec the API takes; the vault validates it. Times are
entered as UTC (``datetime-local`` has no zone).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyfob.clock import BadTime, isoformat, parse_iso
from keyfob.dashboard.render import done, page
from keyfob.dashboard.security import checked_form, context, current_user, vault_of
from keyfob.errors import KeyfobError, ValidationFailed
from keyfob.vault import Principal
from keyfob.vault.grants import ACTIONS, DEFAULT_MAX_LEASE_TTL, EDITABLE, SCOPES
from keyfob.vault.rules import METHODS

router = APIRouter()

# The order a person reads them in; the vault's METHODS is an unordered set.
METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
NUMBERS = ("max_lease_ttl", "max_lease_uses", "rate_limit", "max_uses")
MOMENTS = ("not_before", "expires_at")
LISTS = ("actions", "scopes", "methods")


def _fail(field: str, msg: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {msg}", errors=[{"loc": [field], "msg": msg}])


def _blank() -> dict[str, Any]:
    """The raw form of a new grant: the vault's defaults."""
    return {
        "agent": "",
        "secret_set": "",
        "keys": [],
        "actions": ["proxy"],
        "scopes": ["request"],
        "methods": [],
        "paths": "",
        "approval": "none",
        **dict.fromkeys(MOMENTS, ""),
        **dict.fromkeys(NUMBERS, ""),
        "max_lease_ttl": str(DEFAULT_MAX_LEASE_TTL),
    }


def raw_from_view(view: dict[str, Any]) -> dict[str, Any]:
    """A grant as the form shows it."""
    raw = {
        "agent": view["agent_id"],
        "secret_set": view["secret_set"],
        "keys": list(view["keys"] or []),
        "actions": list(view["actions"]),
        "scopes": list(view["scopes"]),
        "methods": list(view["methods"] or []),
        "paths": "\n".join(view["paths"] or []),
        "approval": view["approval"],
    }
    for field in MOMENTS:
        raw[field] = (view[field] or "")[:19]
    for field in NUMBERS:
        raw[field] = "" if view[field] is None else str(view[field])
    return raw


async def raw_from_form(request: Request) -> dict[str, Any]:
    """The posted form (after its CSRF check), multi-valued fields as lists."""
    single = await checked_form(request)
    form = await request.form()  # parsed once and cached by Starlette
    picked = [str(k) for k in form.getlist("keys")]
    typed = [k.strip() for k in single.get("keys_text", "").split(",") if k.strip()]
    raw: dict[str, Any] = {
        "agent": single.get("agent", ""),
        "secret_set": single.get("secret_set", ""),
        "keys": list(dict.fromkeys([*picked, *typed])),
        "paths": single.get("paths", ""),
        "approval": single.get("approval", "none"),
    }
    for field in LISTS:
        raw[field] = [str(v) for v in form.getlist(field)]
    for field in (*MOMENTS, *NUMBERS):
        raw[field] = single.get(field, "").strip()
    return raw


def _moment(field: str, text: str) -> str | None:
    if not text:
        return None
    try:
        return isoformat(parse_iso(text))
    except BadTime as exc:
        raise _fail(field, str(exc)) from None


def _number(field: str, text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise _fail(field, "a whole number of at least 1, or empty")
    return int(text)


def spec_from_raw(raw: dict[str, Any]) -> dict[str, Any]:
    """The constraint fields of a grant spec; empty fields mean the default."""
    spec: dict[str, Any] = {
        "keys": raw["keys"] or None,
        "actions": raw["actions"],
        "scopes": raw["scopes"],
        "methods": raw["methods"] or None,
        "paths": [p.strip() for p in raw["paths"].splitlines() if p.strip()] or None,
        "approval": raw["approval"],
    }
    for field in MOMENTS:
        spec[field] = _moment(field, raw[field])
    for field in NUMBERS:
        spec[field] = _number(field, raw[field])
    if spec["max_lease_ttl"] is None:
        spec["max_lease_ttl"] = DEFAULT_MAX_LEASE_TTL
    return spec


def changed(spec: dict[str, Any], view: dict[str, Any]) -> dict[str, Any]:
    """Only the fields that differ from the grant as stored (PATCH semantics)."""
    out = {}
    for field in EDITABLE:
        new, old = spec[field], view[field]
        if field in MOMENTS:
            same = (new or "")[:19] == (old or "")[:19]
        elif field == "keys" or field in LISTS:
            same = sorted(new or []) == sorted(old or [])
        else:
            same = new == old
        if not same:
            out[field] = new
    return out


async def _form_page(
    request: Request,
    user: Principal,
    raw: dict[str, Any],
    *,
    grant: dict[str, Any] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    vault = vault_of(request)
    agents = await vault.agents.list_all()
    sets, _ = await vault.sets.search(limit=500)
    set_keys: list[str] = []
    path = grant["secret_set"] if grant else raw["secret_set"]
    for found in sets:
        if found["path"] == path:
            set_keys = [k["name"] for k in found["keys"]]
    return page(
        request,
        "grants_form.html",
        user,
        section="grants",
        raw=raw,
        grant=grant,
        agents=agents,
        sets=sets,
        set_keys=set_keys,
        other_keys=", ".join(k for k in raw["keys"] if k not in set_keys),
        actions=ACTIONS,
        scopes=SCOPES,
        methods=[m for m in METHOD_ORDER if m in METHODS],
        error=error,
        status_code=status_code,
    )


@router.get("/grants")
async def grants_page(request: Request) -> Response:
    user = await current_user(request)
    vault = vault_of(request)
    agent = request.query_params.get("agent") or None
    secret_set = request.query_params.get("secret_set") or None
    active_only = request.query_params.get("active") == "1"
    grants = await vault.grants.search(
        agent=agent, secret_set=secret_set, include_revoked=not active_only
    )
    sets, _ = await vault.sets.search(limit=500)
    return page(
        request,
        "grants_list.html",
        user,
        section="grants",
        grants=grants,
        agents=await vault.agents.list_all(),
        sets=sets,
        agent=agent or "",
        secret_set=secret_set or "",
        active_only=active_only,
    )


@router.get("/grants/new")
async def new_grant(request: Request) -> Response:
    user = await current_user(request)
    raw = _blank()
    raw["agent"] = request.query_params.get("agent", "")
    raw["secret_set"] = request.query_params.get("secret_set", "")
    return await _form_page(request, user, raw)


@router.post("/grants")
async def create_grant(request: Request) -> Response:
    user = await current_user(request)
    raw = await raw_from_form(request)
    try:
        spec = spec_from_raw(raw)
        made = await vault_of(request).grants.create(
            context(request, user),
            {"agent": raw["agent"], "secret_set": raw["secret_set"], **spec},
        )
    except KeyfobError as exc:
        return await _form_page(request, user, raw, error=exc.detail, status_code=exc.status)
    return done(f"/ui/grants/{made['id']}", "created")


@router.get("/grants/{grant_id}")
async def edit_grant(request: Request, grant_id: str) -> Response:
    user = await current_user(request)
    grant = await vault_of(request).grants.get(grant_id)
    return await _form_page(request, user, raw_from_view(grant), grant=grant)


@router.post("/grants/{grant_id}")
async def update_grant(request: Request, grant_id: str) -> Response:
    user = await current_user(request)
    raw = await raw_from_form(request)
    vault = vault_of(request)
    grant = await vault.grants.get(grant_id)
    try:
        patch = changed(spec_from_raw(raw), grant)
        await vault.grants.update(context(request, user), grant_id, patch)
    except KeyfobError as exc:
        return await _form_page(
            request, user, raw, grant=grant, error=exc.detail, status_code=exc.status
        )
    return done(f"/ui/grants/{grant_id}", "updated")


@router.post("/grants/{grant_id}/revoke")
async def revoke_grant(request: Request, grant_id: str) -> Response:
    user = await current_user(request)
    await checked_form(request)
    await vault_of(request).grants.revoke(context(request, user), grant_id)
    return done(f"/ui/grants/{grant_id}", "revoked")
