"""The method, path and query an agent asks the proxy for: split, normalised, checked.

Kernel-level, so the proxy and the vault's dry run (``POST /v1/leases/check``) judge a
request from the same normalised method and path.

The route is ``/proxy/{provider}/{environment}/{name}/{rest}``. ``rest`` is normalised
so that the path keyfob checks against a grant is the path the upstream serves: RFC 3986
characters only, percent-encoding canonical (unreserved characters decoded, the rest
upper-case), no dot segments (also not as ``%2E%2E`` or ``..;``, which Java servers read
as ``..``), no empty segments (``//host``), no encoded ``/``, ``\\`` or control
characters. Anything else is refused, never repaired. The upstream URL is built from
parts (``join``), never by joining strings the agent chose.

Refusal messages are fixed strings (``REFUSALS``): safe to show, never the input.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote, unquote_plus

METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_PATH: Final = 2048
_PREFIX: Final = b"/proxy/"
# Three slugs of at most 64 characters each, their slashes, and the longest rest.
_MAX_ROUTE: Final = len(_PREFIX) + 3 * 65 + MAX_PATH

NOT_A_ROUTE: Final = "the proxy path is /proxy/{provider}/{environment}/{name}/{path}"
BAD_SLUG: Final = "provider, environment and name must be 1-64 characters of a-z, 0-9, '-' or '_'"
TOO_LONG: Final = f"the path is longer than {MAX_PATH} characters"
NOT_ABSOLUTE: Final = "the path must start with /"
NOT_ASCII: Final = "the path must be ASCII; percent-encode other bytes"
CONTROL: Final = "control characters are not allowed in the path"
MALFORMED: Final = "malformed percent-encoding in the path"
UNENCODED: Final = "the path holds characters that must be percent-encoded"
ENCODED_SLASH: Final = "encoded slashes are not allowed in the path"
ENCODED_BACKSLASH: Final = "encoded backslashes are not allowed in the path"
ENCODED_CONTROL: Final = "encoded control characters are not allowed in the path"
DOT_SEGMENT: Final = "dot segments are not allowed in the path"
EMPTY_SEGMENT: Final = "empty segments (//) are not allowed in the path"
QUERY_NOT_ASCII: Final = "the query must be ASCII; percent-encode other bytes"
QUERY_CONTROL: Final = "control characters, spaces and '#' are not allowed in the query"
QUERY_MALFORMED: Final = "malformed percent-encoding in the query"

REFUSALS: Final = frozenset(
    {
        NOT_A_ROUTE,
        BAD_SLUG,
        TOO_LONG,
        NOT_ABSOLUTE,
        NOT_ASCII,
        CONTROL,
        MALFORMED,
        UNENCODED,
        ENCODED_SLASH,
        ENCODED_BACKSLASH,
        ENCODED_CONTROL,
        DOT_SEGMENT,
        EMPTY_SEGMENT,
        QUERY_NOT_ASCII,
        QUERY_CONTROL,
        QUERY_MALFORMED,
    }
)


class PathRefused(ValueError):
    """Why a path or query is refused: a fixed message, safe to show the agent, never the input."""


# \Z, not $: "$" also matches before a trailing newline.
_SLUG: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
# RFC 3986 pchar (unreserved, sub-delims, ":", "@"), "/" and well-formed %XX.
_PATH: Final = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*\Z")
_PCT: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_PCT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
_QUERY_OK: Final = re.compile(r"[\x21\x22\x24-\x7e]*\Z")  # printable ASCII but "#"


def split_route(raw_path: bytes) -> tuple[str, str, str, str]:
    """(provider, environment, name, rest) from b"/proxy/p/e/n/rest"; rest is "/" when absent."""
    if len(raw_path) > _MAX_ROUTE:
        raise PathRefused(TOO_LONG)
    if not raw_path.startswith(_PREFIX):
        raise PathRefused(NOT_A_ROUTE)
    try:
        text = raw_path[len(_PREFIX) :].decode("ascii")
    except UnicodeDecodeError:
        raise PathRefused(NOT_ASCII) from None
    parts = text.split("/", 3)
    if len(parts) < 3:
        raise PathRefused(NOT_A_ROUTE)
    provider, environment, name = parts[:3]
    if not (_SLUG.match(provider) and _SLUG.match(environment) and _SLUG.match(name)):
        raise PathRefused(BAD_SLUG)
    rest = "/" + parts[3] if len(parts) == 4 else "/"
    return provider, environment, name, rest


def _canonical(match: re.Match[str]) -> str:
    byte = int(match.group(1), 16)
    if byte in _UNRESERVED:
        return chr(byte)
    if byte == 0x2F:
        raise PathRefused(ENCODED_SLASH)
    if byte == 0x5C:
        raise PathRefused(ENCODED_BACKSLASH)
    if byte < 0x20 or byte == 0x7F:
        raise PathRefused(ENCODED_CONTROL)
    return f"%{byte:02X}"


def _why_not_pchar(rest: str) -> str:
    if not rest.isascii():
        return NOT_ASCII
    if any(c < " " or c == "\x7f" for c in rest):
        return CONTROL
    if _BAD_PCT.search(rest):
        return MALFORMED
    return UNENCODED


def normalise(rest: str) -> str:
    """The agent's path, percent-encoding canonical, no dot or empty segments; or PathRefused."""
    if len(rest) > MAX_PATH:
        raise PathRefused(TOO_LONG)
    if not rest.startswith("/"):
        raise PathRefused(NOT_ABSOLUTE)
    if not _PATH.match(rest):
        raise PathRefused(_why_not_pchar(rest))
    path = _PCT.sub(_canonical, rest) if "%" in rest else rest
    segments = path[1:].split("/")
    for index, segment in enumerate(segments):
        if not segment and index < len(segments) - 1:
            raise PathRefused(EMPTY_SEGMENT)
        # ";" starts a path parameter on Tomcat and Jetty, so "..;x" means "..".
        if segment.partition(";")[0] in (".", ".."):
            raise PathRefused(DOT_SEGMENT)
    return path


