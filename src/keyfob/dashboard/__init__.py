"""The dashboard: server-rendered pages at ``/ui`` for people (Jinja2, no inline script).

It is a sub-application with its own HTML error pages; every change goes through the
same vault services as the API, audited with the signed-in user as actor.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response

from keyfob import errors
from keyfob.dashboard import (
    agents,
    audit,
    connect,
    credentials,
    grants,
    leases,
    overview,
    signin,
    usage,
    users,
)
from keyfob.dashboard.render import page
from keyfob.dashboard.security import CsrfRejected, SecurityHeaders, SignInRequired
from keyfob.metrics import FASTAPI_TELEMETRY_OFF

PAGES = (signin, overview, connect, credentials, agents, grants, leases, usage, audit, users)


def build_dashboard(parent: FastAPI) -> SecurityHeaders:
    """The /ui sub-app; ``parent.state.vault`` is read per request."""
    ui = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, telemetry=FASTAPI_TELEMETRY_OFF)
    ui.state.parent = parent
    ui.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    for module in PAGES:
        ui.router.routes.extend(module.router.routes)  # not include_router: see build_api

    @ui.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: Exception) -> Response:
        return RedirectResponse("/ui/login", status_code=303)

    @ui.exception_handler(CsrfRejected)
    async def _csrf(request: Request, exc: Exception) -> Response:
        return page(
            request,
            "error.html",
            None,
            status_code=403,
            message="The form was not accepted (missing or stale CSRF token). "
            "Reload the page and try again.",
        )

    @ui.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = "No such page." if exc.status_code == 404 else "The request was not accepted."
        return page(request, "error.html", None, status_code=exc.status_code, message=message)

    @ui.exception_handler(errors.KeyfobError)
    async def _error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.KeyfobError)
        return page(request, "error.html", None, status_code=exc.status, message=exc.detail)

    return SecurityHeaders(ui)
