"""What a name may look like: the slugs of a set path (and agent and user names), and key names.

Kernel-level, so the command line checks a name it is given without importing the
profile model (and pydantic with it) that the server checks the same name with.
"""

from __future__ import annotations

import re

# \Z, not $: "$" also matches before a trailing newline ("bot\n").
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")
KEY_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}\Z")
