"""Shipping settings: bad targets are refused at start-up, secrets never print."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from keyfob.settings import Settings
from keyfob.vault.shipping import Policy, configured_sinks


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("audit_ship_webhook", "http://siem.example.com/hook"),
        ("audit_ship_webhook", "https://user:pw@siem.example.com/hook"),
        ("audit_ship_webhook", "siem.example.com/hook"),
        ("audit_ship_syslog", "127.0.0.1:514"),
        ("audit_ship_syslog", "tcps://127.0.0.1:6514"),
        ("audit_ship_syslog", "udp://127.0.0.1"),
    ],
)
def test_a_bad_target_is_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(**{field: value})
    assert "pw@" not in str(refused.value.errors(include_input=False))


def test_sinks_and_backoff_from_settings() -> None:
    settings = Settings(
        audit_ship_file="/tmp/x.jsonl",
        audit_ship_webhook="https://siem.example.com/hook",
        audit_ship_webhook_token="bearer-canary-55",
        audit_ship_retry_initial=0.5,
        audit_ship_retry_max=4,
    )
    assert configured_sinks(settings) == ["file", "webhook"]
    assert configured_sinks(Settings()) == []
    policy = Policy.from_settings(settings)
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]
    assert "bearer-canary-55" not in repr(settings)
