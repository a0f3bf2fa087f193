"""The ``keyfob`` command-line client: operator commands over HTTP, plus ``init`` and ``serve``."""

import sys

# httpx imports its own command line (and with it click, rich and pygments, ~40 ms)
# whenever they are installed, and typer installs them; keyfob never runs it. A module
# set to None is one Python refuses to import, and httpx then goes without its CLI
# (``httpx.main`` is its "not installed" stub in a process that imports this first).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
