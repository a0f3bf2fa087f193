"""What the SDK raises: one exception per cause an agent can act on, each carrying the
problem+json ``type`` keyfob answered with (or an ``urn:keyfob:sdk:…`` type of its own).

    KeyfobError                   base: ``type``, ``status``, ``detail``, ``reason``, ``problem``
    ├── Unreachable               no answer from keyfob (refused, timed out, not HTTP)
    ├── AuthenticationFailed      401: the token is missing, unknown, revoked or disabled
    ├── InvalidRequest            400/422: a malformed name, scope, TTL, count …
    ├── NotFound                  404: no such lease, request, grant …
    ├── Conflict                  409: already revoked, already decided …
    ├── Denied                    403: a rule said no; ``reason`` says which
    │   ├── NotGranted            no usable grant for this agent and set
    │   │   └── UnknownSecretSet  … and no grant of the agent lists the set at all
    │   ├── LeaseExpired          the lease (or its grant) has expired
    │   ├── LeaseExhausted        the lease (or its grant) has no uses left
    │   └── LeaseRevoked          the lease, its grant or its set is gone
    ├── RateLimited               429: ``retry_after`` seconds
    ├── ApprovalRequired          the grant needs a human: ``request_id`` to wait on
    ├── ApprovalDenied            an operator denied the request, or it expired undecided
    ├── ApprovalTimeout           still pending when the wait ended
    └── ServerError               5xx, or an answer the SDK cannot read

Messages carry names and reasons, never a token or a secret value.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from keyfob.errors import PROBLEM_PREFIX
from keyfob.server_trust import certificate_problem

SDK_PREFIX = "urn:keyfob:sdk:"


class KeyfobError(Exception):
    """Base class: ``type`` is the problem type, ``reason`` a lease denial's stable reason."""

    default_type = SDK_PREFIX + "error"

    def __init__(
        self,
        detail: str,
        *,
        type: str | None = None,
        status: int | None = None,
        reason: str | None = None,
        problem: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.type = type or self.default_type
        self.status = status
        self.reason = reason
        self.problem = problem or {}


class Unreachable(KeyfobError):
    default_type = SDK_PREFIX + "unreachable"


class AuthenticationFailed(KeyfobError):
    default_type = PROBLEM_PREFIX + "unauthorized"


class InvalidRequest(KeyfobError):
    default_type = PROBLEM_PREFIX + "validation-failed"


class NotFound(KeyfobError):
    default_type = PROBLEM_PREFIX + "not-found"


class Conflict(KeyfobError):
    default_type = PROBLEM_PREFIX + "conflict"


class Denied(KeyfobError):
    default_type = PROBLEM_PREFIX + "forbidden"


class NotGranted(Denied):
    pass


class UnknownSecretSet(NotGranted):
    """keyfob does not tell an agent whether a set it may not use exists: "unknown" means
    unknown to this agent (no grant of its lists the set)."""


class LeaseExpired(Denied):
    pass


class LeaseExhausted(Denied):
    pass


class LeaseRevoked(Denied):
    pass


class RateLimited(KeyfobError):
    default_type = PROBLEM_PREFIX + "rate-limited"

    @property
    def retry_after(self) -> int | None:
        value = self.problem.get("retry_after")
        return value if isinstance(value, int) else None


class ApprovalRequired(KeyfobError):
    default_type = SDK_PREFIX + "approval-required"

    @property
    def request_id(self) -> str:
        return str(self.problem.get("id", ""))


class ApprovalDenied(KeyfobError):
    default_type = SDK_PREFIX + "approval-denied"


class ApprovalTimeout(KeyfobError):
    default_type = SDK_PREFIX + "approval-timeout"


class ServerError(KeyfobError):
    default_type = PROBLEM_PREFIX + "internal"


_BY_REASON: dict[str, type[Denied]] = {
    "not_granted": NotGranted,
    "expired": LeaseExpired,
    "exhausted": LeaseExhausted,
    "revoked": LeaseRevoked,
}
_BY_STATUS: dict[int, type[KeyfobError]] = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    403: Denied,
    404: NotFound,
    409: Conflict,
    422: InvalidRequest,
    429: RateLimited,
}


def problem_of(response: httpx.Response) -> dict[str, Any] | None:
    """The problem+json body of a keyfob answer, or None (an upstream's own error)."""
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    if not isinstance(body, dict) or not str(body.get("type", "")).startswith(PROBLEM_PREFIX):
        return None
    return body


def from_response(response: httpx.Response) -> KeyfobError:
    """The typed exception for a failed keyfob answer (API or proxy denial)."""
    status = response.status_code
    problem = problem_of(response)
    if problem is None:
        cls = _BY_STATUS.get(status, ServerError)
        return cls(
            f"keyfob answered HTTP {status} {response.reason_phrase}".rstrip(), status=status
        )
    reason = problem.get("reason")
    reason = reason if isinstance(reason, str) else None
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else InvalidRequest)
    if status == 403 and reason in _BY_REASON:
        cls = _BY_REASON[reason]
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    if reason:
        detail = f"{detail} (reason: {reason})"
    return cls(detail, type=str(problem.get("type")), status=status, reason=reason, problem=problem)


def raise_for_keyfob(response: httpx.Response) -> None:
    """Raise the typed exception if keyfob itself refused (not for an upstream's errors)."""
    if response.is_error and problem_of(response) is not None:
        raise from_response(response)


def unreachable(addr: str, exc: httpx.HTTPError) -> Unreachable:
    """One line naming the address that did not answer and how (never the request)."""
    problem = certificate_problem(exc)
    if problem is not None:
        return Unreachable(f"cannot verify the TLS certificate of keyfob at {addr}: {problem}")
    if isinstance(exc, httpx.TimeoutException):
        how = "timed out"
    elif isinstance(exc, httpx.ConnectError):
        how = "connection refused" if "refused" in str(exc).lower() else "cannot connect"
    else:
        how = type(exc).__name__
    return Unreachable(f"keyfob at {addr} is unreachable ({how}); is `keyfob serve` running?")
