"""What ``keyfob mcp`` runs with: where keyfob is, the agent token, and the tools' limits.

The agent token comes from a file or ``KEYFOB_TOKEN``, never from a tool's arguments: a
model cannot hand the server another identity, and the token is in no prompt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from keyfob.secret import SECRET, Masked, Secret
from keyfob.tokens import AGENT, LEASE, OPERATOR

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
DEFAULT_APPROVAL_TIMEOUT = 120.0
DEFAULT_REQUEST_TIMEOUT = 60.0


class ConfigError(Exception):
    """A one-line reason ``keyfob mcp`` cannot start (never a token's value)."""


@dataclass(frozen=True)
class McpConfig(Masked):
    addr: str
    token: Secret[str] = field(metadata=SECRET)
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    approval_timeout: float = DEFAULT_APPROVAL_TIMEOUT
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT


def read_token(token_file: Path | None, environ: dict[str, str] | None = None) -> Secret[str]:
    """The agent token: ``token_file`` if given, else ``KEYFOB_TOKEN``; only a ``kfa_`` one."""
    env = os.environ if environ is None else environ
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read token file {token_file}: {exc.strerror}") from None
        source = f"token file {token_file}"
    else:
        text = env.get("KEYFOB_TOKEN", "").strip()
        source = "KEYFOB_TOKEN"
    if not text:
        raise ConfigError(
            "keyfob mcp needs an agent token (kfa_…): pass --token-file PATH or set "
            "KEYFOB_TOKEN (`keyfob agent create` prints one)"
        )
    if not text.startswith(AGENT):
        # Named, never echoed: whatever is there may be a credential.
        what = {OPERATOR: "an operator token (kfo_…)", LEASE: "a lease (kfl_…)"}.get(
            text[: len(AGENT)], "something that is not an agent token"
        )
        raise ConfigError(f"{source} holds {what}; keyfob mcp runs with an agent token (kfa_…)")
    return Secret(text)
