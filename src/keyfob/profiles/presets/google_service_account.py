"""Google APIs as a service account: the JSON key signs a JWT assertion (RFC 7523)."""

from collections.abc import Mapping
from typing import Any

from keyfob.profiles.registry import Field, Preset, scope_list

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


def _defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "base_url": "https://www.googleapis.com",
        "hosts": ["www.googleapis.com"],
        "inject": {
            "kind": "google_service_account",
            "key": "SERVICE_ACCOUNT_JSON",
            "scopes": scope_list(options.get("scopes"), SCOPES),
        },
    }


PRESET = Preset(
    name="google_service_account",
    title="Google APIs (service account)",
    fields=(Field("SERVICE_ACCOUNT_JSON", "Service-account key file (JSON)"),),
    defaults=_defaults,
    options=("scopes",),
    docs_url="https://developers.google.com/identity/protocols/oauth2/service-account",
)
