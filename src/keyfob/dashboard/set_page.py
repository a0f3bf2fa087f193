"""One secret set: keys with fingerprints and last use, versions, changes, profile, grants.

Every change posts back here and redirects (post/redirect/get); a refused change shows
this page again with the reason and a 4xx. No form is ever refilled with a value.
The profile form goes through ``vault.sets.update(profile=…)``, the API's one validator;
purging a deleted set needs its path typed back.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyfob.dashboard.agent_snippets import snippets
from keyfob.dashboard.render import PER_PAGE, done, page, pager
from keyfob.dashboard.security import checked_form, context, current_user, vault_of
from keyfob.errors import Conflict, KeyfobError, NotFound, ValidationFailed
from keyfob.text import digits
from keyfob.vault import Principal, Vault

router = APIRouter()

BASE = "/credentials/{provider}/{environment}/{name}"
_USES = ("lease.use", "secret_set.export")
_REFUSED = (ValidationFailed, Conflict, NotFound)
RECENT_USES = 1000  # how far back "last used / by whom" looks: index-backed, bounded


async def _uses(
    vault: Vault, path: str, keys: list[str]
) -> tuple[dict[str, dict[str, str]], list[dict[str, Any]]]:
    """From the set's newest uses (proxy or export) in the audit log: per key its last use,
    and per agent its last use and how many of those uses were its, newest first."""
    events = []
    for action in _USES:  # each one reads the (target, seq) index from its newest end
        events += await vault.audit.query(
            target=f"secret_set:{path}", action=action, newest_first=True, limit=RECENT_USES
        )
    events.sort(key=lambda e: e.seq, reverse=True)
    events = events[:RECENT_USES]
    agents = {e.actor.removeprefix("agent:") for e in events if e.actor.startswith("agent:")}
    names = await vault.agents.names(agents)  # one query; a deleted agent keeps its actor
    by_key: dict[str, dict[str, str]] = {}
    by_agent: dict[str, dict[str, Any]] = {}
    for event in events:
        use = {
            "ts": event.ts,
            "agent": names.get(event.actor.removeprefix("agent:"), event.actor),
            "how": "export" if event.action == "secret_set.export" else "proxy",
        }
        used = event.details.get("keys")
        for key in keys if used is None else used:
            by_key.setdefault(key, use)
        mine = by_agent.setdefault(event.actor, {**use, "actor": event.actor, "count": 0})
        mine["count"] += 1
    return by_key, list(by_agent.values())


def profile_form(profile: dict[str, Any] | None, keys: list[str]) -> dict[str, str]:
    """A profile as the edit form shows it (the inject object as JSON text)."""
    if not profile:
        first = keys[0] if keys else "API_KEY"
        inject: dict[str, Any] = {"kind": "bearer", "key": first}
        return {"base_url": "", "hosts": "", "inject": json.dumps(inject), "scrub": "1"}
    return {
        "preset": profile.get("preset") or "",
        "base_url": profile.get("base_url", ""),
        "hosts": "\n".join(profile.get("hosts", [])),
        "inject": json.dumps(profile.get("inject", {}), indent=1, sort_keys=True),
        "allow_private_upstream": "1" if profile.get("allow_private_upstream") else "",
        "scrub": "" if profile.get("scrub") is False else "1",
    }


def profile_spec(form: dict[str, str]) -> dict[str, Any]:
    """The posted profile form as the API's profile body; the vault validates it."""
    try:
        inject = json.loads(form.get("inject", "") or "null")
    except ValueError:
        raise ValidationFailed(
            'profile.inject: not JSON (an object like {"kind": "bearer", "key": "API_KEY"})'
        ) from None
    spec: dict[str, Any] = {
        "base_url": form.get("base_url", "").strip(),
        "hosts": [
            h.strip() for h in form.get("hosts", "").replace(",", "\n").splitlines() if h.strip()
        ],
        "inject": inject,
        "allow_private_upstream": form.get("allow_private_upstream") == "1",
        "scrub": form.get("scrub") == "1",
    }
    preset = form.get("preset", "").strip()
    if preset:
        spec["preset"] = preset
    return spec


