"""uvicorn's server without its command line.

``import uvicorn`` runs the package file, which imports ``uvicorn.main``: click, the
reloader and multiprocess supervisors, watchfiles and multiprocessing, none of which a
server started from Python uses (~5 MB of its idle memory). ``install`` puts a stand-in
for the package in ``sys.modules`` whose ``Config``, ``Server``, ``run`` and ``main`` load
on first access, so the submodules the server does use (config, server, the protocols
and loop set-up it imports by name) load without the rest. Only the serving process calls
it, and only if nothing has imported uvicorn yet.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import Server

_WHERE = {"Config": "uvicorn.config", "Server": "uvicorn.server"}
_CLI = ("main", "run")


def _lazy(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    if name in _CLI:
        return getattr(importlib.import_module("uvicorn.main"), name)
    raise AttributeError(f"module 'uvicorn' has no attribute {name!r}")


def install() -> ModuleType:
    """The ``uvicorn`` package in ``sys.modules``: the real one if loaded, else the stand-in."""
    loaded = sys.modules.get("uvicorn")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("uvicorn")
    assert spec is not None
    package = importlib.util.module_from_spec(spec)  # its file is not run
    vars(package).update(__getattr__=_lazy, __all__=["main", "run", "Config", "Server"])
    sys.modules["uvicorn"] = package
    from uvicorn._version import __version__

    vars(package)["__version__"] = __version__
    return package


class _NoWebSocketHint(logging.Filter):
    """keyfob serves no WebSocket (``ws="none"``): uvicorn's advice to install a WebSocket
    library when a client asks for an upgrade is not for keyfob's operators. The request
    itself is answered (the proxy refuses upgrades with 400 problem+json)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No supported WebSocket library detected")


def config(app: Any, **options: Any) -> Config:
    """``uvicorn.Config`` without WebSocket support (no protocol module is imported)."""
    install()
    from uvicorn.config import Config

    made = Config(app, ws="none", **options)  # configures logging first
    logging.getLogger("uvicorn.error").addFilter(_NoWebSocketHint())
    return made


def server(config: Config) -> Server:
    install()
    from uvicorn.server import Server

    return Server(config)


def run(app: Any, **options: Any) -> None:
    """What ``uvicorn.run`` does for one worker without reload: serve until stopped; exit
    with uvicorn's start-up failure status if the server never started."""
    from uvicorn.config import STARTUP_FAILURE

    serving = server(config(app, **options))
    try:
        serving.run()
    except KeyboardInterrupt:
        pass
    if not serving.started:
        sys.exit(STARTUP_FAILURE)
