"""Connect an OAuth provider: authorization code with PKCE and ``state``, then store the set.

Only a signed-in operator can start (a CSRF-checked POST). The flow (state, PKCE
verifier, client secret, where the set goes) is kept sealed in the database for ten
minutes (``vault.connect_flows``), so the provider's callback may land on any node. It
is bound to the starting browser by a ``SameSite=Lax`` cookie (the session cookie is
``Strict`` and does not come back on the provider's redirect). The callback accepts
only a ``state`` keyfob handed out, once, from that browser; it exchanges the code
through the proxy's egress guard and stores the refresh token as a new set.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyfob.dashboard.render import page
from keyfob.dashboard.security import checked_form, context, current_user, secure, vault_of
from keyfob.errors import Conflict, CredentialRefreshFailed, NotFound, ValidationFailed
from keyfob.profiles import Preset, get_preset, resolve
from keyfob.secret import Secret
from keyfob.vault import Context, Principal
from keyfob.vault import token_grants as grants
from keyfob.vault.connect_flows import FLOW_SECONDS, Flow, new_verifier
from keyfob.vault.validation import check_profile, path_parts

router = APIRouter()

PROVIDERS = ("google", "microsoft_graph", "slack_oauth", "github_oauth", "oauth")
GENERIC = "oauth"
COOKIE = "keyfob_oauth"
CALLBACK = "/ui/connect/callback"
KEYS = {"CLIENT_ID", "CLIENT_SECRET", "REFRESH_TOKEN"}


async def _still_operator(request: Request, actor: str) -> bool:
    """The flow's starter is still a live dashboard user."""
    kind, _, user_id = actor.partition(":")
    if kind != "user":
        return False
    try:
        user = await vault_of(request).users.get(user_id)
    except NotFound:
        return False
    return user["disabled_at"] is None


def _as(request: Request, actor: str) -> Context:
    """The callback acts for the operator who started the flow (it has no session)."""
    own = context(request)
    return Context(actor=actor, request_id=own.request_id, client=own.client)


def _connectable() -> list[Preset]:
    return [get_preset(name) for name in PROVIDERS]


@router.get("/connect")
async def providers(request: Request) -> Response:
    user = await current_user(request)
    return page(request, "connect.html", user, section="credentials", presets=_connectable())


@router.get("/connect/callback")
async def callback(request: Request) -> Response:
    state = request.query_params.get("state", "")
    flow = await vault_of(request).connect_flows.take(state, request.cookies.get(COOKIE, ""))
    if flow is None:
        return page(
            request,
            "error.html",
            None,
            status_code=400,
            message="This sign-in is not one keyfob started (unknown, expired or used state).",
        )
    if not await _still_operator(request, flow.actor):
        # Fail closed: whoever started it was disabled or deleted since.
        return page(
            request,
            "error.html",
            None,
            status_code=403,
            message="The user who started this connection can no longer act; start again.",
        )
    if request.query_params.get("error") or not request.query_params.get("code"):
        return page(
            request, "error.html", None, status_code=400, message="The provider did not connect."
        )
    fetch = request.app.state.parent.state.proxy.fetch_token
    profile = resolve(flow.profile)
    call = grants.code_call(
        profile.inject.token_urls()[0],  # type: ignore[union-attr]
        client_id=flow.client_id,
        client_secret=flow.client_secret.reveal(),
        code=request.query_params["code"],
        verifier=flow.verifier.reveal(),
        redirect_uri=flow.redirect_uri,
        allow_private=profile.allow_private_upstream,
    )
    try:
        refresh = grants.refresh_token_of(await fetch(call))
        view = await vault_of(request).sets.create(
            _as(request, flow.actor),
            provider=flow.preset,
            environment=flow.environment,
            name=flow.name,
            entries={
                "CLIENT_ID": flow.client_id,
                "CLIENT_SECRET": flow.client_secret.reveal(),
                "REFRESH_TOKEN": refresh.reveal(),
            },
            profile=flow.profile,
        )
    except (CredentialRefreshFailed, ValidationFailed, Conflict) as exc:
        return page(request, "error.html", None, status_code=exc.status, message=exc.detail)
    response = page(
        request,
        "connect_done.html",
        None,
        path=view.path,
        link=f"/ui/credentials/{quote(view.path)}",
    )
    response.delete_cookie(COOKIE, path=CALLBACK)
    return response


