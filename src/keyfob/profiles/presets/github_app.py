"""GitHub App: app id + private key sign an app JWT, exchanged for installation tokens."""

from keyfob.profiles.registry import Field, Preset

PRESET = Preset(
    name="github_app",
    title="GitHub App (installation)",
    fields=(
        Field("GITHUB_APP_ID", "App id", secret=False),
        Field("GITHUB_APP_PRIVATE_KEY", "Private key (PEM)"),
        Field("GITHUB_INSTALLATION_ID", "Installation id", secret=False),
    ),
    defaults=lambda _: {
        "base_url": "https://api.github.com",
        "hosts": ["api.github.com"],
        "inject": {"kind": "github_app", "api_url": "https://api.github.com"},
    },
    docs_url="https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/generating-an-installation-access-token-for-a-github-app",
)
