"""One ``http_request``: the model's request made safe to send through keyfob's proxy, and
the answer made safe to hand back (capped, binary as base64, keyfob's refusals named).

The proxy does the real work — rules, injection, scrubbing, audit — so nothing here decides
what is allowed; it only keeps the model from steering the lease (no credential headers of
its own, no absolute URL) and the answer from flooding the model's context.
"""

from __future__ import annotations

import base64
import codecs
import json
import re
from dataclasses import dataclass
from typing import Any

import httpx

from keyfob.secret import Secret

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# Headers the model may not set: the lease goes where keyfob puts it, credentials are
# keyfob's to inject, framing is httpx's to write.
_DROPPED = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "x-keyfob-lease",
        "cookie",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "trailer",
        "expect",
    }
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}\Z")
_TEXT_TYPES = re.compile(
    r"^(text/|application/(json|xml|javascript|x-www-form-urlencoded|x-ndjson|graphql)"
    r"|application/[\w.+-]+\+(json|xml)|[\w.+-]+/event-stream)",
    re.I,
)
# Upstream headers the model gains nothing from (and that only pad its context); the body
# it gets is decoded, so its length and coding headers would mislead.
_SKIPPED_ANSWER_HEADERS = frozenset(
    {
        "set-cookie",
        "date",
        "server",
        "connection",
        "keep-alive",
        "content-encoding",
        "content-length",
        "transfer-encoding",
    }
)


class BadRequest(ValueError):
    """The model's request cannot be sent as given; the message says what to change."""


@dataclass(frozen=True)
class Outgoing:
    method: str
    path: str
    headers: dict[str, str]
    content: bytes | None


def prepare(
    method: str,
    path: str,
    headers: dict[str, str] | None,
    body: str | dict[str, Any] | list[Any] | None,
) -> Outgoing:
    """Check and normalise what the model asked for (raises ``BadRequest``)."""
    verb = method.strip().upper()
    if verb not in METHODS:
        raise BadRequest(f"method must be one of {', '.join(METHODS)}")
    rest = path.strip()
    if "://" in rest.split("?", 1)[0] or rest.startswith("//"):
        raise BadRequest(
            "path is relative to the secret set's base URL (e.g. /v1/models), not a full URL; "
            "see list_secret_sets for each set's base_url"
        )
    if any(ch in rest for ch in "\r\n\t ") or any(ord(ch) < 0x20 for ch in rest):
        raise BadRequest("path may not contain spaces or control characters (percent-encode them)")
    sent: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if not _HEADER_NAME.match(name):
            raise BadRequest(f"header names are tokens like Content-Type; {name[:40]!r} is not")
        if any(ord(ch) < 0x20 and ch != "\t" for ch in value):
            raise BadRequest(f"the value of header {name} contains a line break")
        if name.lower() in _DROPPED:
            continue  # keyfob sets these itself
        sent[name] = value
    content: bytes | None
    if body is None:
        content = None
    elif isinstance(body, str):
        content = body.encode("utf-8")
    else:
        content = json.dumps(body, separators=(",", ":")).encode("utf-8")
        if not any(k.lower() == "content-type" for k in sent):
            sent["Content-Type"] = "application/json"
    return Outgoing(verb, rest.lstrip("/"), sent, content)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    content_type: str
    data: bytes
    truncated: bool
    is_problem: bool


async def send(
    http: httpx.AsyncClient,
    url: str,
    lease: Secret[str],
    outgoing: Outgoing,
    cap: int,
) -> Answer:
    """Send through the proxy with ``lease``; read at most ``cap`` bytes of the answer."""
    headers = {**outgoing.headers, "X-Keyfob-Lease": lease.reveal()}
    request = http.build_request(outgoing.method, url, headers=headers, content=outgoing.content)
    response = await http.send(request, stream=True)
    try:
        chunks: list[bytes] = []
        size = 0
        truncated = False
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                truncated = True
                break
    finally:
        await response.aclose()
    data = b"".join(chunks)[:cap]
    content_type = response.headers.get("content-type", "")
    kept: dict[str, str] = {}
    for name, value in response.headers.multi_items():
        key = name.lower()
        if key in _SKIPPED_ANSWER_HEADERS:
            continue
        kept[key] = f"{kept[key]}, {value}" if key in kept else value
    problem = content_type.startswith("application/problem+json")
    return Answer(response.status_code, kept, content_type, data, truncated, problem)


def render(answer: Answer) -> dict[str, Any]:
    """The answer as the model sees it: text when it is text, else base64 with its type."""
    text = _as_text(answer.data, answer.content_type, answer.truncated)
    out: dict[str, Any] = {
        "status": answer.status,
        "headers": answer.headers,
        "content_type": answer.content_type or None,
    }
    if text is not None:
        out["body"] = text
        out["body_encoding"] = "text"
    else:
        out["body"] = base64.b64encode(answer.data).decode("ascii")
        out["body_encoding"] = "base64"
    out["body_bytes"] = len(answer.data)
    out["truncated"] = answer.truncated
    return out


def _as_text(data: bytes, content_type: str, truncated: bool) -> str | None:
    if content_type and not _TEXT_TYPES.match(content_type):
        return None
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        # A cut answer may end inside a character: keep what decodes, drop the tail.
        return str(decoder.decode(data, final=not truncated))
    except UnicodeDecodeError:
        return None
