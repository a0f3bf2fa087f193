"""How each refreshed credential kind asks for an access token, and reads the answer.

OAuth 2.0 refresh-token and client-credentials grants (RFC 6749 §6, §4.4), the JWT-bearer
grant Google service accounts use (RFC 7523, assertion signed with PyJWT) and GitHub
App installation tokens (an app JWT, RS256, exchanged at the installation's endpoint).
Nothing here opens a socket: ``TokenCall`` goes out through the fetcher the app wires in
(the proxy's egress guard), so a token endpoint is held to the upstream's address rules.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from keyfob.errors import CredentialRefreshFailed
from keyfob.profiles.model import GitHubApp, GoogleServiceAccount, OAuth2, check_token_url
from keyfob.secret import SECRET, Masked, Secret
from keyfob.text import digits

# Google's token endpoint accepts assertions valid for at most an hour (exp - iat).
ASSERTION_LIFETIME = 3600
# GitHub App JWTs: at most 10 minutes.
APP_JWT_LIFETIME = 540
# Assertions are issued this far in the past: an endpoint whose clock runs behind ours
# refuses an ``iat`` in its future.
CLOCK_SKEW = 60
# When an answer names no lifetime (GitHub's "expires_at" aside), assume this.
DEFAULT_LIFETIME = 3600
_SA_FIELDS = ("type", "client_email", "private_key", "token_uri")
# Answers that mean the refresh token is dead: RFC 6749's, Slack's and GitHub's words.
_DEAD_GRANT = frozenset({"invalid_grant", "invalid_refresh_token", "bad_refresh_token"})


@dataclass(frozen=True)
class TokenCall(Masked):
    """One POST to a token endpoint: form fields or none, and extra headers."""

    url: str
    allow_private: bool
    form: Mapping[str, str] = field(default_factory=dict, metadata=SECRET)
    headers: Mapping[str, str] = field(default_factory=dict, metadata=SECRET)


@dataclass(frozen=True)
class TokenAnswer(Masked):
    """The endpoint's status and parsed JSON body (empty when it was not JSON)."""

    status: int
    body: Mapping[str, Any] = field(metadata=SECRET)


Fetch = Callable[[TokenCall], Awaitable[TokenAnswer]]


@dataclass(frozen=True)
class Minted(Masked):
    """A new access token, its lifetime in seconds and a rotated refresh token, if any."""

    access_token: Secret[str]
    lifetime: int
    refresh_token: Secret[str] | None = None


class InvalidGrant(Exception):
    """The endpoint refused the grant itself (revoked or already used refresh token)."""


class EndpointFailed(Exception):
    """The endpoint failed in a way a retry may cure (5xx, 429, no answer)."""


def call_for(
    spec: OAuth2 | GoogleServiceAccount | GitHubApp,
    values: Mapping[str, str],
    allow_private: bool,
    now: datetime,
) -> TokenCall:
    """The request that mints an access token for ``spec`` from the set's ``values``."""
    if isinstance(spec, OAuth2):
        form = {"grant_type": spec.grant, "client_id": _need(values, spec.client_id)}
        if spec.client_secret is not None and spec.client_secret in values:
            form["client_secret"] = values[spec.client_secret]
        if spec.grant == "refresh_token":
            assert spec.refresh_token is not None
            form["refresh_token"] = _need(values, spec.refresh_token)
        if spec.scopes:
            form["scope"] = " ".join(spec.scopes)
        return TokenCall(spec.token_url, allow_private, form, {"accept": "application/json"})
    if isinstance(spec, GoogleServiceAccount):
        account = service_account(_need(values, spec.key), allow_private)
        issued = int(now.timestamp()) - CLOCK_SKEW
        claims = {
            "iss": account["client_email"],
            "scope": " ".join(spec.scopes),
            "aud": account["token_uri"],
            "iat": issued,
            "exp": issued + ASSERTION_LIFETIME,
        }
        headers = {"kid": account["private_key_id"]} if account.get("private_key_id") else None
        assertion = _sign(claims, account["private_key"], headers)
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
        return TokenCall(account["token_uri"], allow_private, form, {"accept": "application/json"})
    issued = int(now.timestamp()) - CLOCK_SKEW
    app_jwt = _sign(
        {
            "iat": issued,
            "exp": issued + CLOCK_SKEW + APP_JWT_LIFETIME,
            "iss": _need(values, spec.app_id),
        },
        _need(values, spec.private_key),
        None,
    )
    installation = _need(values, spec.installation_id)
    if not digits(installation):
        raise CredentialRefreshFailed(
            "the GitHub installation id is not a number", reason="bad_credential"
        )
    url = f"{spec.api_url.rstrip('/')}/app/installations/{installation}/access_tokens"
    return TokenCall(
        url,
        allow_private,
        {},
        {
            "authorization": f"Bearer {app_jwt}",
            "accept": "application/vnd.github+json",
            "x-github-api-version": "2022-11-28",
        },
    )


