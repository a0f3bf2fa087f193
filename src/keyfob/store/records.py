"""Plain rows as the store hands them out: no ciphertext opened, no values."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


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
class VersionRow:
    set_id: str
    version: int
    created_at: str
    actor: str
    reason: str
    rollback_of: int | None
    keys: tuple[KeyMeta, ...]
    kek_term: int
    wrapped_dek: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"VersionRow(set_id={self.set_id!r}, version={self.version}, <ciphertext>)"

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
class KekRow:
    term: int
    wrapped: bytes | None
    created_at: str
    retired_at: str | None
