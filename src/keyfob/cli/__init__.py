"""The ``keyfob`` command-line client: operator commands over HTTP, plus ``init`` and ``serve``."""
