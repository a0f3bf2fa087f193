"""The injection profile model: upstream base URL, allowed hosts and the injection kind.

Profiles are chosen by operators only. Templates name keys (``{OPENAI_API_KEY}``); they
never hold values. ``http://`` upstreams and private/loopback hosts are accepted only
with ``allow_private_upstream`` (tests and on-prem), which is off by default.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from keyfob.addresses import PRIVATE, parse_host, refusal
from keyfob.names import KEY_NAME_RE, SLUG_RE

_HOST_RE = re.compile(
    r"^(?=.{1,253}\Z)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\Z"
)
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}\Z")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
_FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "proxy-authorization",
        "proxy-authenticate",
        "cookie",
    }
)


def check_slug(value: str, what: str = "segment") -> str:
    if not SLUG_RE.match(value):
        raise ValueError(
            f"{what} must be 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter "
            "or digit"
        )
    return value


def check_key_name(value: str) -> str:
    if not KEY_NAME_RE.match(value):
        raise ValueError(
            "key names are ENV-style: A-Z, 0-9 and '_', not starting with a digit, "
            "at most 128 characters"
        )
    return value


def template_keys(template: str) -> list[str]:
    """The key names a template refers to; raises on anything but ``{KEY}`` placeholders."""
    names = _PLACEHOLDER_RE.findall(template)
    leftover = _PLACEHOLDER_RE.sub("", template)
    if "{" in leftover or "}" in leftover:
        raise ValueError("unbalanced braces in template")
    if any(c in template for c in "\r\n\x00"):
        raise ValueError("templates may not contain CR, LF or NUL")
    for name in names:
        check_key_name(name)
    if not names:
        raise ValueError("a template must name at least one key, like {API_KEY}")
    return names


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Bearer(_Strict):
    kind: Literal["bearer"]
    key: str

    _key = field_validator("key")(check_key_name)

    def keys(self) -> list[str]:
        return [self.key]


class Header(_Strict):
    kind: Literal["header"]
    name: str
    template: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _HEADER_NAME_RE.match(value) or value.lower() in _FORBIDDEN_HEADERS:
            raise ValueError("not a header name keyfob may inject")
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        template_keys(value)
        return value

    def keys(self) -> list[str]:
        return template_keys(self.template)


class Basic(_Strict):
    kind: Literal["basic"]
    username: str
    password: str

    @field_validator("username", "password")
    @classmethod
    def _template(cls, value: str) -> str:
        template_keys(value)
        return value

    def keys(self) -> list[str]:
        return template_keys(self.username) + template_keys(self.password)


class Query(_Strict):
    kind: Literal["query"]
    param: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    key: str

    _key = field_validator("key")(check_key_name)

    def keys(self) -> list[str]:
        return [self.key]


class AwsSigV4(_Strict):
    kind: Literal["aws_sigv4"]
    access_key_id: str = "AWS_ACCESS_KEY_ID"
    secret_access_key: str = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - a key name
    session_token: str | None = None
    region: str = Field(pattern=r"^[a-z0-9-]{1,32}$")
    service: str = Field(pattern=r"^[a-z0-9-]{1,64}$")

    _keys = field_validator("access_key_id", "secret_access_key")(check_key_name)

    def keys(self) -> list[str]:
        names = [self.access_key_id, self.secret_access_key]
        return [*names, self.session_token] if self.session_token else names


_SCOPE_RE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,512}\Z")


def _scopes(scopes: list[str]) -> list[str]:
    for scope in scopes:
        if not _SCOPE_RE.match(scope):
            raise ValueError("scopes are printable ASCII without spaces, quotes or backslashes")
    return scopes


class OAuth2(_Strict):
    """An OAuth 2.0 client: keyfob gets access tokens from ``token_url`` and injects them."""

    kind: Literal["oauth2"]
    grant: Literal["refresh_token", "client_credentials"]
    token_url: str
    client_id: str = "CLIENT_ID"
    client_secret: str | None = "CLIENT_SECRET"  # noqa: S105 - a key name
    refresh_token: str | None = None
    scopes: list[str] = Field(default_factory=list, max_length=64)

    _keys = field_validator("client_id")(check_key_name)
    _scope_list = field_validator("scopes")(_scopes)

    @field_validator("client_secret", "refresh_token")
    @classmethod
    def _optional_key(cls, value: str | None) -> str | None:
        return None if value is None else check_key_name(value)

    @model_validator(mode="after")
    def _grant_keys(self) -> OAuth2:
        if self.grant == "refresh_token" and self.refresh_token is None:
            raise ValueError("the refresh_token grant names the key that holds the refresh token")
        if self.grant == "client_credentials" and self.client_secret is None:
            raise ValueError("the client_credentials grant names the client_secret key")
        return self

    def keys(self) -> list[str]:
        refresh = self.refresh_token if self.grant == "refresh_token" else None
        return [n for n in (self.client_id, self.client_secret, refresh) if n is not None]

    def token_urls(self) -> list[str]:
        return [self.token_url]


class GoogleServiceAccount(_Strict):
    """A Google service-account JSON key: keyfob signs a JWT assertion for an access token."""

    kind: Literal["google_service_account"]
    key: str = "SERVICE_ACCOUNT_JSON"
    scopes: list[str] = Field(min_length=1, max_length=64)

    _key = field_validator("key")(check_key_name)
    _scope_list = field_validator("scopes")(_scopes)

    def keys(self) -> list[str]:
        return [self.key]

    def token_urls(self) -> list[str]:
        # The token URL is in the key file; it is checked when the file is stored.
        return []


class GitHubApp(_Strict):
    """A GitHub App: keyfob signs an app JWT and exchanges it for an installation token."""

    kind: Literal["github_app"]
    app_id: str = "GITHUB_APP_ID"
    private_key: str = "GITHUB_APP_PRIVATE_KEY"
    installation_id: str = "GITHUB_INSTALLATION_ID"
    api_url: str = "https://api.github.com"

    _keys = field_validator("app_id", "private_key", "installation_id")(check_key_name)

    def keys(self) -> list[str]:
        return [self.app_id, self.private_key, self.installation_id]

    def token_urls(self) -> list[str]:
        return [self.api_url]


REFRESHED = (OAuth2, GoogleServiceAccount, GitHubApp)

Inject = Annotated[
    Bearer | Header | Basic | Query | AwsSigV4 | OAuth2 | GoogleServiceAccount | GitHubApp,
    Field(discriminator="kind"),
]


def _host_refusal(host: str) -> str | None:
    """Why a (canonical) profile host is not a public address, or None."""
    address = parse_host(host)
    if address is None:
        return "loopback" if host == "localhost" or host.endswith(".localhost") else None
    return refusal(address)


def _canonical_host(host: str) -> str:
    lowered = host.lower()
    try:
        address = parse_host(lowered)
    except ValueError as exc:
        raise ValueError(f"{host!r} is not a host name or a canonical IP address: {exc}") from None
    if address is not None:
        return str(address)
    if not _HOST_RE.match(lowered):
        raise ValueError(f"{host!r} is not a host name")
    return lowered


def check_token_url(url: str, allow_private: bool) -> str:
    """A token endpoint is held to the upstream's rule: public HTTPS unless allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("token_url must be an absolute https:// URL")
    if parts.username or parts.password or parts.fragment:
        raise ValueError("token_url may not carry user info or a fragment")
    if parts.scheme == "http" and not allow_private:
        raise ValueError("an http:// token_url needs allow_private_upstream (tests, on-prem)")
    host = _canonical_host(parts.hostname)
    reason = _host_refusal(host)
    if reason is not None and reason not in PRIVATE:
        raise ValueError(f"token_url host {host} is never permitted ({reason})")
    if reason is not None and not allow_private:
        raise ValueError(
            f"token_url host {host} is not a public address ({reason}); set allow_private_upstream"
        )
    return url


