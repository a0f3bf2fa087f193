"""Usage metering: per-preset readers of what a request asks for and what the answer used.

A profile meters by its preset (``openai``, ``anthropic``; a preset's base URL may be
overridden, so a gateway that speaks the same API meters the same way); any other API is
metered by requests and bytes alone. ``plan`` reads a request body before it goes
upstream: the model, whether it streams, the worst case it may spend (requested
``max_tokens`` capped by the meter's maximum, or its default; input estimated from the
body size) and, for an OpenAI stream that did not ask for usage, the body with
``stream_options.include_usage`` added. A ``Tap`` then reads the answer as it streams
(``taps.py``). Nothing here keeps or records content: only counts and the model name.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from keyfob.profiles.model import Profile

# A rough, deliberately high estimate: English text runs ~4 bytes a token, JSON framing
# makes a body longer than its tokens, so bytes/3 over-reserves rather than under.
BYTES_PER_TOKEN = 3
MAX_PARSED_BODY = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Meter:
    """How one provider's API reports usage, and the bounds a request's worst case takes."""

    name: str
    # (path suffix, endpoint kind): chat, completions, responses, embeddings, messages
    endpoints: tuple[tuple[str, str], ...]
    output_fields: tuple[str, ...]
    default_output: int
    max_output: int


OPENAI = Meter(
    "openai",
    (
        ("/chat/completions", "chat"),
        ("/completions", "completions"),
        ("/responses", "responses"),
        ("/embeddings", "embeddings"),
    ),
    ("max_completion_tokens", "max_tokens", "max_output_tokens"),
    default_output=4096,
    max_output=32_768,
)
ANTHROPIC = Meter(
    "anthropic",
    (("/messages", "messages"),),
    ("max_tokens",),
    default_output=4096,
    max_output=64_000,
)
METERS: dict[str, Meter] = {m.name: m for m in (OPENAI, ANTHROPIC)}


def meter_of(profile: Profile) -> Meter | None:
    """The meter of the profile's preset, or None (requests and bytes only)."""
    return METERS.get(profile.preset) if profile.preset else None


@dataclass(frozen=True, slots=True)
class Plan:
    """What a metered request asks for, read before it goes upstream."""

    meter: str
    endpoint: str
    model: str | None
    stream: bool
    input_estimate: int
    max_output: int  # the worst case: asked for, capped, or the default
    body: bytes | None  # the body to send instead (include_usage added), or None
    strip_usage: bool  # remove the usage chunk the client did not ask for
    asked_output: int | None  # what the client asked for, before the cap (for the record)


def _endpoint(meter: Meter, method: str, path: str) -> str | None:
    if method != "POST":
        return None
    for suffix, kind in meter.endpoints:
        if path.endswith(suffix):
            return kind
    return None


def plan(profile: Profile, method: str, path: str, body: bytes | None, size: int) -> Plan | None:
    """The metering plan of a request, or None when the profile's API is not metered by
    tokens. ``body`` is None when it streams in (then only ``size`` is known)."""
    meter = meter_of(profile)
    if meter is None:
        return None
    endpoint = _endpoint(meter, method, path)
    if endpoint is None:
        return None
    estimate = max(1, math.ceil(size / BYTES_PER_TOKEN))
    data: Any = None
    if body is not None and len(body) <= MAX_PARSED_BODY:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
    if not isinstance(data, dict):
        # Unreadable: the worst case, and no rewriting of what we cannot parse.
        worst = meter.max_output
        return Plan(meter.name, endpoint, None, False, estimate, worst, None, False, None)
    model = data.get("model") if isinstance(data.get("model"), str) else None
    stream = data.get("stream") is True
    asked = None
    for name in meter.output_fields:
        value = data.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            asked = value
            break
    if endpoint == "embeddings":
        worst = 0
    elif asked is None or asked < 0:
        worst = meter.default_output
    else:
        # A client that asks for more than the API allows is capped: the reservation is
        # the most the provider can bill, not the number the client wrote.
        worst = min(asked, meter.max_output)
    rewritten = None
    strip = False
    if meter is OPENAI and stream and endpoint in ("chat", "completions"):
        options = data.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            options = dict(options) if isinstance(options, dict) else {}
            options["include_usage"] = True
            rewritten = json.dumps({**data, "stream_options": options}).encode()
            strip = True
    return Plan(meter.name, endpoint, model, stream, estimate, worst, rewritten, strip, asked)
