"""Microsoft Graph: OAuth refresh token (Entra ID v2 endpoint) → bearer access token."""

from collections.abc import Mapping
from typing import Any

from keyfob.profiles.registry import Field, Preset, scope_list

SCOPES = ["offline_access", "https://graph.microsoft.com/.default"]


def _defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    tenant = str(options.get("tenant") or "common")
    return {
        "base_url": "https://graph.microsoft.com",
        "hosts": ["graph.microsoft.com"],
        "inject": {
            "kind": "oauth2",
            "grant": str(options.get("grant") or "refresh_token"),
            "token_url": f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
            "client_id": "CLIENT_ID",
            "client_secret": "CLIENT_SECRET",
            "refresh_token": "REFRESH_TOKEN",
            "scopes": scope_list(options.get("scopes"), SCOPES),
        },
    }


PRESET = Preset(
    name="microsoft_graph",
    title="Microsoft Graph (OAuth)",
    fields=(
        Field("CLIENT_ID", "Application (client) id", secret=False),
        Field("CLIENT_SECRET", "Client secret"),
        Field("REFRESH_TOKEN", "Refresh token"),
    ),
    defaults=_defaults,
    options=("tenant", "scopes", "grant"),
    docs_url="https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-auth-code-flow",
    extra={"authorize_url": "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"},
)
