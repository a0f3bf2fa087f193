"""SQLAlchemy's asyncio engine without its ORM.

``sqlalchemy.ext.asyncio``'s package file also imports ``AsyncSession``, and with it the
whole ORM: about 7.6 MB of a serving process's idle memory, for a store that uses SQL
core only. The engine's own modules (``engine``, ``result``, ``base``, ``exc``) import no
ORM, so they are loaded here under a stand-in for the package that is removed at once:
a later ``import sqlalchemy.ext.asyncio`` (Alembic, tests) runs the real package file,
which finds these modules loaded and so has the very same classes.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
else:
    from types import ModuleType

    def _engine_module() -> ModuleType:
        package = "sqlalchemy.ext.asyncio"
        if package in sys.modules:  # the real package is loaded already
            return importlib.import_module(package + ".engine")
        import sqlalchemy.ext

        spec = importlib.util.find_spec(package)
        assert spec is not None
        stand_in = importlib.util.module_from_spec(spec)  # its file is not run
        sys.modules[package] = stand_in
        try:
            return importlib.import_module(package + ".engine")
        finally:
            del sys.modules[package]
            if getattr(sqlalchemy.ext, "asyncio", None) is stand_in:
                del sqlalchemy.ext.asyncio

    _engine = _engine_module()
    # As the package file does: fail at import, not at first query, without greenlet.
    from sqlalchemy.util import concurrency

    concurrency._concurrency_shim._initialize()
    AsyncConnection = _engine.AsyncConnection
    AsyncEngine = _engine.AsyncEngine
    create_async_engine = _engine.create_async_engine

__all__ = ["AsyncConnection", "AsyncEngine", "create_async_engine"]
