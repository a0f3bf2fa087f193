"""Every error keyfob raises on purpose, each with a stable problem type.

    KeyfobError                      base; ``type`` and ``status`` are stable
    ├── InvalidRequest        400    malformed JSON, header or parameter
    │   └── ForbiddenHeader   400    proxy: a header that would steer the upstream
    ├── Unauthorized          401    missing, unknown or revoked token
    ├── ProxyAuthRequired     407    forward proxy: no usable Proxy-Authorization
    ├── Forbidden             403    authenticated but not allowed
    ├── NotFound              404    no such resource
    ├── MethodNotAllowed      405
    ├── Conflict              409    name taken, lost update, wrong state
    ├── MisdirectedRequest    421    the ``Host`` is not one this server answers to
    ├── PayloadTooLarge       413
    ├── HeadersTooLarge       431    the request's headers are too many or too long
    ├── TooManyRequests       429    rate limit; ``retry_after`` seconds
    │   └── BudgetExceeded    429    a budget has no room for the request; names it
    ├── ValidationFailed      422    a field is invalid; ``errors`` lists which
    ├── BadGateway            502    the upstream failed or may not be reached (proxy)
    │   └── CredentialRefreshFailed 502  no access token could be had from the token endpoint
    ├── Unavailable           503    database or audit log not writable
    ├── GatewayTimeout        504    the upstream did not answer in time (proxy)
    ├── DecryptionFailed      500    one opaque error for every failure to open
    └── ConfigurationError    ---    bad settings or key material at start-up

The HTTP status is mapped here and only here; the API renders ``problem()``.
No message may contain a secret value: callers pass names, never values.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

PROBLEM_PREFIX = "urn:keyfob:problem:"
PROBLEM_JSON = "application/problem+json"


class KeyfobError(Exception):
    """Base class: a stable problem ``slug``, an HTTP ``status`` and a safe detail."""

    slug: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.title
        self.extra = extra
        super().__init__(self.detail)

    @property
    def type(self) -> str:
        return PROBLEM_PREFIX + self.slug

    def problem(self, request_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extra)
        if request_id is not None:
            body["request_id"] = request_id
        return body

    def headers(self) -> dict[str, str]:
        """Response headers the problem implies (``WWW-Authenticate``, ``Retry-After``)."""
        headers = {"WWW-Authenticate": 'Bearer realm="keyfob"'} if self.status == 401 else {}
        if self.extra.get("retry_after") is not None:
            headers["Retry-After"] = str(self.extra["retry_after"])
        return headers

    def render(self, request_id: str | None = None) -> bytes:
        """The ``application/problem+json`` body, as every edge sends it."""
        return json.dumps(self.problem(request_id), separators=(",", ":")).encode()


class InvalidRequest(KeyfobError):
    slug, status, title = "invalid-request", 400, "Invalid request"


class ForbiddenHeader(InvalidRequest):
    """The agent sent a header that names another resource upstream (``x-amz-copy-source``)."""

    slug, status, title = "forbidden-header", 400, "Forbidden header"


class Unauthorized(KeyfobError):
    slug, status, title = "unauthorized", 401, "Unauthorized"


class ProxyAuthRequired(KeyfobError):
    """The forward proxy's 401: ``Proxy-Authorization`` missing, unknown or revoked."""

    slug, status, title = "proxy-auth-required", 407, "Proxy authentication required"

    def headers(self) -> dict[str, str]:
        return {"Proxy-Authenticate": 'Basic realm="keyfob"'}


class Forbidden(KeyfobError):
    slug, status, title = "forbidden", 403, "Forbidden"


class NotFound(KeyfobError):
    slug, status, title = "not-found", 404, "Not found"


class MethodNotAllowed(KeyfobError):
    slug, status, title = "method-not-allowed", 405, "Method not allowed"


class Conflict(KeyfobError):
    slug, status, title = "conflict", 409, "Conflict"


class MisdirectedRequest(KeyfobError):
    slug, status, title = "misdirected-request", 421, "Misdirected request"


class PayloadTooLarge(KeyfobError):
    slug, status, title = "payload-too-large", 413, "Payload too large"


class HeadersTooLarge(KeyfobError):
    slug, status, title = "headers-too-large", 431, "Request header fields too large"


class TooManyRequests(KeyfobError):
    slug, status, title = "rate-limited", 429, "Too many requests"


class BudgetExceeded(TooManyRequests):
    """A grant's or lease's budget cannot hold the request's worst case; ``budget`` names
    it and ``remaining`` says what is left."""

    slug, status, title = "budget-exceeded", 429, "Budget exceeded"


class ValidationFailed(KeyfobError):
    slug, status, title = "validation-failed", 422, "Validation failed"


class BadGateway(KeyfobError):
    """The upstream could not be reached or failed; never carries upstream detail."""

    slug, status, title = "bad-gateway", 502, "Bad gateway"


class CredentialRefreshFailed(BadGateway):
    """The token endpoint refused, failed or timed out; ``reason`` says which."""

    slug, status, title = "credential-refresh-failed", 502, "Credential refresh failed"


class Unavailable(KeyfobError):
    slug, status, title = "unavailable", 503, "Service unavailable"


class GatewayTimeout(KeyfobError):
    slug, status, title = "gateway-timeout", 504, "Gateway timeout"


class DecryptionFailed(KeyfobError):
    """Stored ciphertext did not open; deliberately says nothing about why."""

    slug, status, title = "decryption-failed", 500, "Decryption failed"


class ConfigurationError(KeyfobError):
    """Settings or key material keep keyfob from starting; the message says how to fix it."""

    slug, status, title = "configuration", 500, "Configuration error"


ALL_ERRORS: tuple[type[KeyfobError], ...] = (
    KeyfobError,
    InvalidRequest,
    ForbiddenHeader,
    Unauthorized,
    ProxyAuthRequired,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    MisdirectedRequest,
    PayloadTooLarge,
    HeadersTooLarge,
    TooManyRequests,
    BudgetExceeded,
    ValidationFailed,
    BadGateway,
    CredentialRefreshFailed,
    Unavailable,
    GatewayTimeout,
    DecryptionFailed,
    ConfigurationError,
)


def for_status(status: int) -> type[KeyfobError]:
    """The error class for an HTTP status (used to translate framework errors)."""
    for cls in ALL_ERRORS:
        if cls.status == status and cls is not KeyfobError and cls is not ConfigurationError:
            return cls
    return InvalidRequest if 400 <= status < 500 else KeyfobError
