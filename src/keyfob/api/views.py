"""Vault views as JSON bodies: the field names and order of each dataclass, nothing more."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from keyfob.vault.views import View


def to_json(view: View) -> dict[str, Any]:
    """A view as a JSON object (nested views and key metadata become objects too)."""
    return asdict(view)  # type: ignore[call-overload, no-any-return]


def items(views: Iterable[View]) -> list[dict[str, Any]]:
    return [to_json(v) for v in views]
