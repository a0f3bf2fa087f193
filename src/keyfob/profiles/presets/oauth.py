"""Generic OAuth 2.0: any provider; the operator gives base_url, hosts and token_url."""

from collections.abc import Mapping
from typing import Any

from keyfob.profiles.registry import Field, Preset, scope_list


def _defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "inject": {
            "kind": "oauth2",
            "grant": str(options.get("grant") or "refresh_token"),
            "token_url": str(options.get("token_url") or ""),
            "client_id": "CLIENT_ID",
            "client_secret": "CLIENT_SECRET",
            "refresh_token": "REFRESH_TOKEN",
            "scopes": scope_list(options.get("scopes"), []),
        },
    }


PRESET = Preset(
    name="oauth",
    title="Other (generic OAuth 2.0)",
    fields=(
        Field("CLIENT_ID", "Client id", secret=False),
        Field("CLIENT_SECRET", "Client secret"),
        Field("REFRESH_TOKEN", "Refresh token", required=False),
    ),
    defaults=_defaults,
    options=("token_url", "scopes", "grant", "authorize_url"),
)
