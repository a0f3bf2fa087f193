"""Credential pages: the list of secret sets, the service picker and the add form.

Adding a credential is: pick the service, enter the key, save. Secret inputs are
write-only: a refilled form after an error carries names and options, never a value.
The set page (keys, versions, changes) lives in ``set_page`` and is mounted from here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyfob.dashboard import set_page
from keyfob.dashboard.render import PER_PAGE, done, page, pager, search_of
from keyfob.dashboard.security import checked_form, context, current_user, vault_of
from keyfob.errors import Conflict, NotFound, ValidationFailed
from keyfob.profiles import Preset, all_presets, get_preset
from keyfob.vault import Principal

router = APIRouter()
router.include_router(set_page.router)

GENERIC = "generic"
_TEXT_LIMIT = 512


def _preset(name: str) -> Preset:
    try:
        return get_preset(name)
    except ValueError:
        raise NotFound(f"no service called {name[:64]!r}") from None


def _option_defaults(preset: Preset) -> dict[str, str]:
    """Each option's default, read from the preset's own default profile (AWS: region)."""
    inject = preset.defaults({}).get("inject", {})
    return {opt: str(inject.get(opt, "")) for opt in preset.options}


def _default_profile(preset: Preset) -> dict[str, Any]:
    spec = preset.defaults({})
    return {
        "hosts": spec.get("hosts", []),
        "kind": spec.get("inject", {}).get("kind", ""),
        "base_url": spec.get("base_url", ""),
    }


@router.get("/credentials")
async def list_sets(request: Request) -> Response:
    user = await current_user(request)
    provider = request.query_params.get("provider", "")[:64] or None
    deleted = request.query_params.get("deleted") == "1"
    q = search_of(request)
    sets, more = await vault_of(request).sets.search(
        provider=provider,
        include_deleted=deleted,
        prefix=q or None,
        cursor=request.query_params.get("after") or None,
        limit=PER_PAGE,
    )
    providers = sorted({p.name for p in all_presets()} | {s.provider for s in sets})
    return page(
        request,
        "credentials_list.html",
        user,
        section="credentials",
        sets=sets,
        links=pager(request, more),
        q=q,
        providers=providers,
        provider=provider or "",
        deleted=deleted,
    )


@router.get("/credentials/new")
async def picker(request: Request) -> Response:
    user = await current_user(request)
    return page(request, "credentials_new.html", user, section="credentials", presets=all_presets())


def _form(
    request: Request,
    user: Principal,
    preset: Preset,
    values: dict[str, str],
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    return page(
        request,
        "credentials_form.html",
        user,
        section="credentials",
        status_code=status_code,
        preset=preset,
        generic=preset.name == GENERIC,
        values=values,
        profile=_default_profile(preset),
        error=error,
    )


def _initial(preset: Preset) -> dict[str, str]:
    values = {"environment": "prod", "name": "default", **_option_defaults(preset)}
    if preset.name == GENERIC:
        values.update(key_name=preset.fields[0].key, base_url="", host="")
    return values


@router.get("/credentials/new/{preset_name}")
async def new_form(request: Request, preset_name: str) -> Response:
    user = await current_user(request)
    preset = _preset(preset_name)
    return _form(request, user, preset, _initial(preset))


def _public(preset: Preset, form: dict[str, str]) -> dict[str, str]:
    """What the form may be refilled with: everything except secret fields."""
    keep = ["environment", "name", *preset.options]
    if preset.name == GENERIC:
        keep += ["key_name", "base_url", "host"]
    keep += [f"v_{f.key}" for f in preset.fields if not f.secret]
    return {k: form.get(k, "")[:_TEXT_LIMIT].strip() for k in keep}


def _entries(preset: Preset, form: dict[str, str], key_name: str) -> dict[str, str]:
    entries: dict[str, str] = {}
    for field in preset.fields:
        value = form.get(f"v_{field.key}", "")
        if not value.strip():
            if field.required:
                raise ValidationFailed(f"{field.label} is required")
            continue
        key = key_name if preset.name == GENERIC else field.key
        entries[key] = value if field.secret else value.strip()
    return entries


def _profile(preset: Preset, public: dict[str, str], key_name: str) -> dict[str, Any] | None:
    spec: dict[str, Any] = {"preset": preset.name}
    spec.update({opt: public[opt] for opt in preset.options if public.get(opt)})
    if preset.name != GENERIC:
        return spec
    base_url = public.get("base_url", "")
    if not base_url:
        return None  # stored only: no upstream to inject into until one is set
    host = public.get("host") or (urlsplit(base_url).hostname or "")
    return {
        **spec,
        "base_url": base_url,
        "hosts": [host],
        "inject": {"kind": "bearer", "key": key_name},
    }


@router.post("/credentials/new/{preset_name}")
async def create(request: Request, preset_name: str) -> Response:
    user = await current_user(request)
    form = await checked_form(request)
    preset = _preset(preset_name)
    public = _public(preset, form)
    key_name = public.get("key_name") or preset.fields[0].key
    try:
        view = await vault_of(request).sets.create(
            context(request, user),
            provider=preset.name,
            environment=public["environment"],
            name=public["name"],
            entries=_entries(preset, form, key_name),
            profile=_profile(preset, public, key_name),
        )
    except (ValidationFailed, Conflict, NotFound) as exc:
        return _form(request, user, preset, public, error=exc.detail, status_code=exc.status)
    return done(f"/ui/credentials/{quote(view.path)}", "created")
