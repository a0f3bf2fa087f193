"""GitHub: token as bearer to api.github.com."""

from keyfob.profiles.registry import Field, Preset

PRESET = Preset(
    name="github",
    title="GitHub",
    fields=(Field("GITHUB_TOKEN", "Personal access or app token"),),
    defaults=lambda _: {
        "base_url": "https://api.github.com",
        "hosts": ["api.github.com"],
        "inject": {"kind": "bearer", "key": "GITHUB_TOKEN"},
    },
    docs_url="https://docs.github.com/en/rest/authentication",
    env={"GITHUB_API_URL": "{proxy_url}", "GITHUB_TOKEN": "{lease}", "GH_TOKEN": "{lease}"},
)
