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
    entries: dict[str, Any] = Field(description="KEY: value; values are write-only")
    labels: dict[str, Any] = Field(default_factory=dict)
    profile: dict[str, Any] | None = Field(
        None, description='`{"preset": "openai"}` or a full injection profile'
    )


class SetUpdate(_Body):
    entries: dict[str, Any] = Field(
        default_factory=dict, description="KEY: value sets a key, KEY: null removes it"
    )
    labels: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    expected_version: int | None = Field(None, ge=1, description="409 unless the set is here")


class Rollback(_Body):
    version: int = Field(ge=1)
    expected_version: int | None = Field(None, ge=1)


class TokenCreate(_Body):
    name: str = Field(min_length=1, max_length=64)
