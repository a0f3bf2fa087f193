"""The shapes the outside world sees: names, fingerprints, versions — never values."""

from __future__ import annotations

from typing import Any

from keyfob.store import SetRow, VersionRow


def set_view(row: SetRow, current: VersionRow | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "path": row.path,
        "provider": row.provider,
        "environment": row.environment,
        "name": row.name,
        "labels": row.labels,
        "version": row.version,
        "keys": [k.as_dict() for k in current.keys] if current else [],
        "profile": row.profile,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "deleted_at": row.deleted_at,
        "exported_at": row.exported_at,
    }


def version_view(row: VersionRow) -> dict[str, Any]:
    return {
        "version": row.version,
        "created_at": row.created_at,
        "actor": row.actor,
        "reason": row.reason,
        "rollback_of": row.rollback_of,
        "keys": [k.name for k in row.keys],
        "kek_term": row.kek_term,
    }
