"""The "Use it from an agent" panel: copyable snippets for one set, placeholders for tokens.

Every snippet names the set and this keyfob's address and nothing secret: the agent
token and a lease appear only as placeholders (``$KEYFOB_TOKEN``, ``kfa_…``, ``$LEASE``),
never a real value, so the panel is safe to show to anyone who may see the set's page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from keyfob.vault.views import SetView

# A harmless first request per preset, for the curl snippet; others start at the base URL.
_EXAMPLE_PATHS = {
    "openai": "v1/models",
    "anthropic": "v1/models",
    "github": "user",
    "stripe": "v1/balance",
    "slack": "api/auth.test",
}
TOKEN_FILE = "~/.config/keyfob/agent-token"  # noqa: S105 (a path, not a password)


@dataclass(frozen=True)
class Snippet:
    id: str
    title: str
    hint: str
    text: str


def _sdk(path: str, addr: str, preset: str | None) -> str:
    env = f'# export KEYFOB_ADDR={addr}\n# export KEYFOB_TOKEN="kfa_…"   # your agent token\n'
    if preset == "openai":
        return (
            f"{env}import keyfob.sdk\n\n"
            f'client = keyfob.sdk.openai(set="{path}")\n'
            'client.chat.completions.create(model="gpt-4o-mini", messages=[…])'
        )
    if preset == "anthropic":
        return (
            f"{env}import keyfob.sdk\n\n"
            f'client = keyfob.sdk.anthropic(set="{path}")\n'
            'client.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=[…])'
        )
    example = _EXAMPLE_PATHS.get(preset or "", "")
    return (
        f"{env}import keyfob.sdk\n\n"
        f'http = keyfob.sdk.http_client(set="{path}")  # a fresh lease on every request\n'
        f'http.get("/{example}")'
    )


def _mcp_config(addr: str) -> str:
    config: dict[str, Any] = {
        "mcpServers": {
            "keyfob": {
                "command": "keyfob",
                "args": ["mcp", "--token-file", TOKEN_FILE],
                "env": {"KEYFOB_ADDR": addr},
            }
        }
    }
    return json.dumps(config, indent=2)


def _curl(path: str, addr: str, preset: str | None) -> str:
    example = _EXAMPLE_PATHS.get(preset or "", "")
    return (
        f"export KEYFOB_ADDR={addr}\n"
        'export KEYFOB_TOKEN="kfa_…"   # your agent token\n'
        "LEASE=$(curl -s -X POST $KEYFOB_ADDR/v1/leases \\\n"
        '  -H "Authorization: Bearer $KEYFOB_TOKEN" -H "Content-Type: application/json" \\\n'
        f'  -d \'{{"secret_set": "{path}"}}\' | jq -r .token)   # kfl_…, single use\n'
        f'curl $KEYFOB_ADDR/proxy/{path}/{example} -H "Authorization: Bearer $LEASE"'
    )


def snippets(view: SetView, addr: str) -> list[Snippet]:
    """The panel's snippets for ``view``, served at ``addr`` (none without a profile)."""
    if not view.profile:
        return []
    preset = (view.profile or {}).get("preset")
    path = view.path
    return [
        Snippet(
            "snippet-sdk",
            "Python SDK",
            "pip install keyfob[sdk]; the key is injected by keyfob, never sent to the agent.",
            _sdk(path, addr, preset),
        ),
        Snippet(
            "snippet-run",
            "keyfob run",
            "Starts the command with the provider's variables pointed at keyfob "
            "and a lease in place of the key; the lease is revoked when it exits.",
            f"export KEYFOB_ADDR={addr}\n"
            'export KEYFOB_TOKEN="kfa_…"   # your agent token\n'
            f"keyfob run --set {path} -- python app.py",
        ),
        Snippet(
            "snippet-mcp",
            "MCP server (Claude Desktop, Claude Code, Cursor, …)",
            f"Put the agent token in {TOKEN_FILE} (mode 0600); the model gets "
            f"list_secret_sets, http_request and request_access, never the key. "
            f"Claude Code: claude mcp add --transport stdio --env KEYFOB_ADDR={addr} "
            f"keyfob -- keyfob mcp --token-file {TOKEN_FILE}",
            _mcp_config(addr),
        ),
        Snippet(
            "snippet-curl",
            "curl",
            "Mint a single-use lease with the agent token, then call through the proxy.",
            _curl(path, addr, preset),
        ),
    ]
