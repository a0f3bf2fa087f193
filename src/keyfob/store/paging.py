"""Keyset paging: the rows after a cursor in a fixed order, never OFFSET.

A cursor is the sort key of the last row shown; the next page is the rows whose key
compares past it (a row-value comparison, one index range scan on SQLite and
PostgreSQL), so a deep page costs what the first one does and rows added meanwhile
neither repeat nor vanish.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, tuple_
from sqlalchemy.sql.elements import ColumnElement


def keyset(
    query: Select[Any],
    order: Sequence[ColumnElement[Any]],
    after: Sequence[Any] | None,
    limit: int | None,
    *,
    descending: bool = False,
) -> Select[Any]:
    """``query`` ordered by ``order``, starting after the key ``after``, ``limit`` rows."""
    if after is not None:
        key, last = tuple_(*order), tuple_(*after)
        query = query.where(key < last if descending else key > last)
    query = query.order_by(*(c.desc() if descending else c for c in order))
    return query.limit(limit) if limit is not None else query


def prefix_of(column: ColumnElement[str], text: str) -> ColumnElement[bool]:
    """``column`` starts with ``text`` (``%`` and ``_`` in it match only themselves)."""
    return column.startswith(text, autoescape=True)
