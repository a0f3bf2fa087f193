"""The HTTP API (FastAPI): operator routes, service routes, the problem+json renderer."""

from __future__ import annotations

from fastapi import FastAPI

from keyfob import __version__
from keyfob.api import (
    agents,
    audit,
    ca,
    docs,
    keys,
    leases,
    metrics,
    problems,
    secret_sets,
    service,
    usage,
    users,
)
from keyfob.metrics import FASTAPI_TELEMETRY_OFF


def build_api() -> FastAPI:
    """The FastAPI app with every router and error handler; the vault is set on ``state``."""
    app = FastAPI(
        title="keyfob",
        version=__version__,
        summary="A credential vault for AI agents.",
        docs_url=None,  # served by ``docs``: local assets, strict CSP
        redoc_url=None,
        telemetry=FASTAPI_TELEMETRY_OFF,
    )
    problems.install(app)
    docs.install(app)
    for module in (service, metrics, secret_sets, audit, keys, agents, leases, users, ca, usage):
        # The routers' own routes rather than include_router: FastAPI rebuilds every
        # included route for each app and matches through a wrapper on each request
        # (measured: ~50 ms per router per app, and each API request ~5x slower).
        app.router.routes.extend(module.router.routes)
    return app
