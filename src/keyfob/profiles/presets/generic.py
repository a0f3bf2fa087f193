"""Generic: any HTTPS API; the operator gives base_url, hosts and the injection."""

from keyfob.profiles.registry import Field, Preset

PRESET = Preset(
    name="generic",
    title="Other (generic API key)",
    fields=(Field("API_KEY", "API key"),),
    defaults=lambda _: {"inject": {"kind": "bearer", "key": "API_KEY"}},
)
