"""Sign-in and sign-out pages."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from keyfob.dashboard.render import page
from keyfob.dashboard.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    checked_form,
    clear_session,
    context,
    current_user,
    new_login_csrf,
    secure,
    set_session,
    vault_of,
)
from keyfob.errors import TooManyRequests, Unauthorized
from keyfob.secret import Secret

router = APIRouter()


def _form(request: Request, error: str | None = None, status_code: int = 200) -> Response:
    token = new_login_csrf()
    response = page(
        request, "login.html", None, login_csrf=token, error=error, status_code=status_code
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=secure(request),
        path="/ui/login",
    )
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    return _form(request)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    sent = str(form.get("csrf", ""))
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(sent, cookie):
        return _form(request, "The form expired; please sign in again.", 403)
    name = str(form.get("name", ""))[:64]
    password = Secret(str(form.get("password", "")))
    try:
        _, token = await vault_of(request).users.sign_in(name, password, context(request))
    except TooManyRequests as exc:
        # The same words for a locked name, a locked address and a busy server, and for
        # known and unknown names alike.
        wait = exc.extra.get("retry_after", 60)
        answer = _form(request, f"Too many sign-in attempts. Try again in {wait} seconds.", 429)
        answer.headers["Retry-After"] = str(wait)
        return answer
    except Unauthorized:
        return _form(request, "Wrong user name or password.", 401)
    response = RedirectResponse("/ui/", status_code=303)
    set_session(response, request, token.reveal())
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/ui/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    user = await current_user(request)
    await checked_form(request)
    await vault_of(request).users.sign_out(
        request.cookies.get(SESSION_COOKIE, ""), context(request, user)
    )
    response = RedirectResponse("/ui/login?done=signed-out", status_code=303)
    clear_session(response)
    return response
