"""One secret set: keys with fingerprints and last use, versions, changes, profile, grants.

Every change posts back here and redirects (post/redirect/get); a refused change shows
this page again with the reason and a 4xx. No form is ever refilled with a value.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyfob.dashboard.agent_snippets import snippets
from keyfob.dashboard.render import done, page
from keyfob.dashboard.security import checked_form, context, current_user, vault_of
from keyfob.errors import Conflict, KeyfobError, NotFound, ValidationFailed
from keyfob.vault import Principal, Vault

router = APIRouter()

BASE = "/credentials/{provider}/{environment}/{name}"
_USES = ("lease.use", "secret_set.export")
_REFUSED = (ValidationFailed, Conflict, NotFound)


async def _last_uses(vault: Vault, path: str, keys: list[str]) -> dict[str, dict[str, str]]:
    """Per key, its newest use (proxy or export): when and by which agent."""
    names = {a.id: a.name for a in await vault.agents.list_all()}
    events = []
    for action in _USES:
        events += await vault.audit.query(
            target=f"secret_set:{path}", action=action, newest_first=True, limit=200
        )
    events.sort(key=lambda e: e.seq, reverse=True)
    last: dict[str, dict[str, str]] = {}
    for event in events:
        used = event.details.get("keys")
        agent_id = event.actor.removeprefix("agent:")
        for key in keys if used is None else used:
            last.setdefault(
                key,
                {
                    "ts": event.ts,
                    "agent": names.get(agent_id, event.actor),
                    "how": "export" if event.action == "secret_set.export" else "proxy",
                },
            )
    return last


async def _show(
    request: Request,
    user: Principal,
    path: str,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    vault = vault_of(request)
    view = await vault.sets.get(path)
    keys = [k.name for k in view.keys]
    return page(
        request,
        "set_page.html",
        user,
        section="credentials",
        status_code=status_code,
        s=view,
        base=f"/ui/credentials/{quote(path)}",
        versions=list(reversed(await vault.sets.versions(path))),
        last_use=await _last_uses(vault, path, keys),
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
    if not raw.isdigit() or len(raw) > 9:
        raise ValidationFailed(f"{field}: a version number")
    return int(raw)


async def _change(request: Request, path: str, verb: str) -> Response:
    """Apply one posted change; on refusal show the set page again with the reason."""
    user = await current_user(request)
    form = await checked_form(request)
    sets = vault_of(request).sets
    ctx = context(request, user)
    code = "updated"
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
        elif verb == "delete":
            await sets.delete(ctx, path)
            code = "deleted"
        else:
            await sets.restore(ctx, path)
            code = "restored"
    except _REFUSED as exc:
        return await _refused(request, user, path, exc)
    return done(f"/ui/credentials/{quote(path)}", code)


async def _refused(request: Request, user: Principal, path: str, exc: KeyfobError) -> Response:
    try:
        return await _show(request, user, path, error=exc.detail, status_code=exc.status)
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
