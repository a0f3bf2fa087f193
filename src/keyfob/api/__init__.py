"""The HTTP API (FastAPI): operator routes, service routes, the problem+json renderer."""

from __future__ import annotations

from fastapi import FastAPI

from keyfob import __version__
from keyfob.api import (
    agents,
    audit,
    docs,
    keys,
    leases,
    problems,
    secret_sets,
    service,
    users,
)


def build_api() -> FastAPI:
    """The FastAPI app with every router and error handler; the vault is set on ``state``."""
    app = FastAPI(
        title="keyfob",
        version=__version__,
        summary="A credential vault for AI agents.",
        docs_url=None,  # served by ``docs``: local assets, strict CSP
        redoc_url=None,
    )
    problems.install(app)
    docs.install(app)
    for module in (service, secret_sets, audit, keys, agents, leases, users):
        app.include_router(module.router)
    return app
