"""Twilio: HTTP basic auth (account SID, auth token) to api.twilio.com."""

from keyfob.profiles.registry import Field, Preset

PRESET = Preset(
    name="twilio",
    title="Twilio",
    fields=(
        Field("TWILIO_ACCOUNT_SID", "Account SID", secret=False),
        Field("TWILIO_AUTH_TOKEN", "Auth token"),
    ),
    defaults=lambda _: {
        "base_url": "https://api.twilio.com",
        "hosts": ["api.twilio.com"],
        "inject": {
            "kind": "basic",
            "username": "{TWILIO_ACCOUNT_SID}",
            "password": "{TWILIO_AUTH_TOKEN}",
        },
    },
    docs_url="https://www.twilio.com/docs/usage/api",
)
