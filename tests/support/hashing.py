"""Cheap argon2 parameters for the suite: hashing at the production cost takes ~0.2 s a time."""

from __future__ import annotations

from typing import Any

from keyfob.settings import Settings

FAST_HASHING: dict[str, Any] = {
    "password_hash_time_cost": 1,
    "password_hash_memory_kib": 8,
    "password_hash_parallelism": 1,
}


def hashing_env(settings: Settings | None = None) -> dict[str, str]:
    """``KEYFOB_PASSWORD_HASH_*`` for a child process: ``settings``' values, else the cheap ones."""
    return {
        f"KEYFOB_{name.upper()}": str(getattr(settings, name) if settings else value)
        for name, value in FAST_HASHING.items()
    }