class MethodRefused(ValueError):
    """A method the proxy does not forward; the message names the ones it does."""


def normalise_method(method: str) -> str:
    """The method as the proxy checks and forwards it (upper case), or MethodRefused."""
    upper = method.upper()
    if upper not in METHODS:
        raise MethodRefused(f"{method[:16]} is not proxied; methods: {', '.join(sorted(METHODS))}")
    return upper


def join(base_path: str, path: str) -> str:
    """The upstream path: the base URL's path ("" or "/v1") then the normalised path, one "/"."""
    if not path.startswith("/") or (base_path and not base_path.startswith("/")):
        raise ValueError("join takes absolute paths: a base like '/v1' or '', a path like '/x'")
    return base_path.rstrip("/") + path


def check_query(raw: bytes) -> str:
    """The raw query as text; PathRefused if it holds CR, LF, NUL, '#', non-ASCII or bad %XX."""
    try:
        query = raw.decode("ascii")
    except UnicodeDecodeError:
        raise PathRefused(QUERY_NOT_ASCII) from None
    if not _QUERY_OK.match(query):
        raise PathRefused(QUERY_CONTROL)
    if "%" in query and _BAD_PCT.search(query):
        raise PathRefused(QUERY_MALFORMED)
    return query


def _name(pair: str) -> str:
    return unquote_plus(pair.partition("=")[0], errors="replace")


def query_names(query: str) -> list[str]:
    """Decoded parameter names in order (for the audit log, which records names, never values)."""
    return [_name(pair) for pair in query.split("&") if pair]


def without_param(query: str, name: str) -> str:
    """The query without any parameter called ``name`` (the agent may not supply the key one)."""
    # Case-insensitive and decoded: some servers read "KEY" or "k%65y" as "key".
    unwanted = name.casefold()
    return "&".join(
        pair for pair in query.split("&") if pair and _name(pair).casefold() != unwanted
    )


def with_param(query: str, name: str, value: str) -> str:
    """The query with `name=value` appended, both percent-encoded (quote with safe="")."""
    pair = quote(name, safe="") + "=" + quote(value, safe="")
    return f"{query}&{pair}" if query else pair
