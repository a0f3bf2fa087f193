"""Ready-wired clients: an ``httpx`` client for any set, and the official OpenAI and
Anthropic clients, each pointed at keyfob's proxy route for the set with ``LeaseAuth``
putting a lease on every request. The provider packages are optional: imported only
when asked for. Releases of them built on ``httpx2`` (an httpx fork whose clients and
``Auth`` are its own types) get an ``httpx2`` client with the same auth.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncGenerator, Generator
from types import ModuleType
from typing import Any

import httpx

from keyfob.sdk.agent import AgentClient, AsyncAgentClient, Scope
from keyfob.sdk.auth import LEASE_HEADER, LeaseAuth
from keyfob.sdk.errors import InvalidRequest
from keyfob.sdk.wire import TIMEOUT

# Sent as the provider key: the proxy drops it and injects the real one; the lease
# travels in X-Keyfob-Lease.
PLACEHOLDER_KEY = "keyfob-lease"
OPENAI_PATH = "/v1"  # the OpenAI SDK's base URL ends in /v1; the preset's upstream does not


class ProxyClient(httpx.Client):
    """An ``httpx.Client`` for keyfob's proxy route that also closes the agent client it made."""

    owned: AgentClient | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.owned is not None:
                self.owned.close()

    def __exit__(self, *exc_info: object) -> None:
        self.close()  # httpx's own __exit__ closes the transport without calling close()


class AsyncProxyClient(httpx.AsyncClient):
    """``ProxyClient`` for asyncio."""

    owned: AsyncAgentClient | None = None

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            if self.owned is not None:
                await self.owned.aclose()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _sync_agent(
    agent: AgentClient | None,
    addr: str | None,
    token: str | None,
    transport: httpx.BaseTransport | None,
) -> AgentClient:
    return agent or AgentClient(addr, token, transport=transport)


def _async_agent(
    agent: AsyncAgentClient | None,
    addr: str | None,
    token: str | None,
    transport: httpx.AsyncBaseTransport | None,
) -> AsyncAgentClient:
    return agent or AsyncAgentClient(addr, token, transport=transport)


def http_client(
    set: str,  # the documented keyword (DESIGN)
    *,
    agent: AgentClient | None = None,
    addr: str | None = None,
    token: str | None = None,
    scope: Scope = "request",
    transport: httpx.BaseTransport | None = None,
    path: str = "",
    **kwargs: Any,
) -> httpx.Client:
    """An ``httpx.Client`` whose base URL is the proxy route for ``set`` (plus ``path``);
    every request carries a lease."""
    owned = agent is None
    agent = _sync_agent(agent, addr, token, transport)
    auth = LeaseAuth(set, agent=agent, scope=scope)
    kwargs.setdefault("timeout", TIMEOUT)
    kwargs.setdefault("verify", agent.verify)  # the proxy route is the same server
    client = ProxyClient(
        base_url=agent.proxy_url(set) + path,
        auth=auth,
        transport=transport if transport is not None else agent.transport,
        trust_env=False,
        **kwargs,
    )
    client.owned = agent if owned else None
    return client


def async_http_client(
    set: str,  # the documented keyword (DESIGN)
    *,
    agent: AsyncAgentClient | None = None,
    addr: str | None = None,
    token: str | None = None,
    scope: Scope = "request",
    transport: httpx.AsyncBaseTransport | None = None,
    path: str = "",
    **kwargs: Any,
) -> httpx.AsyncClient:
    """``http_client`` for asyncio."""
    owned = agent is None
    agent = _async_agent(agent, addr, token, transport)
    auth = LeaseAuth(set, async_agent=agent, scope=scope)
    kwargs.setdefault("timeout", TIMEOUT)
    kwargs.setdefault("verify", agent.verify)
    client = AsyncProxyClient(
        base_url=agent.proxy_url(set) + path,
        auth=auth,
        transport=transport if transport is not None else agent.transport,
        trust_env=False,
        **kwargs,
    )
    client.owned = agent if owned else None
    return client


def _provider(module: str, extra: str) -> tuple[Any, ModuleType]:
    """The provider package and the httpx flavour its clients take."""
    try:
        package = importlib.import_module(module)
    except ImportError:
        raise InvalidRequest(
            f"keyfob.sdk.{module}() needs the {module} package: pip install {extra}"
        ) from None
    base = importlib.import_module(f"{module}._base_client")
    flavour = getattr(base, "httpx2", None)
    return package, flavour if isinstance(flavour, ModuleType) else httpx


def _foreign_auth(flavour: ModuleType, auth: LeaseAuth) -> Any:
    """``auth`` as the ``Auth`` type of another httpx flavour (same flows, same pool)."""

    class ForeignLeaseAuth(flavour.Auth):  # type: ignore[name-defined,misc]
        def sync_auth_flow(self, request: Any) -> Generator[Any, Any]:
            request.headers[LEASE_HEADER] = auth.take().token.reveal()
            yield request

        async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
            request.headers[LEASE_HEADER] = (await auth.atake()).token.reveal()
            yield request

    return ForeignLeaseAuth()