def read_answer(
    spec: OAuth2 | GoogleServiceAccount | GitHubApp, answer: TokenAnswer, now: datetime
) -> Minted:
    """The minted token, or ``InvalidGrant`` / ``EndpointFailed`` / a refresh failure."""
    body = answer.body
    if answer.status >= 500 or answer.status == 429:
        raise EndpointFailed(f"status {answer.status}")
    error = body.get("error") if isinstance(body.get("error"), str) else None
    # Slack and GitHub answer some refusals with 200 and an "error" (Slack: "ok": false).
    if answer.status >= 400 or (error and not body.get("access_token")) or body.get("ok") is False:
        if error in _DEAD_GRANT or (isinstance(spec, GitHubApp) and answer.status == 401):
            raise InvalidGrant(error or "unauthorized")
        raise CredentialRefreshFailed(
            "the token endpoint refused the request",
            reason="refused",
            upstream_status=answer.status,
            error=(error or "")[:64] or None,
        )
    if isinstance(spec, GitHubApp):
        token = body.get("token")
        lifetime = _until(body.get("expires_at"), now)
    else:
        token = body.get("access_token")
        kind = str(body.get("token_type", "bearer")).lower()
        # Slack names its bearer tokens by whom they act for.
        if kind not in ("bearer", "bot", "user"):
            raise CredentialRefreshFailed(
                "the token endpoint issued a token that is not a bearer token",
                reason="not_bearer",
            )
        lifetime = _lifetime(body.get("expires_in"))
    if not isinstance(token, str) or not token or any(c in token for c in "\r\n\x00 "):
        raise CredentialRefreshFailed(
            "the token endpoint's answer holds no usable access token", reason="no_token"
        )
    rotated = body.get("refresh_token")
    fresh = Secret(rotated) if isinstance(rotated, str) and rotated else None
    return Minted(Secret(token), lifetime, fresh)


def service_account(raw: str, allow_private: bool) -> dict[str, str]:
    """The fields of a service-account key file; ``ValueError(field, why)`` if malformed."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise ValueError("", "is not JSON (paste the whole key file)") from None
    if not isinstance(data, dict):
        raise ValueError("", "is not a JSON object")
    for name in _SA_FIELDS:
        if not isinstance(data.get(name), str) or not data[name]:
            raise ValueError(name, "is missing or not a string")
    if data["type"] != "service_account":
        raise ValueError("type", 'must be "service_account"')
    if "@" not in data["client_email"]:
        raise ValueError("client_email", "is not an email address")
    try:
        check_token_url(data["token_uri"], allow_private)
    except ValueError as exc:
        raise ValueError("token_uri", str(exc)) from None
    if urlsplit(data["token_uri"]).query:
        raise ValueError("token_uri", "may not have a query")
    import jwt  # on first use (see _sign)

    try:
        jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).prepare_key(
            data["private_key"]
        )
    except (jwt.InvalidKeyError, ValueError, TypeError):
        raise ValueError("private_key", "is not an RSA private key in PEM form") from None
    if "PRIVATE KEY" not in data["private_key"]:
        raise ValueError("private_key", "is not an RSA private key in PEM form")
    return {k: v for k, v in data.items() if isinstance(v, str)}


def check_private_key(pem: str) -> None:
    """Raise ``ValueError`` unless ``pem`` is an RSA private key (GitHub App keys are)."""
    if "PRIVATE KEY" not in pem:
        raise ValueError("is not an RSA private key in PEM form")
    import jwt  # on first use, as below

    try:
        jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).prepare_key(pem)
    except (jwt.InvalidKeyError, ValueError, TypeError):
        raise ValueError("is not an RSA private key in PEM form") from None


def _sign(claims: dict[str, Any], pem: str, headers: dict[str, str] | None) -> str:
    # PyJWT (and the X.509 parts of cryptography it loads) is imported on first use: a
    # server that refreshes no JWT-signed credential never holds it (with X.509, ~1.2 MB idle).
    import jwt

    try:
        return jwt.encode(claims, pem, algorithm="RS256", headers=headers)
    except (jwt.InvalidKeyError, ValueError, TypeError):
        raise CredentialRefreshFailed(
            "the stored private key cannot sign", reason="bad_credential"
        ) from None


def _need(values: Mapping[str, str], key: str) -> str:
    value = values.get(key)
    if not value:
        raise CredentialRefreshFailed(
            f"the secret set lacks {key}, which its profile names", reason="bad_credential"
        )
    return value


def _lifetime(value: object) -> int:
    if isinstance(value, bool):
        return DEFAULT_LIFETIME
    if isinstance(value, int | float) and value > 0:
        return int(value)
    if isinstance(value, str) and digits(value, 9) and int(value) > 0:
        return int(value)
    return DEFAULT_LIFETIME


def _until(value: object, now: datetime) -> int:
    if not isinstance(value, str):
        return DEFAULT_LIFETIME
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return DEFAULT_LIFETIME
    return max(1, int((when - now).total_seconds()))


def code_call(
    token_url: str,
    *,
    client_id: str,
    client_secret: str,
    code: str,
    verifier: str,
    redirect_uri: str,
    allow_private: bool,
) -> TokenCall:
    """The authorization-code exchange (RFC 6749 §4.1.3) with the PKCE verifier (RFC 7636)."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": client_id,
        "client_secret": client_secret,
        "code_verifier": verifier,
    }
    return TokenCall(token_url, allow_private, form, {"accept": "application/json"})


def refresh_token_of(answer: TokenAnswer) -> Secret[str]:
    """The refresh token an authorization-code answer carries, or a refresh failure."""
    body = answer.body
    if answer.status >= 400 or "error" in body:
        error = body.get("error") if isinstance(body.get("error"), str) else None
        raise CredentialRefreshFailed(
            "the provider refused the authorization code",
            reason="refused",
            error=(error or "")[:64] or None,
        )
    token = body.get("refresh_token")
    if not isinstance(token, str) or not token:
        raise CredentialRefreshFailed(
            "the provider issued no refresh token (ask for offline access)",
            reason="no_refresh_token",
        )
    return Secret(token)
