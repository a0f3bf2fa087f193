"""Ready-wired clients: an ``httpx`` client for any set, and the official OpenAI and
Anthropic clients, each pointed at keyfob's proxy route for the set with ``LeaseAuth``
putting a lease where the key would go. The provider packages are optional: imported
only when asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

import httpx

from keyfob.sdk.agent import AgentClient, AsyncAgentClient, Scope
from keyfob.sdk.auth import LeaseAuth
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


class AsyncProxyClient(httpx.AsyncClient):
    """``ProxyClient`` for asyncio."""

    owned: AsyncAgentClient | None = None

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            if self.owned is not None:
                await self.owned.aclose()


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
    client = AsyncProxyClient(
        base_url=agent.proxy_url(set) + path,
        auth=auth,
        transport=transport if transport is not None else agent.transport,
        trust_env=False,
        **kwargs,
    )
    client.owned = agent if owned else None
    return client


def _provider(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InvalidRequest(
            f"keyfob.sdk.{module}() needs the {module} package: pip install {extra}"
        ) from None


def openai(
    set: str,  # the documented keyword (DESIGN)
    *,
    agent: AgentClient | None = None,
    addr: str | None = None,
    token: str | None = None,
    scope: Scope = "request",
    transport: httpx.BaseTransport | None = None,
    path: str = OPENAI_PATH,
    **kwargs: Any,
) -> Any:
    """``openai.OpenAI`` wired to keyfob for ``set``: a lease on every call, no key here."""
    module = _provider("openai", "openai")
    http = http_client(set, agent=agent, addr=addr, token=token, scope=scope, transport=transport)
    return module.OpenAI(
        base_url=str(http.base_url).rstrip("/") + path,
        api_key=PLACEHOLDER_KEY,
        http_client=http,
        **kwargs,
    )


def async_openai(
    set: str,  # the documented keyword (DESIGN)
    *,
    agent: AsyncAgentClient | None = None,
    addr: str | None = None,
    token: str | None = None,
    scope: Scope = "request",
    transport: httpx.AsyncBaseTransport | None = None,
    path: str = OPENAI_PATH,
    **kwargs: Any,
) -> Any:
    """``openai.AsyncOpenAI`` wired to keyfob for ``set``."""
    module = _provider("openai", "openai")
    http = async_http_client(
        set, agent=agent, addr=addr, token=token, scope=scope, transport=transport
    )
    return module.AsyncOpenAI(
        base_url=str(http.base_url).rstrip("/") + path,
        api_key=PLACEHOLDER_KEY,
        http_client=http,
        **kwargs,
    )


def anthropic(
    set: str,  # the documented keyword (DESIGN)
    *,
    agent: AgentClient | None = None,
    addr: str | None = None,
    token: str | None = None,
    scope: Scope = "request",
    transport: httpx.BaseTransport | None = None,
    path: str = "",
    **kwargs: Any,
) -> Any:
    """``anthropic.Anthropic`` wired to keyfob for ``set``."""
    module = _provider("anthropic", "anthropic")
    http = http_client(set, agent=agent, addr=addr, token=token, scope=scope, transport=transport)
    return module.Anthropic(
        base_url=str(http.base_url).rstrip("/") + path,
        api_key=PLACEHOLDER_KEY,
        http_client=http,
        **kwargs,
    )


def async_anthropic(
    set: str,  # the documented keyword (DESIGN)
    *,
    agent: AsyncAgentClient | None = None,
    addr: str | None = None,
    token: str | None = None,
    scope: Scope = "request",
    transport: httpx.AsyncBaseTransport | None = None,
    path: str = "",
    **kwargs: Any,
) -> Any:
    """``anthropic.AsyncAnthropic`` wired to keyfob for ``set``."""
    module = _provider("anthropic", "anthropic")
    http = async_http_client(
        set, agent=agent, addr=addr, token=token, scope=scope, transport=transport
    )
    return module.AsyncAnthropic(
        base_url=str(http.base_url).rstrip("/") + path,
        api_key=PLACEHOLDER_KEY,
        http_client=http,
        **kwargs,
    )
