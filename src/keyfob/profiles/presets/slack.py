"""Slack: bot token as bearer to slack.com (Web API)."""

from keyfob.profiles.registry import Field, Preset

PRESET = Preset(
    name="slack",
    title="Slack",
    fields=(Field("SLACK_BOT_TOKEN", "Bot token"),),
    defaults=lambda _: {
        "base_url": "https://slack.com",
        "hosts": ["slack.com"],
        "inject": {"kind": "bearer", "key": "SLACK_BOT_TOKEN"},
    },
    docs_url="https://api.slack.com/authentication/token-types",
)
