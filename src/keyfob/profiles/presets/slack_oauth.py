"""Slack with token rotation: a rotating refresh token → 12-hour access tokens."""

from collections.abc import Mapping
from typing import Any

from keyfob.profiles.registry import Field, Preset, scope_list


def _defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "base_url": "https://slack.com",
        "hosts": ["slack.com"],
        "inject": {
            "kind": "oauth2",
            "grant": "refresh_token",
            "token_url": "https://slack.com/api/oauth.v2.access",
            "client_id": "CLIENT_ID",
            "client_secret": "CLIENT_SECRET",
            "refresh_token": "REFRESH_TOKEN",
            "scopes": scope_list(options.get("scopes"), []),
        },
    }


PRESET = Preset(
    name="slack_oauth",
    title="Slack (rotating OAuth tokens)",
    fields=(
        Field("CLIENT_ID", "Client id", secret=False),
        Field("CLIENT_SECRET", "Client secret"),
        Field("REFRESH_TOKEN", "Refresh token"),
    ),
    defaults=_defaults,
    options=("scopes",),
    docs_url="https://api.slack.com/authentication/rotation",
    extra={"authorize_url": "https://slack.com/oauth/v2/authorize"},
)
