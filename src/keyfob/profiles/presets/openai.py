"""OpenAI: bearer token to api.openai.com."""

from keyfob.profiles.registry import Field, Preset

PRESET = Preset(
    name="openai",
    title="OpenAI",
    fields=(Field("OPENAI_API_KEY", "API key"),),
    defaults=lambda _: {
        "base_url": "https://api.openai.com",
        "hosts": ["api.openai.com"],
        "inject": {"kind": "bearer", "key": "OPENAI_API_KEY"},
    },
    docs_url="https://platform.openai.com/docs/api-reference/authentication",
    env={"OPENAI_BASE_URL": "{proxy_url}/v1", "OPENAI_API_KEY": "{lease}"},
)
