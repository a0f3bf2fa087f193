"""The metering readers and the price table, without a server."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from keyfob.profiles import metering, resolve
from keyfob.profiles.prices import BadPrice, Price, PriceTable, cost_nano, parse_csv
from keyfob.profiles.taps import Tap

OPENAI = resolve({"preset": "openai"})
ANTHROPIC = resolve({"preset": "anthropic"})


def plan_of(profile, path: str, body: dict) -> metering.Plan:  # type: ignore[no-untyped-def]
    raw = json.dumps(body).encode()
    plan = metering.plan(profile, "POST", path, raw, len(raw))
    assert plan is not None
    return plan


def test_other_paths_and_presets_are_not_metered_by_tokens() -> None:
    generic = resolve({"preset": "stripe"})
    assert metering.plan(generic, "POST", "/v1/charges", b"{}", 2) is None
    assert metering.plan(OPENAI, "GET", "/v1/models", None, 0) is None


def test_a_stream_split_anywhere_is_stripped_exactly() -> None:
    """Every cut of the upstream bytes gives the client the same stream."""
    body = {"model": "gpt-4o", "messages": [], "stream": True}
    plan = plan_of(OPENAI, "/v1/chat/completions", body)
    assert plan.strip_usage
    assert json.loads(plan.body or b"")["stream_options"] == {"include_usage": True}
    chunk = '{"id":"c","choices":[{"index":0,"delta":{"content":"hey"}}],"usage":null}'
    final = '{"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1}}'
    upstream = f"data: {chunk}\n\ndata: {final}\n\ndata: [DONE]\n\n".encode()
    expected = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hey"}}]}\n\n'
    expected += b"data: [DONE]\n\n"
    for cut in range(1, len(upstream)):
        tap = Tap(plan, "text/event-stream")
        seen = tap.feed(upstream[:cut]) + tap.feed(upstream[cut:]) + tap.flush()
        assert seen == expected, cut
        usage = tap.usage()
        assert usage is not None
        assert (usage.input_tokens, usage.output_tokens) == (9, 1)


def test_responses_api_stream_and_embeddings_json() -> None:
    plan = plan_of(OPENAI, "/v1/responses", {"model": "gpt-4.1", "stream": True})
    assert not plan.strip_usage
    tap = Tap(plan, "text/event-stream")
    done = {
        "type": "response.completed",
        "response": {
            "model": "gpt-4.1-2025",
            "usage": {
                "input_tokens": 12,
                "output_tokens": 4,
                "input_tokens_details": {"cached_tokens": 8},
            },
        },
    }
    events = [
        {"type": "response.output_text.delta", "delta": "hello"},
        done,
    ]
    raw = b"".join(b"event: x\ndata: " + json.dumps(e).encode() + b"\n\n" for e in events)
    assert tap.feed(raw) == raw
    usage = tap.usage()
    assert usage is not None
    assert (usage.model, usage.input_tokens, usage.output_tokens, usage.cached_tokens) == (
        "gpt-4.1-2025",
        12,
        4,
        8,
    )

    embed = plan_of(OPENAI, "/v1/embeddings", {"model": "text-embedding-3-small"})
    assert embed.max_output == 0
    tap = Tap(embed, "application/json")
    tap.feed(json.dumps({"usage": {"prompt_tokens": 5, "total_tokens": 5}}).encode())
    usage = tap.usage()
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (5, 0)


def test_anthropic_counts_cache_reads_as_cached_input() -> None:
    plan = plan_of(ANTHROPIC, "/v1/messages", {"model": "claude-sonnet-4", "max_tokens": 9})
    tap = Tap(plan, "application/json")
    usage_json = {"input_tokens": 3, "cache_read_input_tokens": 100, "output_tokens": 9}
    tap.feed(json.dumps({"model": "claude-sonnet-4", "usage": usage_json}).encode())
    usage = tap.usage()
    assert usage is not None
    assert (usage.input_tokens, usage.cached_tokens, usage.output_tokens) == (103, 100, 9)


def test_prices_cost_exact_nanodollars_and_prefixes() -> None:
    table = PriceTable()
    price = table.lookup("gpt-4o-mini-2024-07-18")
    assert price is not None
    assert price.input == Decimal("0.15")  # gpt-4o-mini, not gpt-4o
    assert cost_nano(price, 1_000_000, 0) == 150_000_000
    assert cost_nano(price, 1, 1) == 750  # 150 + 600 nano-dollars
    assert table.lookup("no-such-model") is None
    fallback = Price(Decimal(1), Decimal(2), Decimal(1))
    assert PriceTable(fallback=fallback).lookup("no-such-model") == fallback


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("model,input,output\na,1,2\nb,-1,2\n", 3),
        ("a,1,2\na,1,2\n", 2),
        ("a,1\n", 1),
        ("a,1,2\nb,1,2,x\n", 2),
        ("a,1,NaN\n", 1),
    ],
)
def test_a_bad_price_row_names_its_line(text: str, line: int) -> None:
    with pytest.raises(BadPrice) as refused:
        parse_csv(text)
    assert refused.value.line == line
