"""Dashboard pages: grants — list and filter, create, edit (only changed fields), revoke.

The form is parsed into the same spec the API takes; the vault validates it. Times are
entered as UTC (``datetime-local`` has no zone).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyfob.clock import BadTime, isoformat, parse_iso
from keyfob.constraints import CONSTRAINTS, Constraint
from keyfob.dashboard.render import PER_PAGE, done, page, pager, search_of
from keyfob.dashboard.security import checked_form, context, current_user, vault_of
from keyfob.errors import KeyfobError, NotFound, ValidationFailed
from keyfob.text import digits
from keyfob.vault import Principal
from keyfob.vault.paging import Page
from keyfob.vault.validation import field_error
from keyfob.vault.views import GrantView

router = APIRouter()

LISTS = ("keys", "subset", "methods")


def _raw(c: Constraint, value: Any) -> Any:
    """A constraint's value as its form field holds it."""
    if c.kind in LISTS:
        return list(value or [])
    if c.kind == "patterns":
        return "\n".join(value or [])
    if c.kind == "budgets":
        return "\n".join(f"{b['unit']} {b['limit']} {b['window']}" for b in value or [])
    if c.kind == "moment":
        return (value or "")[:19]
    if c.kind == "count":
        return "" if value is None else str(value)
    return value or ""


def _blank() -> dict[str, Any]:
    """The raw form of a new grant: the vault's defaults."""
    return {"agent": "", "secret_set": "", **{c.name: _raw(c, c.default) for c in CONSTRAINTS}}


def raw_from_view(view: GrantView) -> dict[str, Any]:
    """A grant as the form shows it."""
    raw = {"agent": view.agent_id, "secret_set": view.secret_set}
    return {**raw, **{c.name: _raw(c, getattr(view, c.name)) for c in CONSTRAINTS}}


async def raw_from_form(request: Request) -> dict[str, Any]:
    """The posted form (after its CSRF check), multi-valued fields as lists."""
    single = await checked_form(request)
    form = await request.form()  # parsed once and cached by Starlette
    raw: dict[str, Any] = {
        "agent": single.get("agent", ""),
        "secret_set": single.get("secret_set", ""),
    }
    for c in CONSTRAINTS:
        if c.kind == "keys":
            # Ticked keys of the set, and typed names (keys the set does not have yet).
            picked = [str(k) for k in form.getlist(c.name)]
            typed = [k.strip() for k in single.get("keys_text", "").split(",") if k.strip()]
            raw[c.name] = list(dict.fromkeys([*picked, *typed]))
        elif c.kind in LISTS:
            raw[c.name] = [str(v) for v in form.getlist(c.name)]
        elif c.kind == "choice":
            raw[c.name] = single.get(c.name, c.default)
        elif c.kind in ("patterns", "budgets"):
            raw[c.name] = single.get(c.name, "")
        else:
            raw[c.name] = single.get(c.name, "").strip()
    return raw


def _moment(field: str, text: str) -> str | None:
    if not text:
        return None
    try:
        return isoformat(parse_iso(text))
    except BadTime as exc:
        raise field_error(field, str(exc)) from None


def _number(field: str, text: str) -> int | None:
    if not text:
        return None
    if not digits(text, 64):  # the range check says how large it may be
        raise field_error(field, "a whole number of at least 1, or empty")
    return int(text)


def _budgets(field: str, text: str) -> list[dict[str, Any]] | None:
    """Lines of ``unit limit [window]`` as budgets (the vault checks the values)."""
    out: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.replace(":", " ").split()
        if not parts:
            continue
        if len(parts) not in (2, 3):
            raise field_error(field, f"line {number}: unit limit window, like usd 25 month")
        try:
            limit: float | int = float(parts[1]) if parts[0] == "usd" else int(parts[1])
        except ValueError:
            raise field_error(field, f"line {number}: the limit is not a number") from None
        window = parts[2] if len(parts) > 2 else "total"
        out.append({"unit": parts[0], "limit": limit, "window": window})
    return out or None


def spec_from_raw(raw: dict[str, Any]) -> dict[str, Any]:
    """The constraint fields of a grant spec; empty fields mean the default."""
    spec: dict[str, Any] = {}
    for c in CONSTRAINTS:
        value = raw[c.name]
        if c.kind in ("keys", "methods"):
            spec[c.name] = value or None
        elif c.kind == "patterns":
            spec[c.name] = [p.strip() for p in value.splitlines() if p.strip()] or None
        elif c.kind == "moment":
            spec[c.name] = _moment(c.name, value)
        elif c.kind == "budgets":
            spec[c.name] = _budgets(c.name, value)
        elif c.kind == "count":
            number = _number(c.name, value)
            spec[c.name] = c.default if number is None else number
        else:
            spec[c.name] = value
    return spec


def changed(spec: dict[str, Any], view: GrantView) -> dict[str, Any]:
    """Only the fields that differ from the grant as stored (PATCH semantics)."""
    out = {}
    for c in CONSTRAINTS:
        new, old = spec[c.name], getattr(view, c.name)
        if c.kind == "moment":
            same = (new or "")[:19] == (old or "")[:19]
        elif c.kind in LISTS:
            same = sorted(new or []) == sorted(old or [])
        else:
            same = new == old
        if not same:
            out[c.name] = new
    return out


async def _form_page(
    request: Request,
    user: Principal,
    raw: dict[str, Any],
    *,
    grant: GrantView | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    vault = vault_of(request)
    agents = await vault.agents.list_all()
    sets, _ = await vault.sets.search(limit=500)
    set_keys: list[str] = []
    path = grant.secret_set if grant else raw["secret_set"]
    for found in sets:
        if found.path == path:
            set_keys = [k.name for k in found.keys]
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
        constraints=CONSTRAINTS,
        error=error,
        status_code=status_code,
    )


@router.get("/grants")
async def grants_page(request: Request) -> Response:
    user = await current_user(request)
    vault = vault_of(request)
    agent = search_of(request, "agent") or None
    secret_set = search_of(request, "secret_set") or None
    active_only = request.query_params.get("active") == "1"
    try:
        found = await vault.grants.page(
            agent=agent,
            secret_set=secret_set,
            include_revoked=not active_only,
            cursor=request.query_params.get("after") or None,
            limit=PER_PAGE,
        )
    except NotFound:  # no agent of that name or id: nothing of its to list
        found = Page([], None)
    except ValidationFailed:  # not a set path at all
        found = Page([], None)
    agent_name = agent
    if agent and found.items:
        agent_name = found.items[0].agent or agent
    return page(
        request,
        "grants_list.html",
        user,
        section="grants",
        grants=found.items,
        links=pager(request, found.next),
        agent=agent_name or "",
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
    return done(f"/ui/grants/{made.id}", "created")


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
