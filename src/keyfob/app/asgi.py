"""The keyfob ASGI application: API, dashboard and proxy in one process (``keyfob.app``
exports it).

The proxy is a plain ASGI app beside FastAPI, not inside it: requests under ``/proxy/``
never pass through the API's middleware, routing or validation.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from keyfob.api import build_api, mint_route
from keyfob.api.middleware import ApiMiddleware
from keyfob.app.audit_sinks import build_sinks
from keyfob.app.edge import Edge, misdirected, with_hsts
from keyfob.app.planes import Planes, not_here
from keyfob.clock import Clock
from keyfob.proxy import openapi
from keyfob.proxy.app import ProxyApp
from keyfob.settings import Settings, split_listen
from keyfob.vault import Vault

if TYPE_CHECKING:
    from keyfob.proxy.forward import ForwardProxy

PROXY_PREFIX = "/proxy/"


class Keyfob:
    """Dispatches ``/proxy/…`` to the proxy, an agent's ``POST /v1/leases`` to the plain mint
    route, and everything else to the API."""

    def __init__(
        self,
        api: FastAPI,
        proxy: ProxyApp,
        edge: Edge,
        planes: Planes | None = None,
        forward: ForwardProxy | None = None,
        forward_listen: str | None = None,
        mint: mint_route.MintRoute | None = None,
    ) -> None:
        self.api = api
        self.mint = mint
        self.proxy = proxy
        self.edge = edge
        self.planes = planes or Planes(api.state.settings)
        self.forward = forward
        self._forward_listen = forward_listen

    def __getattr__(self, name: str) -> Any:
        # Compatibility: callers that configured the FastAPI app (state, routers) still can.
        return getattr(self.api, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.api(scope, receive, send)
            return
        # Once, for the API, the dashboard and the proxy alike.
        scope = self.edge.forwarded(scope)
        if not self.edge.admits(scope):
            await misdirected(send)
            return
        if not self.planes.admits(scope):
            await not_here(send)
            return
        if scope.get("scheme") in ("https", "wss"):
            send = with_hsts(send)
        if scope["path"].startswith(PROXY_PREFIX):
            await self.proxy(scope, receive, send)
        elif (
            self.mint is not None
            and scope["type"] == "http"
            and scope["path"] == mint_route.PATH
            and scope["method"] == "POST"
        ):
            await self.mint(scope, receive, send)
        else:
            await self.api(scope, receive, send)

    async def start(self) -> None:
        """Listen for other nodes' cache notices and open the forward proxy's listener, if
        one is configured (the lifespan does this when it owns the vault)."""
        vault = getattr(self.api.state, "vault", None)
        if vault is not None:
            vault.caches.subscribe(self.proxy.forget_set)
            await vault.caches.start(self.api.state.settings.cache_ttl)
        if self.forward is not None and self._forward_listen:
            await self.forward.start(*split_listen(self._forward_listen))

    async def aclose(self) -> None:
        """Close the forward listener and the proxy's upstream sessions (the lifespan does
        this when it owns them)."""
        try:
            if self.forward is not None:
                await self.forward.close()
        finally:
            await self.proxy.close()


class LazyDashboard:
    """The ``/ui`` sub-app, built on its first request: a server nobody signs in to
    never imports Jinja2 and the dashboard's pages (~3 MB of idle memory)."""

    def __init__(self, parent: FastAPI) -> None:
        self.parent = parent
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            from keyfob.dashboard import build_dashboard

            self._app = build_dashboard(self.parent)
        await self._app(scope, receive, send)


def settle_heap() -> None:
    """Once started, keep the cyclic collector off the long-lived heap (FastAPI, pydantic,
    SQLAlchemy: hundreds of thousands of objects) and run it less often: measured, the
    collections cost the proxy about a fifth of its CPU per request."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 50)


def create_app(
    settings: Settings, *, vault: Vault | None = None, clock: Clock | None = None
) -> Keyfob:
    """Build the app. With ``vault`` given, the caller owns it; otherwise start-up opens it."""
    app = build_api()
    app.state.settings = settings
    proxy = ProxyApp(settings, lambda: app.state.vault)
    app.state.proxy = proxy
    # The forward proxy hands every intercepted request to the same proxy app. Built (and
    # its module, h11 and the tunnel imported) only where one is configured.
    forward = None
    if settings.proxy_listen:
        from keyfob.proxy.forward import ForwardProxy

        forward = ForwardProxy(settings, lambda: app.state.vault, proxy)
    if vault is not None:
        app.state.vault = vault
    else:

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            app.state.vault = await Vault.open(settings, clock=clock)
            await app.state.vault.shipping.start(build_sinks(settings))
            app.state.vault.retention.start()
            await keyfob.start()
            settle_heap()
            try:
                yield
            finally:
                try:
                    await keyfob.aclose()
                finally:
                    await app.state.vault.close()

        app.router.lifespan_context = lifespan
    plain_openapi = app.openapi

    def with_proxy() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi.describe(plain_openapi())
        return app.openapi_schema

    app.openapi = with_proxy  # type: ignore[method-assign]
    app.mount("/ui", LazyDashboard(app))
    app.add_middleware(ApiMiddleware, max_body=settings.max_body_bytes)
    mint = mint_route.MintRoute(app, lambda: app.state.vault, settings.max_body_bytes)
    keyfob = Keyfob(
        app, proxy, Edge(settings), Planes(settings), forward, settings.proxy_listen, mint
    )
    return keyfob