class Profile(_Strict):
    """A resolved profile as stored with a set and shown wherever the set is shown."""

    preset: str | None = None
    base_url: str
    hosts: list[str] = Field(min_length=1, max_length=16)
    inject: Inject
    allow_private_upstream: bool = False
    scrub: bool = True

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        return [_canonical_host(host) for host in hosts]

    @model_validator(mode="after")
    def _base_url(self) -> Profile:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(
                "base_url must be an absolute https:// (or, for private upstreams, http://) URL"
            )
        if parts.username or parts.password:
            raise ValueError("base_url may not carry user info")
        if parts.query or parts.fragment:
            raise ValueError("base_url may not have a query or fragment")
        if parts.scheme == "http" and not self.allow_private_upstream:
            raise ValueError("http:// upstreams need allow_private_upstream (tests, on-prem)")
        if parts.port is None and parts.netloc.endswith(":"):
            raise ValueError("base_url has an empty port")
        if _canonical_host(parts.hostname) not in self.hosts:
            raise ValueError("the base_url host must be one of hosts")
        if isinstance(self.inject, REFRESHED):
            for url in self.inject.token_urls():
                check_token_url(url, self.allow_private_upstream)
        for host in self.hosts:
            reason = _host_refusal(host)
            if reason is not None and reason not in PRIVATE:
                raise ValueError(f"{host} is never a permitted upstream ({reason})")
            if reason is not None and not self.allow_private_upstream:
                raise ValueError(
                    f"{host} is not a public address ({reason}); set allow_private_upstream"
                )
        return self

    def referenced_keys(self) -> list[str]:
        return self.inject.keys()

    @property
    def refreshed(self) -> bool:
        """True when keyfob mints the injected token itself (OAuth, service accounts)."""
        return isinstance(self.inject, REFRESHED)
