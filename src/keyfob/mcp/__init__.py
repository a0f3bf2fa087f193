"""``keyfob mcp``: an MCP server that gives a model keyfob's proxy as tools, holding only an
agent token (``kfa_…``) — never a provider key, never a value a tool could return.

Built on the agent SDK (``keyfob.sdk``), not on the vault: it runs on the agent's machine
and talks to keyfob over HTTP like any other agent.
"""

from keyfob.mcp.config import McpConfig
from keyfob.mcp.server import build_server

__all__ = ["McpConfig", "build_server"]
