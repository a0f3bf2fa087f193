"""GitHub OAuth app (or a GitHub App's user tokens): expiring tokens refreshed by keyfob."""

from keyfob.profiles.registry import Field, Preset

PRESET = Preset(
    name="github_oauth",
    title="GitHub (OAuth app)",
    fields=(
        Field("CLIENT_ID", "Client id", secret=False),
        Field("CLIENT_SECRET", "Client secret"),
        Field("REFRESH_TOKEN", "Refresh token"),
    ),
    defaults=lambda _: {
        "base_url": "https://api.github.com",
        "hosts": ["api.github.com"],
        "inject": {
            "kind": "oauth2",
            "grant": "refresh_token",
            "token_url": "https://github.com/login/oauth/access_token",
            "client_id": "CLIENT_ID",
            "client_secret": "CLIENT_SECRET",
            "refresh_token": "REFRESH_TOKEN",
        },
    },
    docs_url="https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens",
    extra={"authorize_url": "https://github.com/login/oauth/authorize"},
)
