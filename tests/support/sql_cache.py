"""One SQLAlchemy statement cache for every database engine a test process makes.

SQLAlchemy compiles each statement once per engine: the cache is the engine's, keyed by
the engine's dialect object. Every test opens a fresh vault, so every test compiled the
same few hundred statements again, about a tenth of the suite's in-process CPU. Here each
new engine gets the first engine's dialect object (one per dialect class) and its cache,
so a statement compiled for one test is reused by the next.

Sound because keyfob configures every engine of a dialect class alike: ``Database`` passes
engine and pool arguments only (checked below), never a dialect argument, and all engines
of a process talk to one SQLite library or one PostgreSQL server. One engine shares its
dialect and cache across threads and connections in the same way. The engine itself, its
pool, its connect and begin events and its driver connections stay each engine's own.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.util import LRUCache

from keyfob.store import engine as store_engine

# What Database may pass without making engines of one dialect class differ.
ENGINE_ARGUMENTS = {"hide_parameters", "connect_args", "pool_size", "max_overflow", "pool_pre_ping"}

_real = store_engine.create_async_engine
_shared: dict[type, tuple[Any, LRUCache[Any, Any]]] = {}


def _create_async_engine(url: str, **kwargs: Any) -> Any:
    unknown = set(kwargs) - ENGINE_ARGUMENTS
    if unknown:
        raise AssertionError(
            f"Database now passes {sorted(unknown)}: if a dialect argument, engines of one "
            "dialect class may differ and must not share (tests/support/sql_cache.py)"
        )
    engine = _real(url, **kwargs)
    sync = engine.sync_engine
    dialect, cache = _shared.setdefault(type(sync.dialect), (sync.dialect, LRUCache(5000)))
    sync.dialect = dialect
    sync._compiled_cache = cache
    return engine


def install() -> None:
    """From now on ``keyfob.store.engine.Database`` makes engines that share (per process)."""
    store_engine.create_async_engine = _create_async_engine
