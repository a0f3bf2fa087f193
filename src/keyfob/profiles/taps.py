"""Reading usage off an answer as it streams, and cutting a stream at its reservation.

A ``Tap`` sits between the upstream's (decoded) answer and the client. A JSON answer
passes through untouched and is read at the end. A stream (SSE) is passed on event by
event: each event is read for the provider's usage and for the output it delivers
(estimated from its text when the provider counts only at the end); the usage chunk
keyfob asked for on the client's behalf is removed, with the ``"usage":null`` member
that asking adds to every other chunk, so the client sees byte for byte what it would
have seen. When ``allow`` says the next event would pass the reservation, the stream ends
there with an error event in the provider's own shape.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keyfob.profiles.metering import MAX_PARSED_BODY, Plan

# ``allow(input_tokens, output_tokens)``: may the answer spend this much in all?
Allowance = Callable[[int, int], bool]

_SEPARATORS = (b"\r\n\r\n", b"\n\n", b"\r\r")
_NULL_USAGE = (b',"usage":null', b', "usage": null', b'"usage":null,', b'"usage": null, ')
CUT_MESSAGE = "the budget is spent: keyfob ended the stream at the budget"


@dataclass(frozen=True, slots=True)
class Usage:
    """What an answer used: the provider's own count (``reported``) or keyfob's estimate."""

    model: str | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reported: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "reported": self.reported,
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _text_tokens(text: Any) -> int:
    if not isinstance(text, str) or not text:
        return 0
    return max(1, math.ceil(len(text.encode()) / 4))


def usage_from_json(meter: str, data: Any) -> tuple[int, int, int] | None:
    """(input, output, cached) from a provider's ``usage`` object, or None if it has none."""
    if not isinstance(data, dict):
        return None
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return None
    if meter == "anthropic":
        cached = _int(usage.get("cache_read_input_tokens"))
        written = _int(usage.get("cache_creation_input_tokens"))
        if "input_tokens" not in usage and "output_tokens" not in usage:
            return None
        return (
            _int(usage.get("input_tokens")) + cached + written,
            _int(usage.get("output_tokens")),
            cached,
        )
    if "prompt_tokens" in usage:
        details = usage.get("prompt_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
        return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")), cached
    if "input_tokens" in usage:  # the Responses API
        details = usage.get("input_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
        return _int(usage.get("input_tokens")), _int(usage.get("output_tokens")), cached
    return None


class Tap:
    """One answer's meter: ``feed`` each decoded chunk, send what it returns, then ``flush``."""

    def __init__(self, plan: Plan, content_type: str, allow: Allowance | None = None) -> None:
        self.plan = plan
        self.stream = content_type.startswith("text/event-stream")
        self.allow = allow
        self.cut = False
        self.malformed = False
        self._buffer = b""
        self._body: list[bytes] = []
        self._size = 0
        self._model = plan.model
        self._reported: tuple[int, int, int] | None = None
        self._input: int | None = None  # a stream's input count, once it is told
        self._cached = 0
        self._output = 0  # delivered output tokens, estimated from text
        self._told_output = 0  # the provider's own running count (Anthropic)

    # -- the bytes --------------------------------------------------------------------

    def feed(self, chunk: bytes) -> bytes:
        """The part of ``chunk`` the client gets now."""
        if self.cut:
            return b""
        if not self.stream:
            self._size += len(chunk)
            if self._size <= MAX_PARSED_BODY:
                self._body.append(chunk)
            return chunk
        self._buffer += chunk
        out: list[bytes] = []
        while not self.cut:
            end, sep = _next_event(self._buffer)
            if end < 0:
                break
            event, self._buffer = self._buffer[: end + sep], self._buffer[end + sep :]
            out.append(self._event(event))
        if self.cut:
            self._buffer = b""
            out.append(self.error_event())
        return b"".join(out)

    def flush(self) -> bytes:
        """What is left at the end of the answer (an unterminated last event, as it came)."""
        rest, self._buffer = self._buffer, b""
        if rest and not self.cut:
            return self._event(rest)
        return b""

    def error_event(self) -> bytes:
        """The event that tells the client its stream was ended at the budget."""
        error = {"type": "budget_exceeded", "message": CUT_MESSAGE}
        if self.plan.meter == "anthropic":
            data = json.dumps({"type": "error", "error": error}, separators=(",", ":"))
            return b"event: error\ndata: " + data.encode() + b"\n\n"
        data = json.dumps({"error": {**error, "code": "budget_exceeded"}}, separators=(",", ":"))
        return b"data: " + data.encode() + b"\n\n"

    # -- what it used -----------------------------------------------------------------

    def usage(self) -> Usage | None:
        """The answer's usage, or None when the provider reported none (flagged)."""
        if not self.stream:
            try:
                data = json.loads(b"".join(self._body)) if self._size <= MAX_PARSED_BODY else None
            except ValueError:
                data = None
            counts = usage_from_json(self.plan.meter, data)
            if counts is None:
                return None
            model = data.get("model") if isinstance(data, dict) else None
            return Usage(model if isinstance(model, str) else self._model, *counts, reported=True)
        if self._reported is not None and not self.cut:
            return Usage(self._model, *self._reported, reported=True)
        return None

    def delivered(self) -> Usage:
        """An estimate of what the client received (for a stream cut off or never counted)."""
        output = max(self._output, self._told_output)
        inp = self._input if self._input is not None else self.plan.input_estimate
        return Usage(self._model, inp, output, self._cached, reported=False)

    # -- one SSE event --------------------------------------------------------------

    def _event(self, raw: bytes) -> bytes:
        data, _ = _parse_event(raw)
        if data is None:
            return raw
        if data.strip() == b"[DONE]":
            return raw
        try:
            obj = json.loads(data)
        except ValueError:
            self.malformed = True
            return raw
        if not isinstance(obj, dict):
            return raw
        if isinstance(obj.get("model"), str):
            self._model = obj["model"]
        if self.plan.meter == "anthropic":
            more = self._anthropic(obj)
        else:
            more = self._openai(obj)
            if self.plan.strip_usage:
                stripped = self._strip(raw, obj)
                if stripped is None:
                    return b""
                raw = stripped
        if more and self.allow is not None:
            inp = self._input if self._input is not None else self.plan.input_estimate
            if not self.allow(inp, max(self._output + more, self._told_output)):
                self.cut = True
                return b""
        self._output += more
        return raw

    def _openai(self, obj: dict[str, Any]) -> int:
        kind = obj.get("type")
        if isinstance(kind, str):  # the Responses API names its events
            if kind == "response.completed" and isinstance(obj.get("response"), dict):
                counts = usage_from_json("openai", obj["response"])
                if counts is not None:
                    self._reported = counts
                model = obj["response"].get("model")
                if isinstance(model, str):
                    self._model = model
                return 0
            return _text_tokens(obj.get("delta")) if kind.endswith(".delta") else 0
        counts = usage_from_json("openai", obj)
        if counts is not None:
            self._reported = counts
        more = 0
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                more += _text_tokens(delta.get("content"))
                for call in delta.get("tool_calls") or ():
                    if isinstance(call, dict) and isinstance(call.get("function"), dict):
                        more += _text_tokens(call["function"].get("arguments"))
            more += _text_tokens(choice.get("text"))
        return more

    def _anthropic(self, obj: dict[str, Any]) -> int:
        kind = obj.get("type")
        if kind == "message_start" and isinstance(obj.get("message"), dict):
            message = obj["message"]
            if isinstance(message.get("model"), str):
                self._model = message["model"]
            counts = usage_from_json("anthropic", message)
            if counts is not None:
                self._input, told, self._cached = counts
                self._told_output = max(self._told_output, told)
                self._reported = (self._input, self._told_output, self._cached)
            return 0
        if kind == "message_delta":
            usage = obj.get("usage")
            if isinstance(usage, dict) and "output_tokens" in usage:
                # Cumulative: the latest count is the answer's output so far.
                self._told_output = max(self._told_output, _int(usage.get("output_tokens")))
                if self._reported is not None:
                    self._reported = (self._reported[0], self._told_output, self._reported[2])
                else:
                    inp = self.plan.input_estimate if self._input is None else self._input
                    self._reported = (inp, self._told_output, self._cached)
            return 0
        if kind == "content_block_delta" and isinstance(obj.get("delta"), dict):
            delta = obj["delta"]
            return sum(_text_tokens(delta.get(k)) for k in ("text", "partial_json", "thinking"))
        return 0

    def _strip(self, raw: bytes, obj: dict[str, Any]) -> bytes | None:
        """The event as it would have come without include_usage; None to drop it."""
        if "usage" not in obj:
            return raw
        if obj["usage"] is not None:
            # The usage chunk itself: keyfob asked for it, the client did not.
            return None if not obj.get("choices") else raw
        for member in _NULL_USAGE:
            if raw.count(member) == 1:
                candidate = raw.replace(member, b"", 1)
                data, _ = _parse_event(candidate)
                try:
                    if data is not None and json.loads(data) == {
                        k: v for k, v in obj.items() if k != "usage"
                    }:
                        return candidate
                except ValueError:
                    pass
        self.malformed = True
        return raw


def _next_event(buffer: bytes) -> tuple[int, int]:
    """Where the first complete event ends in ``buffer`` and its separator's length."""
    best, size = -1, 0
    for sep in _SEPARATORS:
        at = buffer.find(sep)
        if at >= 0 and (best < 0 or at < best):
            best, size = at, len(sep)
    return best, size


def _parse_event(raw: bytes) -> tuple[bytes | None, bytes | None]:
    """The data (lines joined) and event name of one SSE event."""
    data: list[bytes] = []
    name = None
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            name = line[6:].strip()
    return (b"\n".join(data) if data else None), name
