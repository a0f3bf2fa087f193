"""Request bodies: structure only. Limits and names are checked by the vault, so the API,
CLI and dashboard share one set of rules and one set of messages.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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


class GrantFields(_Body):
    keys: list[str] | None = Field(None, description="key allowlist; null means every key")
    actions: list[str] | None = Field(None, description='"proxy" (default) and/or "export"')
    not_before: str | None = Field(None, description="RFC 3339; the grant is unusable before")
    expires_at: str | None = Field(None, description="RFC 3339; the grant ends then")
    scopes: list[str] | None = Field(None, description='lease scopes allowed; default ["request"]')
    max_lease_ttl: int | None = Field(None, description="ceiling on a lease's TTL, seconds")
    max_lease_uses: int | None = Field(None, description="ceiling on a workflow lease's uses")
    rate_limit: int | None = Field(None, description="uses per minute, across all leases")
    max_uses: int | None = Field(None, description="uses over the grant's whole life")
    methods: list[str] | None = Field(None, description="allowed HTTP methods; null = any")
    paths: list[str] | None = Field(None, description="path patterns (* one segment, ** any)")
    approval: str | None = Field(None, description='"none" (default) or "required"')


class GrantCreate(GrantFields):
    agent: str = Field(min_length=1, max_length=64, description="agent id or name")
    secret_set: str = Field(min_length=1, max_length=200, description="provider/environment/name")


class LeaseMint(_Body):
    secret_set: str = Field(min_length=1, max_length=200)
    scope: str = Field("request", description='"request" (single use) or "workflow"')
    ttl: int | None = Field(None, ge=1, description="seconds; capped by the grant")
    max_uses: int | None = Field(None, ge=1, description="workflow leases only")


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
