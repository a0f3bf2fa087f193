"""``keyfob mcp``: an MCP server that gives a model keyfob's proxy as tools, holding only an
agent token (``kfa_…``) — never a provider key, never a value a tool could return.

Built on the agent SDK (``keyfob.sdk``), not on the vault: it runs on the agent's machine
and talks to keyfob over HTTP like any other agent.

``build_server`` is imported on first use: the ``mcp`` SDK costs ~1 s of CPU to import,
and reading ``keyfob.mcp.config`` should not pay it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keyfob.mcp.config import McpConfig

if TYPE_CHECKING:
    from keyfob.mcp.server import build_server

__all__ = ["McpConfig", "build_server"]


def __getattr__(name: str) -> Any:
    if name == "build_server":
        from keyfob.mcp.server import build_server

        return build_server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
