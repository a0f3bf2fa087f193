"""The path and query an agent asks the proxy for: the upstream serves what keyfob checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from urllib.parse import parse_qsl, unquote_to_bytes

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from keyfob import paths
from keyfob.paths import (
    REFUSALS,
    PathRefused,
    check_query,
    join,
    normalise,
    query_names,
    split_route,
    with_param,
    without_param,
)

T = TypeVar("T")
CANARY = "sk-canary-path-7f3a9c"
PCHAR = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@"

# Segments that are fine, odd, or hostile, so that a fair share of drawn paths is accepted.
segment = st.one_of(
    st.text(PCHAR, max_size=8),
    st.sampled_from(
        [
            *[".", "..", "...", ".a", "..;x", "%2e", "%2E%2e", ".%2E", "%2f", "%2F", "%5c"],
            *["%41", "%7e", "%7E", "%25", "%c3%a4", "%3b", "%00", "%0d%0a", "%7f", "%zz", "%"],
            *["%4", "", " ", "\\", "?", "#", "\t", "\r\n", "\x00", "\u00e4", '"', "<>", "^`{|}"],
        ]
    ),
)
drawn_path = st.lists(segment, min_size=1, max_size=8).map(lambda parts: "/" + "/".join(parts))


def segments(path: str) -> list[str]:
    return path[1:].split("/")


def refusal_of(check: Callable[[T], object], value: T) -> str | None:
    """The message ``check(value)`` is refused with, or None when it is accepted."""
    try:
        check(value)
    except PathRefused as refused:
        return str(refused)
    return None


# -- split_route ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "parts"),
    [
        (b"/proxy/openai/prod/default", ("openai", "prod", "default", "/")),
        (b"/proxy/openai/prod/default/", ("openai", "prod", "default", "/")),
        (b"/proxy/openai/prod/default/v1/models", ("openai", "prod", "default", "/v1/models")),
        (b"/proxy/a/b_c/d-9/v1//x", ("a", "b_c", "d-9", "/v1//x")),  # normalise refuses it
        (b"/proxy/stripe/prod/billing-bot/%2e%2e", ("stripe", "prod", "billing-bot", "/%2e%2e")),
    ],
)
def test_split_route_names_the_set_and_keeps_the_rest_raw(
    raw: bytes, parts: tuple[str, str, str, str]
) -> None:
    assert split_route(raw) == parts


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"/v1/models", paths.NOT_A_ROUTE),
        (b"/proxy", paths.NOT_A_ROUTE),
        (b"/proxy/", paths.NOT_A_ROUTE),
        (b"/proxy/openai", paths.NOT_A_ROUTE),
        (b"/proxy/openai/prod", paths.NOT_A_ROUTE),
        (b"/proxy/openai/prod/", paths.BAD_SLUG),
        (b"/proxy//prod/default", paths.BAD_SLUG),
        (b"/proxy/OpenAI/prod/default", paths.BAD_SLUG),
        (b"/proxy/open%61i/prod/default", paths.BAD_SLUG),
        (b"/proxy/openai/%2e%2e/default", paths.BAD_SLUG),
        (b"/proxy/openai/../default/v1", paths.BAD_SLUG),
        (b"/proxy/-openai/prod/default", paths.BAD_SLUG),
        (b"/proxy/openai/prod/default\n/v1", paths.BAD_SLUG),
        (b"/proxy/" + b"a" * 65 + b"/prod/default", paths.BAD_SLUG),
        (b"/proxy/op\xc3\xa9nai/prod/default", paths.NOT_ASCII),
        (b"/proxy/openai/prod/default/" + b"a" * 4096, paths.TOO_LONG),
    ],
)
def test_split_route_refuses_anything_but_three_slugs(raw: bytes, message: str) -> None:
    with pytest.raises(PathRefused) as caught:
        split_route(raw)
    assert str(caught.value) == message


# -- normalise ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rest", "path"),
    [
        ("/", "/"),
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/models/", "/v1/models/"),
        ("/%7E%61", "/~a"),
        ("/%7e%2D%2e%5F", "/~-._"),
        ("/a%2a", "/a%2A"),
        ("/%c3%a4", "/%C3%A4"),
        ("/%25", "/%25"),
        ("/%252e%252e", "/%252e%252e"),  # one decoding gives "%2e%2e", not ".."
        ("/a;b=c,d", "/a;b=c,d"),
        ("/@me:x/!$&'()*+,;=", "/@me:x/!$&'()*+,;="),
        ("/...", "/..."),
        ("/.well-known/x", "/.well-known/x"),
        ("/a..b/..c/c..", "/a..b/..c/c.."),
        ("/%3B..", "/%3B.."),
    ],
)
def test_normalise_accepts_rfc3986_paths_in_canonical_form(rest: str, path: str) -> None:
    assert normalise(rest) == path


@pytest.mark.parametrize(
    ("rest", "message"),
    [
        ("/..", paths.DOT_SEGMENT),
        ("/.", paths.DOT_SEGMENT),
        ("/a/../../b", paths.DOT_SEGMENT),
        ("/a/./b", paths.DOT_SEGMENT),
        ("/v1/models/..", paths.DOT_SEGMENT),
        ("/%2e%2e/", paths.DOT_SEGMENT),
        ("/%2E%2E", paths.DOT_SEGMENT),
        ("/%2E./x", paths.DOT_SEGMENT),
        ("/.%2e/", paths.DOT_SEGMENT),
        ("/%2e", paths.DOT_SEGMENT),
        ("/v1/..;/admin", paths.DOT_SEGMENT),
        ("/v1/%2e%2e;jsessionid=x/admin", paths.DOT_SEGMENT),
        ("/.;/x", paths.DOT_SEGMENT),
        ("//evil.example/x", paths.EMPTY_SEGMENT),
        ("/a//b", paths.EMPTY_SEGMENT),
        ("/a//", paths.EMPTY_SEGMENT),
        ("//", paths.EMPTY_SEGMENT),
        ("/a%2fb", paths.ENCODED_SLASH),
        ("/a%2Fb", paths.ENCODED_SLASH),
        ("/%2f%2fevil.example", paths.ENCODED_SLASH),
        ("/a%5cb", paths.ENCODED_BACKSLASH),
        ("/a%5C..%5Cb", paths.ENCODED_BACKSLASH),
        ("/a%00", paths.ENCODED_CONTROL),
        ("/a%0d%0aHost:x", paths.ENCODED_CONTROL),
        ("/a%09", paths.ENCODED_CONTROL),
        ("/a%1F", paths.ENCODED_CONTROL),
        ("/a%7f", paths.ENCODED_CONTROL),
        ("/%zz", paths.MALFORMED),
        ("/%", paths.MALFORMED),
        ("/a%4", paths.MALFORMED),
        ("/a%%41", paths.MALFORMED),
        ("/a\\b", paths.UNENCODED),
        ("/a b", paths.UNENCODED),
        ('/a"b', paths.UNENCODED),
        ("/<script>", paths.UNENCODED),
        ("/a^b", paths.UNENCODED),
        ("/a`b", paths.UNENCODED),
        ("/{a|b}", paths.UNENCODED),
        ("/a?b", paths.UNENCODED),
        ("/a#b", paths.UNENCODED),
        ("/a[0]", paths.UNENCODED),
        ("/a\r\nHost: x", paths.CONTROL),
        ("/a\x00", paths.CONTROL),
        ("/a\tb", paths.CONTROL),
        ("/a\x7f", paths.CONTROL),
        ("/\u00e4", paths.NOT_ASCII),
        ("/\u2025", paths.NOT_ASCII),  # two-dot leader
        ("/\uff0e\uff0e/x", paths.NOT_ASCII),  # full-width full stops
        ("", paths.NOT_ABSOLUTE),
        ("v1/models", paths.NOT_ABSOLUTE),
        ("\\\\evil.example", paths.NOT_ABSOLUTE),
        ("/" + "a" * paths.MAX_PATH, paths.TOO_LONG),
    ],
)
def test_normalise_refuses_escapes_with_a_fixed_reason(rest: str, message: str) -> None:
    with pytest.raises(PathRefused) as caught:
        normalise(rest)
    assert str(caught.value) == message


def test_the_length_limit_is_inclusive() -> None:
    path = "/" + "a" * (paths.MAX_PATH - 1)
    assert normalise(path) == path


@given(drawn_path)
@example("/%7e/%2e%2e;x/%41")
def test_normalise_output_is_canonical_and_means_the_same_bytes(rest: str) -> None:
    message = refusal_of(normalise, rest)
    if message is not None:
        assert message in REFUSALS
        return
    path = normalise(rest)
    assert normalise(path) == path
    assert unquote_to_bytes(path) == unquote_to_bytes(rest)
    assert "%2F" not in path.upper()
    assert "%5C" not in path.upper()
    *inner, last = segments(path)
    assert all(inner), "no empty segment but a trailing one"
    assert all(s.partition(";")[0] not in (".", "..") for s in [*inner, last])
    assert all(byte >= 0x20 and byte != 0x7F for byte in unquote_to_bytes(path))


@given(drawn_path)
def test_normalise_accepts_only_what_decodes_to_a_plain_path(rest: str) -> None:
    """Decoded, an accepted path has no dot segment, empty segment, backslash or control byte."""
    decoded = unquote_to_bytes(rest) if "%" in rest else rest.encode("utf-8")
    if refusal_of(normalise, rest) is not None:
        return
    assert b"\\" not in decoded
    assert b"//" not in decoded
    assert all(b >= 0x20 and b != 0x7F for b in decoded)


@given(drawn_path, st.sampled_from(["", "/", "/x", "?", "%2"]))
def test_a_refusal_never_echoes_the_path(rest: str, tail: str) -> None:
    candidate = f"/{CANARY}{rest}{tail}"
    message = refusal_of(normalise, candidate)
    assert message is None or (message in REFUSALS and CANARY not in message)


@given(st.binary(max_size=64))
def test_split_route_refusals_never_echo_the_path(tail: bytes) -> None:
    message = refusal_of(split_route, b"/proxy/" + CANARY.encode() + tail)
    assert message is None or (message in REFUSALS and CANARY not in message)


# -- join ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "path", "joined"),
    [
        ("", "/", "/"),
        ("", "/v1/models", "/v1/models"),
        ("/", "/v1/models", "/v1/models"),
        ("/v1", "/models", "/v1/models"),
        ("/v1/", "/models", "/v1/models"),
        ("/v1", "/", "/v1/"),
        ("/v1", "/models/", "/v1/models/"),
    ],
)
def test_join_puts_the_path_under_the_base_path_once(base: str, path: str, joined: str) -> None:
    assert join(base, path) == joined


@pytest.mark.parametrize(("base", "path"), [("v1", "/x"), ("/v1", "x"), ("", "")])
def test_join_takes_only_absolute_paths(base: str, path: str) -> None:
    with pytest.raises(ValueError, match="absolute paths"):
        join(base, path)


@given(st.sampled_from(["", "/", "/v1", "/v1/", "/api/v2"]), drawn_path)
def test_join_never_makes_an_empty_segment(base: str, rest: str) -> None:
    try:
        path = normalise(rest)
    except PathRefused:
        return
    joined = join(base, path)
    assert "//" not in joined
    assert joined.startswith(base.rstrip("/") + "/")
    assert joined.endswith(path)


# -- query --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"", b"a=1&b=2", b"q=a+b%20c", b"expand[]=customer", b"a=%C3%A4", b"x", b"a=1;b=2", b"=v"],
)
def test_check_query_passes_a_well_formed_query_through(raw: bytes) -> None:
    assert check_query(raw) == raw.decode("ascii")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"a=1\r\nX-Injected: y", paths.QUERY_CONTROL),
        (b"a=1\n", paths.QUERY_CONTROL),
        (b"a=1\r", paths.QUERY_CONTROL),
        (b"a=\x00", paths.QUERY_CONTROL),
        (b"a=1\tb", paths.QUERY_CONTROL),
        (b"a=1 b", paths.QUERY_CONTROL),
        (b"a=1#frag", paths.QUERY_CONTROL),
        (b"a=\x7f", paths.QUERY_CONTROL),
        (b"a=\xc3\xa4", paths.QUERY_NOT_ASCII),
        (b"a=\xff", paths.QUERY_NOT_ASCII),
        (b"a=%zz", paths.QUERY_MALFORMED),
        (b"a=%", paths.QUERY_MALFORMED),
        (b"a=%4", paths.QUERY_MALFORMED),
        (b"a=%4g", paths.QUERY_MALFORMED),
    ],
)
def test_check_query_refuses_what_could_split_or_smuggle(raw: bytes, message: str) -> None:
    with pytest.raises(PathRefused) as caught:
        check_query(raw)
    assert str(caught.value) == message


@given(st.binary(max_size=32))
def test_check_query_refusals_never_echo_the_query(tail: bytes) -> None:
    message = refusal_of(check_query, CANARY.encode() + tail)
    assert message is None or (message in REFUSALS and CANARY not in message)


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("", []),
        ("a=1&b=2&a=3", ["a", "b", "a"]),
        ("flag", ["flag"]),
        ("a=1&&b", ["a", "b"]),
        ("%6Bey=v&a+b=1&c%20d=2", ["key", "a b", "c d"]),
        ("=v", [""]),
        ("a=b=c", ["a"]),
    ],
)
def test_query_names_lists_decoded_names_in_order(query: str, names: list[str]) -> None:
    assert query_names(query) == names


pair_text = st.text(min_size=1, max_size=10)


@given(st.lists(st.tuples(pair_text, pair_text), max_size=6))
def test_query_names_never_hold_values(pairs: list[tuple[str, str]]) -> None:
    query = "&".join(with_param("", name, CANARY + value) for name, value in pairs)
    names = query_names(query)
    assert names == [name for name, _ in pairs]
    assert not any(CANARY in name for name in names)


@pytest.mark.parametrize(
    ("query", "stripped"),
    [
        ("", ""),
        ("key=x", ""),
        ("key", ""),
        ("a=1&key=x&b=2", "a=1&b=2"),
        ("key=x&a=1&KEY=y&k%65y=z&Key=w", "a=1"),
        ("keys=1&a_key=2&key_=3", "keys=1&a_key=2&key_=3"),
        ("a=key&b=2", "a=key&b=2"),
    ],
)
def test_without_param_removes_every_spelling_of_the_name(query: str, stripped: str) -> None:
    assert without_param(query, "key") == stripped


@pytest.mark.parametrize(
    ("query", "name", "value", "result"),
    [
        ("", "key", "abc", "key=abc"),
        ("a=1", "key", "abc", "a=1&key=abc"),
        ("", "api key", "s k/&=?#%", "api%20key=s%20k%2F%26%3D%3F%23%25"),
        ("", "k", "\u00e4", "k=%C3%A4"),
    ],
)
def test_with_param_appends_one_encoded_pair(
    query: str, name: str, value: str, result: str
) -> None:
    assert with_param(query, name, value) == result


query_text = st.lists(
    st.tuples(st.sampled_from(["a", "key", "KEY", "k%65y", "b+c", ""]), st.text(max_size=6)),
    max_size=6,
).map(lambda pairs: "&".join(f"{n}={v}" for n, v in pairs))


@given(query_text, st.text(min_size=1, max_size=20))
def test_the_injected_parameter_is_the_only_one_with_its_name(query: str, value: str) -> None:
    final = with_param(without_param(query, "key"), "key", value)
    values = [v for n, v in parse_qsl(final, keep_blank_values=True) if n.lower() == "key"]
    assert values == [value]
    assert query_names(final)[-1] == "key"
