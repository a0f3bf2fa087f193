"""Request rules of a grant: allowed methods and path patterns.

Patterns are matched against the normalised request path: ``*`` matches within one
segment, ``**`` matches across segments, everything else is literal
(``/v1/chat/*``, ``/repos/acme/**``).
"""

from __future__ import annotations

import re
from functools import lru_cache

from keyfob import constraints

METHODS = frozenset(constraints.METHODS)
# \Z, not $: "$" also matches before a trailing newline.
_PATTERN_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()+,;=:@%*/-]{0,511}\Z")


def check_pattern(pattern: str) -> str:
    if not _PATTERN_RE.match(pattern) or "//" in pattern or "/../" in pattern + "/":
        raise ValueError(
            "path patterns start with '/', use '*' (one segment) or '**' (any depth), "
            "and contain no '//' or '..'"
        )
    return pattern


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def path_allowed(patterns: list[str] | None, path: str) -> bool:
    return patterns is None or any(_compile(p).match(path) for p in patterns)


def method_allowed(methods: list[str] | None, method: str) -> bool:
    return methods is None or method.upper() in methods
