"""Dashboard pages: agents — list, create, disable/enable, rotate token, delete.

A new or rotated token is rendered once, in the answer to the POST that made it
(never in a URL, never on a later page), with ``Cache-Control: no-store``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyfob.dashboard.render import PER_PAGE, done, page, pager, search_of
from keyfob.dashboard.security import checked_form, context, current_user, vault_of
from keyfob.errors import KeyfobError
from keyfob.secret import Secret
from keyfob.vault import Principal
from keyfob.vault.views import AgentView

router = APIRouter()


async def _list(
    request: Request,
    user: Principal,
    *,
    error: str | None = None,
    name: str = "",
    status_code: int = 200,
) -> Response:
    q = search_of(request)
    found = await vault_of(request).agents.page(
        prefix=q or None, cursor=request.query_params.get("after") or None, limit=PER_PAGE
    )
    return page(
        request,
        "agents_list.html",
        user,
        section="agents",
        agents=found.items,
        links=pager(request, found.next),
        q=q,
        error=error,
        name=name,
        status_code=status_code,
    )


def _token_page(
    request: Request,
    user: Principal,
    agent: AgentView,
    token: Secret[str],
    *,
    rotated: bool,
    status_code: int,
) -> Response:
    response = page(
        request,
        "agents_token.html",
        user,
        section="agents",
        agent=agent,
        token=token.reveal(),
        rotated=rotated,
        status_code=status_code,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/agents")
async def agents_page(request: Request) -> Response:
    return await _list(request, await current_user(request))


@router.post("/agents")
async def create_agent(request: Request) -> Response:
    user = await current_user(request)
    form = await checked_form(request)
    name = form.get("name", "").strip()[:64]
    try:
        agent, token = await vault_of(request).agents.create(context(request, user), name)
    except KeyfobError as exc:
        return await _list(request, user, error=exc.detail, name=name, status_code=exc.status)
    return _token_page(request, user, agent, token, rotated=False, status_code=201)


@router.post("/agents/{agent_id}/disable")
async def disable_agent(request: Request, agent_id: str) -> Response:
    return await _set_disabled(request, agent_id, disabled=True)


@router.post("/agents/{agent_id}/enable")
async def enable_agent(request: Request, agent_id: str) -> Response:
    return await _set_disabled(request, agent_id, disabled=False)


async def _set_disabled(request: Request, agent_id: str, *, disabled: bool) -> Response:
    user = await current_user(request)
    await checked_form(request)
    await vault_of(request).agents.set_disabled(context(request, user), agent_id, disabled)
    return done("/ui/agents", "disabled" if disabled else "enabled")


@router.post("/agents/{agent_id}/rotate")
async def rotate_token(request: Request, agent_id: str) -> Response:
    user = await current_user(request)
    await checked_form(request)
    agent, token = await vault_of(request).agents.rotate_token(context(request, user), agent_id)
    return _token_page(request, user, agent, token, rotated=True, status_code=200)


@router.get("/agents/{agent_id}/delete")
async def confirm_delete(request: Request, agent_id: str) -> Response:
    user = await current_user(request)
    vault = vault_of(request)
    agent = await vault.agents.get(agent_id)
    grants = await vault.grants.search(agent=agent.id)
    return page(
        request,
        "agents_delete.html",
        user,
        section="agents",
        agent=agent,
        grants=grants,
    )


@router.post("/agents/{agent_id}/delete")
async def delete_agent(request: Request, agent_id: str) -> Response:
    user = await current_user(request)
    await checked_form(request)
    await vault_of(request).agents.delete(context(request, user), agent_id)
    return done("/ui/agents", "deleted")
