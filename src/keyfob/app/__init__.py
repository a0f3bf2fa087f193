"""The keyfob ASGI application: API and dashboard (and, later, the proxy) in one process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from keyfob.api import build_api
from keyfob.api.middleware import ApiMiddleware
from keyfob.clock import Clock
from keyfob.dashboard import build_dashboard
from keyfob.settings import Settings
from keyfob.vault import Vault


def create_app(
    settings: Settings, *, vault: Vault | None = None, clock: Clock | None = None
) -> FastAPI:
    """Build the app. With ``vault`` given, the caller owns it; otherwise start-up opens it."""
    app = build_api()
    app.state.settings = settings
    if vault is not None:
        app.state.vault = vault
    else:

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            app.state.vault = await Vault.open(settings, clock=clock)
            try:
                yield
            finally:
                await app.state.vault.close()

        app.router.lifespan_context = lifespan
    app.mount("/ui", build_dashboard(app))
    app.add_middleware(ApiMiddleware, max_body=settings.max_body_bytes)
    return app