def _form(
    request: Request, user: Principal, preset: Preset, values: dict[str, str], **extra: Any
) -> Response:
    return page(
        request,
        "connect_form.html",
        user,
        section="credentials",
        preset=preset,
        generic=preset.name == GENERIC,
        values=values,
        callback=_redirect_uri(request),
        **extra,
    )


@router.get("/connect/{preset_name}")
async def form(request: Request, preset_name: str) -> Response:
    user = await current_user(request)
    preset = _preset(preset_name)
    return _form(request, user, preset, {"environment": "prod", "name": "default"})


def _preset(name: str) -> Preset:
    if name not in PROVIDERS:
        raise ValidationFailed(f"no OAuth provider called {name[:64]!r}")
    return get_preset(name)


def _redirect_uri(request: Request) -> str:
    parts = urlsplit(str(request.url))
    return f"{parts.scheme}://{parts.netloc}{CALLBACK}"


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@router.post("/connect/{preset_name}")
async def start(request: Request, preset_name: str) -> Response:
    user = await current_user(request)
    posted = await checked_form(request)
    preset = _preset(preset_name)
    keep = ("environment", "name", "client_id", "scopes", "authorize_url", "token_url", "base_url")
    public = {k: posted.get(k, "")[:512].strip() for k in keep}
    public["allow_private"] = "1" if posted.get("allow_private") else ""
    try:
        path_parts(preset.name, public["environment"], public["name"])
        if not public["client_id"] or not posted.get("client_secret"):
            raise ValidationFailed("client id and client secret are required")
        spec: dict[str, Any] = {"preset": preset.name}
        if public["scopes"]:
            spec["scopes"] = public["scopes"]
        authorize = str(preset.extra.get("authorize_url", ""))
        if preset.name == GENERIC:
            authorize = public["authorize_url"]
            base = public["base_url"]
            spec.update(
                token_url=public["token_url"],
                base_url=base,
                hosts=[urlsplit(base).hostname or ""],
                allow_private_upstream=bool(public["allow_private"]),
            )
            if not authorize.startswith(("https://", "http://")):
                raise ValidationFailed("authorize_url must be an absolute URL")
        profile = check_profile(spec, KEYS)
    except ValidationFailed as exc:
        return _form(request, user, preset, public, error=exc.detail, status=exc.status)
    verifier = new_verifier()
    started = await vault_of(request).connect_flows.start(
        Flow(
            actor=user.actor,
            preset=preset.name,
            environment=public["environment"],
            name=public["name"],
            profile={**spec, "scopes": profile["inject"].get("scopes", [])},
            client_id=public["client_id"],
            client_secret=Secret(posted["client_secret"]),
            verifier=verifier,
            redirect_uri=_redirect_uri(request),
        )
    )
    query = {
        "response_type": "code",
        "client_id": public["client_id"],
        "redirect_uri": _redirect_uri(request),
        "state": started.state,
        "code_challenge": _challenge(verifier.reveal()),
        "code_challenge_method": "S256",
        **dict(preset.extra.get("authorize_params", {})),
    }
    scopes = profile["inject"].get("scopes") or []
    if scopes:
        query["scope"] = " ".join(scopes)
    joiner = "&" if "?" in authorize else "?"
    # A link, not a redirect: the dashboard's CSP (form-action 'self') stops a form post
    # that redirects to another origin.
    response = page(
        request,
        "connect_go.html",
        user,
        section="credentials",
        preset=preset,
        authorize=authorize + joiner + urlencode(query),
    )
    response.set_cookie(
        COOKIE,
        started.browser,
        max_age=FLOW_SECONDS,
        httponly=True,
        samesite="lax",
        secure=secure(request),
        path=CALLBACK,
    )
    return response
