"""The OAuth and service-account presets resolve to valid profiles with their token endpoint."""

from __future__ import annotations

import pytest

from keyfob.profiles import resolve
from keyfob.profiles.model import GitHubApp, GoogleServiceAccount, OAuth2


@pytest.mark.parametrize(
    ("preset", "kind", "token_host"),
    [
        ("google", OAuth2, "oauth2.googleapis.com"),
        ("microsoft_graph", OAuth2, "login.microsoftonline.com"),
        ("slack_oauth", OAuth2, "slack.com"),
        ("github_oauth", OAuth2, "github.com"),
        ("google_service_account", GoogleServiceAccount, None),
        ("github_app", GitHubApp, "api.github.com"),
    ],
)
def test_each_refreshed_preset_names_its_token_endpoint(
    preset: str, kind: type, token_host: str | None
) -> None:
    profile = resolve({"preset": preset})
    assert isinstance(profile.inject, kind)
    assert profile.refreshed
    urls = profile.inject.token_urls()  # type: ignore[union-attr]
    if token_host is not None:
        assert urls
        assert (urls[0] + "/").startswith(f"https://{token_host}/")


def test_microsoft_tenant_goes_into_the_token_url() -> None:
    profile = resolve({"preset": "microsoft_graph", "tenant": "contoso.onmicrosoft.com"})
    assert isinstance(profile.inject, OAuth2)
    assert "/contoso.onmicrosoft.com/oauth2/v2.0/token" in profile.inject.token_url


def test_generic_oauth_takes_the_token_url_and_grant() -> None:
    profile = resolve(
        {
            "preset": "oauth",
            "grant": "client_credentials",
            "token_url": "https://auth.example.com/token",
            "scopes": ["a"],
            "base_url": "https://api.example.com",
            "hosts": ["api.example.com"],
        }
    )
    assert isinstance(profile.inject, OAuth2)
    assert profile.inject.grant == "client_credentials"
    assert profile.referenced_keys() == ["CLIENT_ID", "CLIENT_SECRET"]


def test_a_static_preset_is_not_refreshed() -> None:
    assert not resolve({"preset": "openai"}).refreshed
