"""Dashboard pages: users — list, disable/enable, set a password, delete.

Disabling or deleting a user ends its sessions at once; a new password ends its other
sessions (the one that set it stays when users change their own). Nobody disables or
deletes the account they are signed in with here: that would end their own session
mid-change; the CLI can.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyfob.dashboard.render import PER_PAGE, done, page, pager, search_of
from keyfob.dashboard.security import (
    SESSION_COOKIE,
    checked_form,
    context,
    current_user,
    vault_of,
)
from keyfob.errors import Conflict, KeyfobError
from keyfob.secret import Secret
from keyfob.vault import Principal

router = APIRouter()


@router.get("/users")
async def users_page(request: Request) -> Response:
    user = await current_user(request)
    q = search_of(request)
    found = await vault_of(request).users.page(
        prefix=q or None, cursor=request.query_params.get("after") or None, limit=PER_PAGE
    )
    return page(
        request,
        "users_list.html",
        user,
        section="users",
        users=found.items,
        links=pager(request, found.next),
        q=q,
    )


@router.post("/users/{user_id}/disable")
async def disable_user(request: Request, user_id: str) -> Response:
    return await _set_disabled(request, user_id, disabled=True)


@router.post("/users/{user_id}/enable")
async def enable_user(request: Request, user_id: str) -> Response:
    return await _set_disabled(request, user_id, disabled=False)


async def _set_disabled(request: Request, user_id: str, *, disabled: bool) -> Response:
    user = await current_user(request)
    await checked_form(request)
    _not_yourself(user, user_id, "disable")
    await vault_of(request).users.set_disabled(context(request, user), user_id, disabled)
    return done("/ui/users", "disabled" if disabled else "enabled")


async def _password_form(
    request: Request, user: Principal, user_id: str, error: str | None, status_code: int
) -> Response:
    target = await vault_of(request).users.get(user_id)
    return page(
        request,
        "users_password.html",
        user,
        section="users",
        target=target,
        own=target["id"] == user.id,
        error=error,
        status_code=status_code,
    )


@router.get("/users/{user_id}/password")
async def password_form(request: Request, user_id: str) -> Response:
    user = await current_user(request)
    return await _password_form(request, user, user_id, None, 200)


@router.post("/users/{user_id}/password")
async def set_password(request: Request, user_id: str) -> Response:
    user = await current_user(request)
    form = await checked_form(request)
    password, again = form.get("password", ""), form.get("password_again", "")
    if password != again:
        return await _password_form(request, user, user_id, "The passwords do not match.", 422)
    # Users changing their own password keep the session they did it from.
    own = user_id == user.id
    keep = request.cookies.get(SESSION_COOKIE) if own else None
    try:
        await vault_of(request).users.set_password(
            context(request, user), user_id, Secret(password), keep_session=keep
        )
    except KeyfobError as exc:
        if exc.status == 404:
            raise
        return await _password_form(request, user, user_id, exc.detail, exc.status)
    return done("/ui/users", "password-set")


@router.get("/users/{user_id}/delete")
async def confirm_delete(request: Request, user_id: str) -> Response:
    user = await current_user(request)
    _not_yourself(user, user_id, "delete")
    target = await vault_of(request).users.get(user_id)
    return page(request, "users_delete.html", user, section="users", target=target)


@router.post("/users/{user_id}/delete")
async def delete_user(request: Request, user_id: str) -> Response:
    user = await current_user(request)
    await checked_form(request)
    _not_yourself(user, user_id, "delete")
    await vault_of(request).users.delete(context(request, user), user_id)
    return done("/ui/users", "deleted")


def _not_yourself(user: Principal, user_id: str, verb: str) -> None:
    if user_id in (user.id, user.name):
        raise Conflict(f"you cannot {verb} the account you are signed in with")
