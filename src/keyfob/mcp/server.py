"""The MCP server: three tools over keyfob's agent API and proxy, errors the model can read.

    list_secret_sets   what this agent may use (names, key names, hosts, limits; no values)
    http_request       one request through the proxy on a fresh single-use lease
    request_access     ask a person to approve a set whose grant needs it, and wait

Every failure — unknown set, no grant, a spent or expired lease, a denied approval, keyfob
unreachable — becomes a tool error with one readable sentence: never a traceback, never a
token or a value. No tool returns a secret value, whatever the grant allows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import httpx
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from keyfob.errors import PROBLEM_PREFIX
from keyfob.mcp.access import Access, Held, NeedsApproval
from keyfob.mcp.config import McpConfig
from keyfob.mcp.exchange import BadRequest, prepare, render, send
from keyfob.sdk import (
    AsyncAgentClient,
    AuthenticationFailed,
    Grant,
    KeyfobError,
    RateLimited,
    Unreachable,
)

log = logging.getLogger("keyfob.mcp")

INSTRUCTIONS = (
    "keyfob lets you call provider APIs (OpenAI, Stripe, GitHub, …) with credentials you never "
    "see. Call list_secret_sets to learn which secret sets you may use and where their "
    "requests go, then http_request with a set and a path relative to its base URL. keyfob "
    "injects the key into each request; no tool ever returns a key, so do not ask for one. "
    "If a set needs a person's approval, call request_access with an honest reason first."
)
_KEYS_NOTE = (
    "API keys are injected by keyfob inside each request and are never visible to you: "
    "no tool returns them, and you must not send keys or Authorization headers yourself."
)
LIST_DESCRIPTION = (
    "List the secret sets this agent may use through keyfob: for each, its key names (never "
    "values), the base URL and hosts its requests go to, the HTTP methods and paths allowed, "
    "the uses left and the rate limit, and whether a person must approve access. " + _KEYS_NOTE
)
_REQUEST_DESCRIPTION = (
    "Send one HTTP request to a provider's API through keyfob, with the secret set's "
    "credential injected by keyfob. `path` is relative to the set's base_url from "
    "list_secret_sets (e.g. /v1/models), with any query string. Each call uses a fresh "
    "single-use lease, is checked against the grant's rules (methods, paths, rate, uses), "
    "and is audited. The answer has status, headers and body; a body over {cap} bytes is cut "
    "(`truncated: true`), and a binary body comes back base64-encoded with its content type. "
)
_ACCESS_DESCRIPTION = (
    "Ask a person to approve this agent's use of a secret set whose grant requires approval "
    "(list_secret_sets shows `approval: required`), and wait up to {timeout:g} seconds for the "
    "decision. Give a short, honest reason: the approver reads it. `uses` is how many "
    "http_request calls the approval should cover. After approval, call http_request; you "
    "still never receive the key. "
)

SetArg = Annotated[
    str, Field(description="The secret set, provider/environment/name (e.g. openai/prod/default)")
]


class KeyfobTools:
    """The tools' state: one agent client, one HTTP client for the proxy, held approvals."""

    def __init__(self, config: McpConfig, transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        self.agent = AsyncAgentClient(config.addr, config.token.reveal(), transport=transport)
        # No environment proxies, no redirects: the proxy answers for itself. The proxy
        # route is the same server: verified, and shown a client certificate, the same way.
        self.http = httpx.AsyncClient(
            transport=transport,
            verify=self.agent.verify,
            timeout=config.request_timeout,
            follow_redirects=False,
            trust_env=False,
        )
        self.access = Access(self.agent, config.approval_timeout)

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.agent.aclose()

    async def list_secret_sets(self) -> dict[str, Any]:
        grants = await self.access.grants(fresh=True)
        return {"secret_sets": [self._describe(g) for g in grants], "note": _KEYS_NOTE}

    def _describe(self, grant: Grant) -> dict[str, Any]:
        data = grant.data
        entry: dict[str, Any] = {
            "secret_set": grant.secret_set,
            "keys": grant.keys,
            "base_url": data.get("base_url"),
            "hosts": data.get("hosts") or [],
            "methods": data.get("methods") or "any",
            "paths": data.get("paths") or "any",
            "can_proxy": "proxy" in grant.actions,
            "approval": grant.approval,
            "remaining_uses": data.get("remaining_uses"),
            "rate_limit_per_minute": data.get("rate_limit"),
            "expires_at": data.get("expires_at"),
        }
        if grant.approval == "required":
            held = self.access.held(grant.secret_set)
            entry["access"] = (
                f"approved, {_uses(held)} left" if held is not None else "not approved yet"
            )
        return entry

    async def http_request(
        self,
        secret_set: str,
        method: str,
        path: str,
        headers: dict[str, str] | None,
        body: str | dict[str, Any] | list[Any] | None,
    ) -> dict[str, Any]:
        outgoing = prepare(method, path, headers, body)
        lease = await self.access.lease_for(secret_set)
        url = f"{self.agent.proxy_url(secret_set)}/{outgoing.path}"
        try:
            answer = await send(
                self.http, url, lease.token, outgoing, self.config.max_response_bytes
            )
        except httpx.HTTPError as exc:
            raise Unreachable(
                f"keyfob at {self.config.addr} did not answer the proxied request "
                f"({type(exc).__name__})"
            ) from None
        refusal = _refusal(answer.data) if answer.is_problem and answer.status >= 400 else None
        if refusal is not None:
            if refusal.get("reason") in ("exhausted", "expired", "revoked"):
                self.access.drop(secret_set)  # an approved lease that is spent
            raise ToolError(_refused(answer.status, refusal))
        return render(answer)

    async def request_access(self, secret_set: str, reason: str, uses: int) -> dict[str, Any]:
        if not reason.strip():
            raise BadRequest("give a reason: the person approving reads it")
        return await self.access.request(secret_set, reason.strip()[:500], uses)


def _uses(held: Held) -> str:
    left = held.uses_left()
    return "unlimited uses" if left is None else f"{left} use{'s' if left != 1 else ''}"


def _refusal(data: bytes) -> dict[str, Any] | None:
    """keyfob's own problem+json (not an upstream's that happens to use the same type)."""
    try:
        body = json.loads(data)
    except ValueError:
        return None
    if isinstance(body, dict) and str(body.get("type", "")).startswith(PROBLEM_PREFIX):
        return body
    return None


def _refused(status: int, problem: dict[str, Any]) -> str:
    detail = " ".join(str(problem.get("detail") or problem.get("title") or "refused").split())
    reason = problem.get("reason")
    tail = f" (reason: {reason})" if isinstance(reason, str) else ""
    return f"keyfob refused the request (HTTP {status}): {detail}{tail}"


def _message(exc: BaseException) -> str:
    """One sentence for the model; the SDK's details carry names and reasons, never values."""
    if isinstance(exc, AuthenticationFailed):
        return (
            "keyfob refused this MCP server's agent token (it is unknown, revoked, or its agent "
            "is disabled); a person must give the server a valid agent token"
        )
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return f"{exc.detail}; retry after {exc.retry_after} s"
    if isinstance(exc, KeyfobError):
        return exc.detail
    return str(exc)


def _tool(
    call: Callable[[], Awaitable[dict[str, Any]]],
) -> Callable[[], Awaitable[CallToolResult]]:
    async def run() -> CallToolResult:
        try:
            result = await call()
        except ToolError:
            raise
        except (KeyfobError, NeedsApproval, BadRequest, ValueError) as exc:
            raise ToolError(_message(exc)) from None
        except Exception as exc:
            # Logged by type only: an exception's text may quote what it was handed.
            log.error("keyfob mcp: unexpected %s", type(exc).__name__)
            raise ToolError(f"keyfob mcp failed unexpectedly ({type(exc).__name__})") from None
        text = json.dumps(result, indent=1, ensure_ascii=False)
        return CallToolResult(
            content=[TextContent(type="text", text=text)], structured_content=result
        )

    return run


def build_server(tools: KeyfobTools) -> MCPServer:
    """An MCP server whose three tools act through ``tools`` (and nothing else)."""
    server: MCPServer = MCPServer(
        "keyfob", instructions=INSTRUCTIONS, log_level="WARNING", warn_on_duplicate_tools=True
    )
    config = tools.config
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    async def list_secret_sets() -> CallToolResult:
        return await _tool(tools.list_secret_sets)()

    async def http_request(
        secret_set: SetArg,
        method: Annotated[str, Field(description="GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS")],
        path: Annotated[
            str, Field(description="Path under the set's base_url, with any query: /v1/models")
        ],
        headers: Annotated[
            dict[str, str] | None,
            Field(description="Request headers (no Authorization or API key headers)"),
        ] = None,
        body: Annotated[
            str | dict[str, Any] | list[Any] | None,
            Field(description="Request body: a string as is, or JSON (sent as application/json)"),
        ] = None,
    ) -> CallToolResult:
        return await _tool(lambda: tools.http_request(secret_set, method, path, headers, body))()

    async def request_access(
        secret_set: SetArg,
        reason: Annotated[str, Field(description="Why access is needed; the approver reads it")],
        uses: Annotated[
            int, Field(ge=1, le=1000, description="How many http_request calls to cover")
        ] = 1,
    ) -> CallToolResult:
        return await _tool(lambda: tools.request_access(secret_set, reason, uses))()

    server.add_tool(list_secret_sets, description=LIST_DESCRIPTION, annotations=read_only)
    server.add_tool(
        http_request,
        description=_REQUEST_DESCRIPTION.format(cap=config.max_response_bytes) + _KEYS_NOTE,
        annotations=ToolAnnotations(open_world_hint=True),
    )
    server.add_tool(
        request_access,
        description=_ACCESS_DESCRIPTION.format(timeout=config.approval_timeout) + _KEYS_NOTE,
        annotations=ToolAnnotations(open_world_hint=False),
    )
    return server
