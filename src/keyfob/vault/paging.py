"""Pages of a list and their opaque cursors (the last row's sort key, base64 JSON)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from keyfob.errors import InvalidRequest

T = TypeVar("T")
MAX_PAGE = 200


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list; ``next`` is the cursor of the page after it, or None at the end."""

    items: list[T]
    next: str | None


def encode(key: tuple[Any, ...]) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str | None, size: int) -> tuple[Any, ...] | None:
    """The sort key a cursor holds; ``InvalidRequest`` for one this server did not hand out."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        key = None
    if not isinstance(key, list) or len(key) != size or not all(isinstance(v, str) for v in key):
        raise InvalidRequest("cursor is not one this server handed out")
    return tuple(key)


def page_of(rows: list[Any], limit: int, key: Any) -> tuple[list[Any], str | None]:
    """The first ``limit`` of ``limit + 1`` fetched rows and the next page's cursor."""
    if len(rows) > limit:
        return rows[:limit], encode(key(rows[limit - 1]))
    return rows, None


def clamp(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE))
