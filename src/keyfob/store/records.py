"""Plain rows as the store hands them out: no ciphertext opened, no values."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from keyfob.constraints import CONSTRAINTS
from keyfob.secret import SECRET, Masked

T = TypeVar("T")


@dataclass(frozen=True)
class SetRow:
    id: str
    provider: str
    environment: str
    name: str
    labels: dict[str, str]
    profile: dict[str, Any] | None
    version: int
    created_at: str
    updated_at: str
    deleted_at: str | None
    exported_at: str | None

    @property
    def path(self) -> str:
        return f"{self.provider}/{self.environment}/{self.name}"

    @staticmethod
    def from_row(row: Any) -> SetRow:
        return SetRow(
            id=row.id,
            provider=row.provider,
            environment=row.environment,
            name=row.name,
            labels=json.loads(row.labels),
            profile=json.loads(row.profile) if row.profile else None,
            version=row.version,
            created_at=row.created_at,
            updated_at=row.updated_at,
            deleted_at=row.deleted_at,
            exported_at=row.exported_at,
        )


@dataclass(frozen=True)
class KeyMeta:
    """A key as the world may see it: name, keyed fingerprint, version it last changed."""

    name: str
    fingerprint: str
    version: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": self.fingerprint, "version": self.version}


@dataclass(frozen=True)
class VersionRow(Masked):
    set_id: str
    version: int
    created_at: str
    actor: str
    reason: str
    rollback_of: int | None
    keys: tuple[KeyMeta, ...]
    kek_term: int
    wrapped_dek: bytes = field(metadata=SECRET)
    ciphertext: bytes = field(metadata=SECRET)

    @staticmethod
    def from_row(row: Any) -> VersionRow:
        return VersionRow(
            set_id=row.set_id,
            version=row.version,
            created_at=row.created_at,
            actor=row.actor,
            reason=row.reason,
            rollback_of=row.rollback_of,
            keys=tuple(KeyMeta(**k) for k in json.loads(row.keys)),
            kek_term=row.kek_term,
            wrapped_dek=bytes(row.wrapped_dek),
            ciphertext=bytes(row.ciphertext),
        )


@dataclass(frozen=True)
class TokenRow:
    id: str
    name: str
    created_at: str
    created_by: str
    revoked_at: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True)
class KekRow(Masked):
    term: int
    wrapped: bytes | None = field(metadata=SECRET)
    created_at: str
    retired_at: str | None


# -- agents, grants, leases: one codec for every row (JSON lists are stored as text) --

# The list-valued grant constraints; leases reuse the names for the ones they carry.
_JSON_FIELDS = frozenset(c.name for c in CONSTRAINTS if c.is_list)


def encode(values: dict[str, Any]) -> dict[str, Any]:
    """Column values with list fields as JSON text (for inserts and partial updates)."""
    return {
        k: json.dumps(v) if k in _JSON_FIELDS and v is not None else v for k, v in values.items()
    }


def to_columns(row: Any) -> dict[str, Any]:
    """A row dataclass as column values."""
    return encode(asdict(row))


def from_columns(cls: type[T], row: Any) -> T:
    """A row dataclass from a result row; JSON text fields become lists."""
    return from_mapping(cls, row._mapping)


_NAMES: dict[type, tuple[tuple[str, bool], ...]] = {}


def from_mapping(cls: type[T], mapping: Any) -> T:
    """A row dataclass from anything indexable by column name (``sqlite3.Row`` too)."""
    names = _NAMES.get(cls)
    if names is None:
        names = tuple((f.name, f.name in _JSON_FIELDS) for f in fields(cls))  # type: ignore[arg-type]
        _NAMES[cls] = names
    values = {}
    for name, is_json in names:
        value = mapping[name]
        values[name] = json.loads(value) if is_json and value else value
    return cls(**values)


@dataclass(frozen=True)
class AgentRow:
    id: str
    name: str
    disabled_at: str | None
    created_at: str
    created_by: str
    updated_at: str
    allowed_networks: str | None = None  # comma-separated CIDRs; None: anywhere
    client_cert_sha256: str | None = None  # the TLS client certificate it must present


@dataclass(frozen=True)
class GrantRow:
    id: str
    agent_id: str
    set_id: str
    set_path: str
    keys: list[str] | None
    actions: list[str]
    not_before: str | None
    expires_at: str | None
    scopes: list[str]
    max_lease_ttl: int
    max_lease_uses: int | None
    rate_limit: int | None
    max_uses: int | None
    uses: int
    rate_window: int
    rate_count: int
    methods: list[str] | None
    paths: list[str] | None
    approval: str
    created_at: str
    created_by: str
    updated_at: str
    revoked_at: str | None
    budgets: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class LeaseRow:
    id: str
    agent_id: str
    grant_id: str
    set_id: str
    set_path: str
    actions: list[str]
    keys: list[str] | None
    scope: str
    max_uses: int | None
    uses: int
    created_at: str
    expires_at: str
    revoked_at: str | None
    revoke_reason: str | None
    renewed_at: str | None = None  # the start of a renewed lease's current term
    budgets: list[dict[str, Any]] | None = None  # a lease's own, tighter than its grant's


@dataclass(frozen=True)
class LeaseRequestRow:
    id: str
    agent_id: str
    grant_id: str
    set_path: str
    scope: str
    ttl: int
    max_uses: int | None
    status: str
    created_at: str
    expires_at: str
    decided_at: str | None
    decided_by: str | None
    lease_id: str | None
    reason: str | None = None  # the agent's words to the approver (migration 0005m)
