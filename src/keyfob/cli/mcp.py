"""``keyfob mcp``: serve the MCP tools to a model over stdio, or streamable HTTP with ``--http``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from keyfob.cli.context import state
from keyfob.cli.errors import CliError
from keyfob.cli.output import JsonFlag, print_json_line
from keyfob.text import digits

if TYPE_CHECKING:
    from keyfob.mcp.config import McpConfig

HTTP_PATH = "/mcp"


# The addresses the MCP SDK turns its DNS-rebinding protection on for (Host and Origin
# checked); other loopback addresses would go without it.
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not digits(port, 5) or not 0 < int(port) < 65536:
        raise CliError(f"--http takes HOST:PORT (e.g. 127.0.0.1:8765), not {value[:60]!r}")
    host = host.strip("[]")
    if host not in LOOPBACK:
        # The HTTP transport has no authentication of its own: whoever reaches it acts as
        # the agent. Loopback only; put an authenticating proxy in front for anything else.
        raise CliError(
            f"--http binds loopback only (127.0.0.1, ::1 or localhost), not {host}: the MCP "
            "endpoint would let anyone who reaches it use this agent's grants"
        )
    return host, int(port)


def mcp(
    ctx: typer.Context,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            metavar="PATH",
            help="Read the agent token (kfa_…) from PATH, not KEYFOB_TOKEN.",
        ),
    ] = None,
    http: Annotated[
        str | None,
        typer.Option(
            "--http",
            metavar="HOST:PORT",
            help=f"Serve streamable HTTP at http://HOST:PORT{HTTP_PATH} (loopback only) "
            "instead of stdio.",
        ),
    ] = None,
    max_response_bytes: Annotated[
        int,
        typer.Option(
            min=1024,
            max=16 * 1024 * 1024,
            metavar="N",
            help="Cap on the response body http_request hands the model (the rest is cut).",
        ),
    ] = 64 * 1024,
    approval_timeout: Annotated[
        float,
        typer.Option(
            min=1, max=600, metavar="S", help="How long request_access waits for a person."
        ),
    ] = 120.0,
    timeout: Annotated[
        float,
        typer.Option(min=1, max=600, metavar="S", help="Timeout of one proxied request."),
    ] = 60.0,
    json_out: JsonFlag = False,
) -> None:
    """Serve keyfob to a model as MCP tools (list_secret_sets, http_request, request_access),
    holding only the agent token; no tool ever returns a key."""
    # Imported here: other commands should not pay for loading the MCP SDK.
    from keyfob.mcp.config import ConfigError, McpConfig, read_token

    cli = state(ctx)
    listen = _listen(http) if http is not None else None
    try:
        token = read_token(token_file or cli.token_file)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    config = McpConfig(
        addr=cli.addr.rstrip("/"),
        token=token,
        max_response_bytes=max_response_bytes,
        approval_timeout=approval_timeout,
        request_timeout=timeout,
    )
    if listen is not None:
        host, port = listen
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}{HTTP_PATH}"
        if json_out:
            print_json_line({"transport": "streamable-http", "url": url, "addr": config.addr})
        else:
            print(
                f"keyfob mcp: streamable HTTP at {url} (keyfob at {config.addr})", file=sys.stderr
            )
    import asyncio

    from keyfob.sdk import KeyfobError

    try:
        asyncio.run(_serve(config, listen))
    except KeyboardInterrupt:
        pass
    except KeyfobError as exc:  # a bad address or TLS file, found making the agent client
        raise CliError(str(exc)) from None


async def _serve(config: McpConfig, listen: tuple[str, int] | None) -> None:
    from keyfob.mcp.server import KeyfobTools, build_server

    tools = KeyfobTools(config)
    server = build_server(tools)
    try:
        if listen is None:
            await server.run_stdio_async()
        else:
            host, port = listen
            await server.run_streamable_http_async(
                host=host, port=port, streamable_http_path=HTTP_PATH
            )
    finally:
        await tools.aclose()
