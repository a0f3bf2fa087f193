"""Request bodies: structure only. Limits and names are checked by the vault, so the API,
CLI and dashboard share one set of rules and one set of messages.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from keyfob.constraints import BY_NAME, CONSTRAINTS, Constraint
from keyfob.vault.leases import MAX_COUNT


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SetCreate(_Body):
    provider: str = Field(max_length=200)
    environment: str = Field(max_length=200)
    name: str = Field(max_length=200)
    entries: dict[str, Any] = Field(description="KEY: value; values are write-only", repr=False)
    labels: dict[str, Any] = Field(default_factory=dict)
    profile: dict[str, Any] | None = Field(
        None, description='`{"preset": "openai"}` or a full injection profile'
    )


class SetUpdate(_Body):
    entries: dict[str, Any] = Field(
        default_factory=dict, description="KEY: value sets a key, KEY: null removes it", repr=False
    )
    labels: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    expected_version: int | None = Field(None, ge=1, description="409 unless the set is here")


class Rollback(_Body):
    version: int = Field(ge=1)
    expected_version: int | None = Field(None, ge=1)


class TokenCreate(_Body):
    name: str = Field(min_length=1, max_length=64)


class AgentCreate(_Body):
    name: str = Field(min_length=1, max_length=64)
    allowed_networks: list[str] | None = Field(
        None,
        max_length=64,
        description="CIDRs (or addresses) the agent's token and leases may be used from; "
        "null: anywhere",
    )
    client_cert_sha256: str | None = Field(
        None,
        max_length=95,
        description="SHA-256 (hex) of the TLS client certificate the agent must present "
        "(needs KEYFOB_TLS_CLIENT_CA); null: none",
    )


class AgentUpdate(_Body):
    """Only the fields sent change; null lifts a binding."""

    allowed_networks: list[str] | None = Field(
        None,
        max_length=64,
        description="CIDRs (or addresses) the agent's token and leases may be used from; "
        "null: anywhere",
    )
    client_cert_sha256: str | None = Field(
        None,
        max_length=95,
        description="SHA-256 (hex) of the TLS client certificate the agent must present; "
        "null: none",
    )


_JSON_TYPES: dict[str, Any] = {
    "keys": list[str] | None,
    "subset": list[str] | None,
    "methods": list[str] | None,
    "patterns": list[str] | None,
    "moment": str | None,
    "count": int | None,
    "choice": str | None,
    "budgets": list[dict[str, Any]] | None,
}


def _schema(c: Constraint) -> dict[str, Any]:
    """What the OpenAPI document says of a constraint (the vault enforces it)."""
    extra: dict[str, Any] = {}
    if c.minimum is not None and c.kind == "count":
        extra["minimum"] = c.minimum
    if c.maximum is not None and c.kind == "count":
        extra["maximum"] = c.maximum
    if c.choices and c.kind == "choice":
        extra["enum"] = list(c.choices)
    elif c.choices:
        extra["items"] = {"type": "string", "enum": list(c.choices)}
    return extra


_GRANT_FIELDS: dict[str, Any] = {
    c.name: (
        _JSON_TYPES[c.kind],
        Field(None, description=c.help, json_schema_extra=_schema(c) or None),
    )
    for c in CONSTRAINTS
}
# Every grant constraint as an optional body field, built from the one spec.
GrantFields = create_model("GrantFields", __base__=_Body, **_GRANT_FIELDS)


class GrantCreate(GrantFields):
    agent: str = Field(min_length=1, max_length=64, description="agent id or name")
    secret_set: str = Field(min_length=1, max_length=200, description="provider/environment/name")


class LeaseMint(_Body):
    secret_set: str | None = Field(None, min_length=1, max_length=200)
    secret_sets: list[str] | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="a multi-set lease (workflow scope): one credential over each set, on "
        "its own hosts — the forward proxy's credential",
    )
    scope: str = Field("request", description='"request" (single use) or "workflow"')
    # A longer TTL is capped by the grant; past int64 it is not a number anyone meant.
    ttl: int | None = Field(None, ge=1, le=2**63 - 1, description="seconds; capped by the grant")
    max_uses: int | None = Field(
        None, ge=1, le=BY_NAME["max_lease_uses"].maximum, description="workflow leases only"
    )
    count: int | None = Field(
        None, ge=1, le=MAX_COUNT, description='batch mint: answers {"leases": [...]}'
    )
    reason: str | None = Field(
        None,
        max_length=500,
        description="why the agent asks: kept with a request under approval for the approver",
    )
    budgets: list[dict[str, Any]] | None = Field(
        None,
        description="the lease's own budgets ({unit, limit, window}), each no looser than "
        "the grant's of the same unit and window",
    )


class CaRotate(_Body):
    overlap: int = Field(
        7 * 24 * 3600,
        ge=0,
        le=10 * 365 * 24 * 3600,
        description="seconds the previous CA stays trusted",
    )


class AgentEgress(_Body):
    egress: str = Field(description='"tunnel" (default: bytes pass, audited) or "deny"')


class LeaseRenew(_Body):
    ttl: int | None = Field(None, ge=1, le=2**63 - 1, description="seconds; capped by the grant")


class PriceSet(_Body):
    model: str = Field(min_length=1, max_length=128)
    input: str | float = Field(description="USD per million input tokens")
    output: str | float = Field(description="USD per million output tokens")
    cached: str | float | None = Field(None, description="USD per million cached input tokens")
    provider: str | None = Field(None, max_length=32)


class PriceImport(_Body):
    csv: str = Field(max_length=1024 * 1024, description="model,input,output[,cached[,provider]]")


class LeaseRevoke(_Body):
    agent: str | None = None
    grant: str | None = None
    secret_set: str | None = None


class LeaseCheck(_Body):
    action: str = Field("proxy", description='"proxy" or "export"')
    secret_set: str | None = None
    method: str | None = Field(None, max_length=16)
    path: str | None = Field(None, max_length=2048)


class Export(_Body):
    keys: list[str] | None = Field(None, description="a subset of the lease's keys")
