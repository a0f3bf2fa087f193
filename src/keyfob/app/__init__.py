"""The keyfob ASGI application (``keyfob.app.asgi``) and its local start-up (``bootstrap``).

``create_app``, ``Keyfob``, ``LazyDashboard`` and ``settle_heap`` are imported from
``keyfob.app.asgi`` on first access, so importing ``keyfob.app.bootstrap`` does not load
FastAPI: ``keyfob init``, ``backup`` and ``db`` open the vault without the web framework.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keyfob.app.asgi import PROXY_PREFIX, Keyfob, LazyDashboard, create_app, settle_heap

__all__ = ["PROXY_PREFIX", "Keyfob", "LazyDashboard", "create_app", "settle_heap"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("keyfob.app.asgi"), name)
    raise AttributeError(f"module 'keyfob.app' has no attribute {name!r}")
