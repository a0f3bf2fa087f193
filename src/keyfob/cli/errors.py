"""``CliError``: a failure the user can act on, shown as one line on stderr with exit code 1.

Messages name things (paths, keys, addresses), never values: a secret that reached
the CLI must not come back out of it in an error.
"""

from __future__ import annotations


class CliError(Exception):
    """A one-line, user-facing failure; the CLI prints it and exits with status 1."""

    def __init__(self, message: str) -> None:
        # One line whatever the server or the OS said: scripts grep the first line.
        self.message = " ".join(message.split())
        super().__init__(self.message)
