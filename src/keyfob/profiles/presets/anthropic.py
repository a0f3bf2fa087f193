"""Anthropic: ``x-api-key`` header to api.anthropic.com."""

from keyfob.profiles.registry import Field, Preset

PRESET = Preset(
    name="anthropic",
    title="Anthropic",
    fields=(Field("ANTHROPIC_API_KEY", "API key"),),
    defaults=lambda _: {
        "base_url": "https://api.anthropic.com",
        "hosts": ["api.anthropic.com"],
        "inject": {"kind": "header", "name": "x-api-key", "template": "{ANTHROPIC_API_KEY}"},
    },
    docs_url="https://docs.anthropic.com/en/api/getting-started",
    env={"ANTHROPIC_BASE_URL": "{proxy_url}", "ANTHROPIC_API_KEY": "{lease}"},
)
