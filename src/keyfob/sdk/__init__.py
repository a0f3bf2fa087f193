"""keyfob's Python SDK for agents and automation: only ``httpx`` and the standard library.

    from keyfob import sdk
    client = sdk.openai(set="openai/prod/default")   # KEYFOB_ADDR, KEYFOB_TOKEN=kfa_…

Every request through ``sdk.openai``/``sdk.anthropic``/``sdk.http_client`` carries a fresh
single-use lease (``LeaseAuth``); the agent's machine never holds a provider key.
"""

from keyfob.sdk.agent import AgentClient, AsyncAgentClient
from keyfob.sdk.auth import LeaseAuth
from keyfob.sdk.clients import (
    anthropic,
    async_anthropic,
    async_http_client,
    async_openai,
    http_client,
    openai,
)
from keyfob.sdk.errors import (
    ApprovalDenied,
    ApprovalRequired,
    ApprovalTimeout,
    AuthenticationFailed,
    Conflict,
    Denied,
    InvalidRequest,
    KeyfobError,
    LeaseExhausted,
    LeaseExpired,
    LeaseRevoked,
    NotFound,
    NotGranted,
    RateLimited,
    ServerError,
    UnknownSecretSet,
    Unreachable,
    raise_for_keyfob,
)
from keyfob.sdk.models import Check, Grant, Lease, LeaseRequest
from keyfob.sdk.operator import OperatorClient

__all__ = [
    "AgentClient",
    "ApprovalDenied",
    "ApprovalRequired",
    "ApprovalTimeout",
    "AsyncAgentClient",
    "AuthenticationFailed",
    "Check",
    "Conflict",
    "Denied",
    "Grant",
    "InvalidRequest",
    "KeyfobError",
    "Lease",
    "LeaseAuth",
    "LeaseExhausted",
    "LeaseExpired",
    "LeaseRequest",
    "LeaseRevoked",
    "NotFound",
    "NotGranted",
    "OperatorClient",
    "RateLimited",
    "ServerError",
    "UnknownSecretSet",
    "Unreachable",
    "anthropic",
    "async_anthropic",
    "async_http_client",
    "async_openai",
    "http_client",
    "openai",
    "raise_for_keyfob",
]