async def _show(
    request: Request,
    user: Principal,
    path: str,
    *,
    error: str | None = None,
    status_code: int = 200,
    profile_values: dict[str, str] | None = None,
) -> Response:
    vault = vault_of(request)
    view = await vault.sets.get(path)
    keys = [k.name for k in view.keys]
    last_use, by_agent = await _uses(vault, path, keys)
    versions = await vault.sets.versions_page(
        path, cursor=request.query_params.get("versions_after") or None, limit=PER_PAGE
    )
    return page(
        request,
        "set_page.html",
        user,
        section="credentials",
        status_code=status_code,
        s=view,
        base=f"/ui/credentials/{quote(path)}",
        versions=versions.items,
        version_links=pager(request, versions.next, "versions_after"),
        last_use=last_use,
        by_agent=by_agent,
        recent_uses=RECENT_USES,
        profile_values=profile_values or profile_form(view.profile, keys),
        profile_open=profile_values is not None,
        grants=await vault.grants.search(secret_set=path),
        snippets=snippets(view, str(request.base_url).rstrip("/")),
        error=error,
    )


@router.get(BASE)
async def show(request: Request, provider: str, environment: str, name: str) -> Response:
    user = await current_user(request)
    return await _show(request, user, f"{provider}/{environment}/{name}")


def _int(form: dict[str, str], field: str, *, optional: bool = False) -> int | None:
    raw = form.get(field, "").strip()
    if not raw and optional:
        return None
    if not digits(raw, 9):
        raise ValidationFailed(f"{field}: a version number")
    return int(raw)


async def _change(request: Request, path: str, verb: str) -> Response:
    """Apply one posted change; on refusal show the set page again with the reason."""
    user = await current_user(request)
    form = await checked_form(request)
    sets = vault_of(request).sets
    ctx = context(request, user)
    code = "updated"
    target = f"/ui/credentials/{quote(path)}"
    try:
        expected = _int(form, "expected", optional=True)
        if verb == "update":
            key = form.get("key", "").strip()[:128]
            if not form.get("value"):
                raise ValidationFailed(f"a new value for {key or 'the key'} is required")
            await sets.update(ctx, path, entries={key: form["value"]}, expected_version=expected)
        elif verb == "remove":
            key = form.get("key", "")[:128]
            await sets.update(ctx, path, entries={key: None}, expected_version=expected)
        elif verb == "rollback":
            version = _int(form, "version")
            assert version is not None
            await sets.rollback(ctx, path, version, expected_version=expected)
            code = "rolled-back"
        elif verb == "profile":
            await sets.update(ctx, path, profile=profile_spec(form), expected_version=expected)
            code = "profile-saved"
        elif verb == "purge":
            if form.get("confirm", "").strip() != path:
                raise ValidationFailed(f"type the set's path, {path}, to purge it")
            await sets.purge(ctx, path)
            return done("/ui/credentials?deleted=1", "purged")
        elif verb == "delete":
            await sets.delete(ctx, path)
            code = "deleted"
        else:
            await sets.restore(ctx, path)
            code = "restored"
    except _REFUSED as exc:
        # A refused profile keeps what was typed (a profile holds key names, never values).
        typed = {k: form.get(k, "")[:4000] for k in _PROFILE_FIELDS} if verb == "profile" else None
        return await _refused(request, user, path, exc, typed)
    return done(target, code)


_PROFILE_FIELDS = ("preset", "base_url", "hosts", "inject", "allow_private_upstream", "scrub")


async def _refused(
    request: Request,
    user: Principal,
    path: str,
    exc: KeyfobError,
    profile_values: dict[str, str] | None = None,
) -> Response:
    try:
        return await _show(
            request,
            user,
            path,
            error=exc.detail,
            status_code=exc.status,
            profile_values=profile_values,
        )
    except NotFound:
        raise exc from None


@router.post(BASE + "/update")
async def update(request: Request, provider: str, environment: str, name: str) -> Response:
    return await _change(request, f"{provider}/{environment}/{name}", "update")


@router.post(BASE + "/remove")
async def remove_key(request: Request, provider: str, environment: str, name: str) -> Response:
    return await _change(request, f"{provider}/{environment}/{name}", "remove")


@router.post(BASE + "/rollback")
async def rollback(request: Request, provider: str, environment: str, name: str) -> Response:
    return await _change(request, f"{provider}/{environment}/{name}", "rollback")


@router.post(BASE + "/delete")
async def delete(request: Request, provider: str, environment: str, name: str) -> Response:
    return await _change(request, f"{provider}/{environment}/{name}", "delete")


@router.post(BASE + "/restore")
async def restore(request: Request, provider: str, environment: str, name: str) -> Response:
    return await _change(request, f"{provider}/{environment}/{name}", "restore")


@router.post(BASE + "/profile")
async def edit_profile(request: Request, provider: str, environment: str, name: str) -> Response:
    return await _change(request, f"{provider}/{environment}/{name}", "profile")


@router.post(BASE + "/purge")
async def purge(request: Request, provider: str, environment: str, name: str) -> Response:
    return await _change(request, f"{provider}/{environment}/{name}", "purge")
