"""Sessions, CSRF and security headers for the dashboard.

The session cookie is HttpOnly, SameSite=Strict, Secure over TLS, and holds a random
token the server keeps only as an HMAC digest. Every form carries a CSRF token derived
from the session; the sign-in form, which has no session yet, uses a double-submit
cookie. Pages may not be framed and load nothing but their own stylesheet and script.
"""

from __future__ import annotations

import hmac
import secrets
import time

from fastapi import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyfob.vault import Context, Principal, Vault, new_request_id

SESSION_COOKIE = "kf_session"
LOGIN_CSRF_COOKIE = "kf_login_csrf"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SignInRequired(Exception):
    """No live session: the page answers with a redirect to the sign-in form."""


class CsrfRejected(Exception):
    """A form post without the right CSRF token: refused, nothing changes."""


class SecurityHeaders:
    """Adds the dashboard's security headers to every response under /ui.

    Also, on GET answers, ``Server-Timing: app;dur=<ms>``: the server's time until the
    answer started, so a browser (or a test) can tell server time from network and
    rendering time. Never on a POST: a sign-in's timing is nobody's business.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        timed = scope.get("method") == "GET"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *_HEADERS]
                if timed:
                    took = f"app;dur={(time.perf_counter() - started) * 1000:.1f}".encode()
                    headers.append((b"server-timing", took))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def vault_of(request: Request) -> Vault:
    vault: Vault = request.app.state.parent.state.vault
    return vault


def context(request: Request, principal: Principal | None = None) -> Context:
    rid = getattr(request.state, "request_id", None) or new_request_id()
    client = request.client.host if request.client else None
    actor = principal.actor if principal else "anonymous"
    return Context(actor=actor, request_id=rid, client=client)


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def current_user(request: Request) -> Principal:
    """The signed-in user; ``SignInRequired`` otherwise."""
    principal = await vault_of(request).users.session(request.cookies.get(SESSION_COOKIE))
    if principal is None:
        raise SignInRequired()
    return principal


def csrf_for(request: Request) -> str:
    token = request.cookies.get(SESSION_COOKIE, "")
    return vault_of(request).users.csrf_token(token) if token else ""


async def checked_form(request: Request) -> dict[str, str]:
    """The posted form, after its CSRF token matched the session's."""
    form = await request.form()
    sent = str(form.get("csrf", ""))
    expected = csrf_for(request)
    if not expected or not hmac.compare_digest(sent, expected):
        raise CsrfRejected()
    return {k: str(v) for k, v in form.items() if k != "csrf"}


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def set_session(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=secure(request),
        path="/ui",
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/ui")
