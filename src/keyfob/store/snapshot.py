"""Logical copies of the whole database, for ``keyfob backup`` and ``keyfob restore``.

``dump`` reads every table (found by reflection, so whatever revision the schema is at)
in one read transaction: a consistent snapshot on SQLite (WAL) and on PostgreSQL
(``REPEATABLE READ``), taken while the vault serves. ``load`` puts such a copy into an
empty database in one transaction: it brings the schema to the copy's revision, inserts
every row, then migrates to this code's head. Rows are plain JSON values; bytes are
tagged ``{"$b": base64}``. Nothing here decrypts: the rows hold what the database holds.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, func, select, text
from sqlalchemy.engine import Connection

from keyfob.errors import ConfigurationError, Conflict
from keyfob.store.engine import Database, _alembic_config, known_revisions

# Alembic's own table travels as the header's revision, not as rows.
_SKIP = frozenset({"alembic_version"})
_CHUNK = 500


@dataclass(frozen=True)
class Dump:
    """Every table's columns and rows, the schema revision and the audit chain's head."""

    revision: str
    tables: dict[str, dict[str, Any]]
    audit_seq: int
    audit_head: str

    def counts(self) -> dict[str, int]:
        return {name: len(table["rows"]) for name, table in self.tables.items()}


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ConfigurationError(f"a column holds a value of type {type(value).__name__}")


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        return base64.b64decode(value["$b"], validate=True)
    return value


def _reflect(conn: Connection) -> list[Table]:
    meta = MetaData()
    meta.reflect(conn)
    return [t for t in meta.sorted_tables if t.name not in _SKIP]


def _dump(conn: Connection) -> Dump:
    revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    out: dict[str, dict[str, Any]] = {}
    for table in _reflect(conn):
        order = list(table.primary_key.columns) or list(table.columns)
        rows = conn.execute(select(table).order_by(*order)).all()
        out[table.name] = {
            "columns": [c.name for c in table.columns],
            "rows": [[_encode(v) for v in row] for row in rows],
        }
    head = conn.execute(text("SELECT seq, head FROM audit_head WHERE id = 1")).one()
    return Dump(str(revision), out, int(head[0]), str(head[1]))


async def dump(db: Database) -> Dump:
    """The whole database as one consistent snapshot (the vault may keep serving)."""
    async with db.read(snapshot=True) as conn:
        return await conn.run_sync(_dump)


def _is_empty(conn: Connection, names: set[str]) -> bool:
    """No vault here: no keyring and no audit record (a migrated, unused schema is empty)."""
    for name in ("keyring_meta", "audit_events"):
        if (
            name in names
            and conn.execute(select(func.count()).select_from(text(name))).scalar_one()
        ):
            return False
    return True


def _load(conn: Connection, dumped: Dump, force: bool, extra_versions: Sequence[Path]) -> None:
    from alembic import command
    from alembic.migration import MigrationContext

    config = _alembic_config(extra_versions)
    config.attributes["connection"] = conn
    order = known_revisions(extra_versions)
    current = MigrationContext.configure(conn).get_current_revision()
    # Reflecting the schema is most of a small restore's time: done again only after a
    # migration has changed it.
    tables: list[Table] = []
    if current is not None:
        tables = _reflect(conn)
        if not force and not _is_empty(conn, {t.name for t in tables}):
            raise Conflict(
                "the target database already holds a vault; restore into an empty one "
                "(or pass --force to replace everything in it)"
            )
        for table in reversed(tables):
            conn.execute(table.delete())
    if current is None or order.index(current) < order.index(dumped.revision):
        command.upgrade(config, dumped.revision)
        tables = _reflect(conn)
    elif order.index(current) > order.index(dumped.revision):
        command.downgrade(config, dumped.revision)
        tables = _reflect(conn)
    present = {t.name: t for t in tables}
    for table in present.values():
        conn.execute(table.delete())  # rows the migrations seed (audit head, …)
    for table in present.values():
        copied = dumped.tables.get(table.name)
        if copied is None:
            continue
        columns = copied["columns"]
        missing = set(columns) - {c.name for c in table.columns}
        if missing:
            raise ConfigurationError(
                f"the backup's table {table.name} has columns the schema lacks: "
                + ", ".join(sorted(missing))
            )
        rows = [dict(zip(columns, map(_decode, row), strict=True)) for row in copied["rows"]]
        for start in range(0, len(rows), _CHUNK):
            conn.execute(table.insert(), rows[start : start + _CHUNK])
    unknown = set(dumped.tables) - set(present)
    if unknown:
        raise ConfigurationError(
            "the backup has tables the schema lacks: " + ", ".join(sorted(unknown))
        )
    command.upgrade(config, "head")


async def load(
    db: Database, dumped: Dump, *, force: bool = False, extra_versions: Sequence[Path] = ()
) -> None:
    """Put ``dumped`` into ``db`` in one transaction, then migrate it to head.

    ``Conflict`` when the database already holds a vault (unless ``force``); nothing is
    kept when anything fails.
    """
    if dumped.revision not in known_revisions(extra_versions):
        raise ConfigurationError(
            f"the backup's schema revision {dumped.revision} is newer than this keyfob "
            "knows: restore it with the keyfob release that made it, or a newer one"
        )
    async with db.engine.connect() as raw:
        conn = await raw.execution_options(keyfob_write=True)
        async with conn.begin():
            await conn.run_sync(_load, dumped, force, extra_versions)
