"""What a user types to name things: set paths (``provider/environment/name``) and ids.

Both end up in API URLs, so both are checked here before anything is sent: a set path
is three slugs, an id or name is one URL segment, and a pasted token is refused
without being echoed or sent anywhere.
"""

from __future__ import annotations

import re

from keyfob.cli.errors import CliError
from keyfob.names import SLUG_RE
from keyfob.tokens import PREFIXES

SLUG = SLUG_RE
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def split_path(path: str) -> tuple[str, str, str]:
    """``provider/environment/name`` as three slugs, or a CliError saying what is wrong."""
    parts = path.strip("/").split("/")
    if len(parts) != 3 or not all(SLUG.match(part) for part in parts):
        raise CliError(
            f"{path!r} is not a set path: expected provider/environment/name, each "
            "lowercase a-z, 0-9, _ or -"
        )
    return parts[0], parts[1], parts[2]


def set_path(path: str) -> str:
    """The canonical ``p/e/n`` form of a set path the user typed."""
    return "/".join(split_path(path))


def set_url(path: str, suffix: str = "") -> str:
    """The API path of a set (slugs need no escaping)."""
    return "/v1/secret-sets/" + set_path(path) + suffix


def segment(value: str, what: str, listing: str) -> str:
    """An id or name as one URL segment; ``listing`` is the command that shows valid ones."""
    if value.startswith(PREFIXES):
        # Someone pasted a token: do not send it anywhere, and do not echo it.
        raise CliError(f"that is a token, not {what}; see `{listing}`")
    if not _SEGMENT.match(value):
        raise CliError(f"{value!r} is not {what} (see `{listing}`)")
    return value