def _wired(
    flavour: ModuleType,
    set: str,  # the documented keyword (DESIGN)
    agent: AgentClient | AsyncAgentClient | None,
    addr: str | None,
    token: str | None,
    scope: Scope,
    transport: Any,
    asynchronous: bool,
) -> Any:
    """A client of ``flavour`` on the proxy route for ``set``, with a lease per request."""
    if flavour is httpx:
        if asynchronous:
            assert agent is None or isinstance(agent, AsyncAgentClient)
            return async_http_client(
                set, agent=agent, addr=addr, token=token, scope=scope, transport=transport
            )
        assert agent is None or isinstance(agent, AgentClient)
        return http_client(
            set, agent=agent, addr=addr, token=token, scope=scope, transport=transport
        )
    # Another flavour: keyfob is reached (for minting) with httpx, the provider with its own.
    if asynchronous:
        aagent = agent if isinstance(agent, AsyncAgentClient) else AsyncAgentClient(addr, token)
        auth = LeaseAuth(set, async_agent=aagent, scope=scope)
        owned_async = aagent if agent is None else None

        class ClosingAsync(flavour.AsyncClient):  # type: ignore[name-defined,misc]
            async def aclose(self) -> None:
                try:
                    await super().aclose()
                finally:
                    if owned_async is not None:
                        await owned_async.aclose()

            async def __aexit__(self, *exc_info: object) -> None:
                await self.aclose()

        return ClosingAsync(
            base_url=aagent.proxy_url(set),
            auth=_foreign_auth(flavour, auth),
            transport=transport,
            verify=aagent.verify,
            timeout=TIMEOUT,
            trust_env=False,
        )
    sagent = agent if isinstance(agent, AgentClient) else AgentClient(addr, token)
    auth = LeaseAuth(set, agent=sagent, scope=scope)
    owned = sagent if agent is None else None

    class Closing(flavour.Client):  # type: ignore[name-defined,misc]
        def close(self) -> None:
            try:
                super().close()
            finally:
                if owned is not None:
                    owned.close()

        def __exit__(self, *exc_info: object) -> None:
            self.close()

    return Closing(
        base_url=sagent.proxy_url(set),
        auth=_foreign_auth(flavour, auth),
        transport=transport,
        verify=sagent.verify,
        timeout=TIMEOUT,
        trust_env=False,
    )


def _build(
    module: str,
    class_name: str,
    set: str,  # the documented keyword (DESIGN)
    agent: AgentClient | AsyncAgentClient | None,
    addr: str | None,
    token: str | None,
    scope: Scope,
    transport: Any,
    path: str,
    kwargs: dict[str, Any],
) -> Any:
    package, flavour = _provider(module, module)
    asynchronous = class_name.startswith("Async")
    http = _wired(flavour, set, agent, addr, token, scope, transport, asynchronous)
    return getattr(package, class_name)(
        base_url=str(http.base_url).rstrip("/") + path,
        api_key=PLACEHOLDER_KEY,
        http_client=http,
        **kwargs,
    )


def openai(
    set: str,  # the documented keyword (DESIGN)
    *,
    agent: AgentClient | None = None,
    addr: str | None = None,
    token: str | None = None,
    scope: Scope = "request",
    transport: Any = None,
    path: str = OPENAI_PATH,
    **kwargs: Any,
) -> Any:
    """``openai.OpenAI`` wired to keyfob for ``set``: a lease on every call, no key here."""
    return _build("openai", "OpenAI", set, agent, addr, token, scope, transport, path, kwargs)


def async_openai(
    set: str,  # the documented keyword (DESIGN)
    *,
    agent: AsyncAgentClient | None = None,
    addr: str | None = None,
    token: str | None = None,
    scope: Scope = "request",
    transport: Any = None,
    path: str = OPENAI_PATH,
    **kwargs: Any,
) -> Any:
    """``openai.AsyncOpenAI`` wired to keyfob for ``set``."""
    return _build("openai", "AsyncOpenAI", set, agent, addr, token, scope, transport, path, kwargs)


def anthropic(
    set: str,  # the documented keyword (DESIGN)
    *,
    agent: AgentClient | None = None,
    addr: str | None = None,
    token: str | None = None,
    scope: Scope = "request",
    transport: Any = None,
    path: str = "",
    **kwargs: Any,
) -> Any:
    """``anthropic.Anthropic`` wired to keyfob for ``set``."""
    return _build("anthropic", "Anthropic", set, agent, addr, token, scope, transport, path, kwargs)


def async_anthropic(
    set: str,  # the documented keyword (DESIGN)
    *,
    agent: AsyncAgentClient | None = None,
    addr: str | None = None,
    token: str | None = None,
    scope: Scope = "request",
    transport: Any = None,
    path: str = "",
    **kwargs: Any,
) -> Any:
    """``anthropic.AsyncAnthropic`` wired to keyfob for ``set``."""
    return _build(
        "anthropic", "AsyncAnthropic", set, agent, addr, token, scope, transport, path, kwargs
    )
