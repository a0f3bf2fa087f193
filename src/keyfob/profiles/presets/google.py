"""Google APIs with a user's OAuth consent: refresh token → access token (bearer)."""

from collections.abc import Mapping
from typing import Any

from keyfob.profiles.registry import Field, Preset, scope_list

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


def _defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "base_url": "https://www.googleapis.com",
        "hosts": ["www.googleapis.com"],
        "inject": {
            "kind": "oauth2",
            "grant": "refresh_token",
            "token_url": "https://oauth2.googleapis.com/token",
            "client_id": "CLIENT_ID",
            "client_secret": "CLIENT_SECRET",
            "refresh_token": "REFRESH_TOKEN",
            "scopes": scope_list(options.get("scopes"), SCOPES),
        },
    }


PRESET = Preset(
    name="google",
    title="Google APIs (OAuth)",
    fields=(
        Field("CLIENT_ID", "OAuth client id", secret=False),
        Field("CLIENT_SECRET", "OAuth client secret"),
        Field("REFRESH_TOKEN", "Refresh token"),
    ),
    defaults=_defaults,
    options=("scopes",),
    docs_url="https://developers.google.com/identity/protocols/oauth2/web-server",
    extra={
        "authorize_url": "https://accounts.google.com/o/oauth2/v2/auth",
        "authorize_params": {"access_type": "offline", "prompt": "consent"},
    },
)
