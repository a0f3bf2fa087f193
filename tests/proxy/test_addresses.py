"""Which addresses the proxy may connect to, and which host literals name one."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyfob.addresses import REASONS, parse_host, refusal

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address

Address = IPv4 | IPv6

# Written from the spec, not copied from the module, so a slip in either shows up.
METADATA: set[Address] = {IPv4("169.254.169.254"), IPv4("100.100.100.200")}
METADATA |= {IPv4("168.63.129.16"), IPv6("fd00:ec2::254")}

REFUSED_V4 = [
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("169.254.0.0/16", "link_local"),
    ("100.64.0.0/10", "cgnat"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "reserved"),
    ("198.51.100.0/24", "reserved"),
    ("203.0.113.0/24", "reserved"),
    ("198.18.0.0/15", "reserved"),
]
REFUSED_V6 = [
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fc00::/7", "private"),
    ("fec0::/10", "private"),
    ("64:ff9b:1::/48", "private"),
    ("fe80::/10", "link_local"),
    ("ff00::/8", "multicast"),
    ("100::/64", "reserved"),
    ("2001::/32", "teredo"),
    ("2001:4::/32", "reserved"),  # IETF protocol assignments (2001::/23) beyond Teredo
    ("2001:db8::/32", "reserved"),
    ("3fff::/20", "reserved"),
    ("4000::/3", "reserved"),  # not global unicast (2000::/3)
    ("e000::/4", "reserved"),
]

PUBLIC_V4 = ["1.0.0.0/8", "8.0.0.0/8", "13.0.0.0/8", "34.0.0.0/8", "52.0.0.0/8", "104.0.0.0/8"]
PUBLIC_V4 += ["151.0.0.0/8", "185.0.0.0/8", "213.0.0.0/8"]
PUBLIC_V6 = ["2400::/12", "2600::/12", "2a00::/12", "2c00::/12"]


def in_network(cidr: str) -> st.SearchStrategy[Address]:
    network = ipaddress.ip_network(cidr)
    first, last = int(network.network_address), int(network.broadcast_address)
    make = type(network.network_address)  # ip_address(1) would be IPv4 even for ::1
    return st.integers(first, last).map(make)


def table(rows: list[tuple[str, str]]) -> st.SearchStrategy[tuple[Address, str]]:
    return st.sampled_from(rows).flatmap(lambda row: st.tuples(in_network(row[0]), st.just(row[1])))


def expected(address: Address, reason: str) -> str:
    """The reason for an address drawn from a network: the narrower classes inside it win."""
    if address in METADATA:
        return "metadata"
    return "broadcast" if address == IPv4("255.255.255.255") else reason


public_v4 = st.sampled_from(PUBLIC_V4).flatmap(in_network)
public_v6 = st.sampled_from(PUBLIC_V6).flatmap(in_network)


@given(table(REFUSED_V4))
def test_every_address_in_a_refused_ipv4_network_is_refused_for_its_reason(
    case: tuple[IPv4, str],
) -> None:
    address, reason = case
    assert refusal(address) == expected(address, reason)


@given(table(REFUSED_V6))
def test_every_address_in_a_refused_ipv6_network_is_refused_for_its_reason(
    case: tuple[IPv6, str],
) -> None:
    address, reason = case
    assert refusal(address) == expected(address, reason)


@given(st.one_of(public_v4, public_v6))
def test_public_addresses_pass(address: IPv4 | IPv6) -> None:
    assert refusal(address) is None


@pytest.mark.parametrize(
    "address",
    ["169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16"],
)
def test_metadata_endpoints_win_over_their_broader_class(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == "metadata"


def test_a_zone_id_does_not_hide_a_metadata_address() -> None:
    assert refusal(IPv6("fd00:ec2::254%eth0")) == "metadata"
    assert refusal(IPv6("fe80::1%eth0")) == "link_local"


# How an IPv6 address can carry an IPv4 one: (build, reason when the IPv4 one is public).
EMBEDDINGS: dict[str, tuple[Callable[[IPv4], IPv6], str | None]] = {
    "mapped": (lambda v4: IPv6(0xFFFF << 32 | int(v4)), "ipv4_mapped"),
    "translated": (lambda v4: IPv6(0xFFFF << 48 | int(v4)), "ipv4_mapped"),
    "compatible": (lambda v4: IPv6(int(v4)), "ipv4_mapped"),
    "nat64": (lambda v4: IPv6(int(IPv6("64:ff9b::")) | int(v4)), None),
    "6to4": (lambda v4: IPv6(0x2002 << 112 | int(v4) << 80 | 0xBEEF), None),
}


@given(st.sampled_from(sorted(EMBEDDINGS)), table(REFUSED_V4))
def test_an_embedded_refused_ipv4_address_is_refused_for_its_own_reason(
    form: str, case: tuple[IPv4, str]
) -> None:
    inner, reason = case
    build, _ = EMBEDDINGS[form]
    if form == "compatible" and int(inner) <= 1:
        reason = {0: "unspecified", 1: "loopback"}[int(inner)]  # :: and ::1 themselves
    assert refusal(build(inner)) == expected(inner, reason)


@given(st.sampled_from(sorted(EMBEDDINGS)), public_v4)
def test_an_embedded_public_ipv4_address_passes_only_through_real_routes(
    form: str, inner: IPv4
) -> None:
    build, reason = EMBEDDINGS[form]
    assert refusal(build(inner)) == reason


@given(st.ip_addresses())
def test_refusal_is_at_least_as_strict_as_ipaddress(address: IPv4 | IPv6) -> None:
    reason = refusal(address)
    assert reason is None or reason in REASONS
    # NAT64 and 6to4 are judged by the IPv4 address they carry, not by their prefix.
    carried = address.version == 6 and (
        address in ipaddress.ip_network("64:ff9b::/96")
        or address in ipaddress.ip_network("2002::/16")
    )
    if reason is None and not carried:
        assert address.is_global


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("::ffff:169.254.169.254", "metadata"),
        ("[::ffff:7f00:1]", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("[::ffff:10.0.0.1]", "private"),
        ("::127.0.0.1", "loopback"),
        ("2002:a00:1::", "private"),
        ("2002:a9fe:a9fe::1", "metadata"),
        ("64:ff9b::127.0.0.1", "loopback"),
        ("64:ff9b::7f00:1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("64:ff9b:1::808:808", "private"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "teredo"),
        ("::ffff:8.8.8.8", "ipv4_mapped"),
        ("[::FFFF:7F00:1]", "loopback"),
        ("FE80::1", "link_local"),
        ("[::]", "unspecified"),
        ("0.0.0.0", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("64:ff9b::8.8.8.8", None),
        ("2002:808:808::1", None),
        ("2606:4700:4700::1111", None),
        ("1.1.1.1", None),
    ],
)
def test_host_literals_are_classified_by_where_they_lead(host: str, reason: str | None) -> None:
    address = parse_host(host)
    assert address is not None
    assert refusal(address) == reason


@pytest.mark.parametrize(
    "host",
    [
        "127.1",
        "127.0.1",
        "0x7f.0.0.1",
        "0X7F.0.0.1",
        "0177.0.0.1",
        "2130706433",
        "0x7f000001",
        "017700000001",
        "127.000.000.001",
        "127.0.0.01",
        "1.2.3.4.",
        "1.2.3.4.5",
        "256.0.0.1",
        "foo.123",
        "foo.123.",
        "foo.0x7f",
        "123",
        "0",
    ],
)
def test_ambiguous_ipv4_forms_are_refused_not_guessed(host: str) -> None:
    with pytest.raises(ValueError, match="ambiguous IPv4 form"):
        parse_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "::1%eth0",
        "[fe80::1%eth0]",
        "[fe80::1%25eth0]",
        "[::1]x",
        "[::1]:443",
        "x[::1]",
        "[::1",
        "::1]",
        "[]",
        "[1.2.3.4]",
        "[[::1]]",
        "::ffff:127.1",
        "::ffff:0177.0.0.1",
        "::ffff:1.2.3.4.",
        "1.2.3.4::",
        ":::1",
        "1:2:3:4:5:6:7:8:9",
        "00000::1",
        "::g",
        "1.2.3.4:80",
        "1.2.3.-1",
        "",
        ".",
        "exa mple.com",
        "exa..mple.com",
        "-example.com",
        "example-.com",
        "under_score.com",
        "a%2eb.com",
        "example.com..",
        "a" * 64 + ".com",
        "ex\u00e4mple.com",
        "\u212aeyfob.com",  # Kelvin sign: lower-cases to an ASCII "k"
        "\uff11\uff12\uff17.0.0.1",  # full-width digits, which browsers fold to 127
        "127\u30020\u30020\u30021",  # ideographic full stops
    ],
)
def test_malformed_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the messages differ by form
        parse_host(host)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("0.0.0.0", "0.0.0.0"),
        ("10.0.0.255", "10.0.0.255"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("2001:db8:0:0:0:0:0:1", "2001:db8::1"),
        ("::ffff:1.2.3.4", "::ffff:102:304"),
    ],
)
def test_canonical_literals_parse(host: str, address: str) -> None:
    assert parse_host(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize(
    "host",
    [
        "api.openai.com",
        "localhost",
        "example.com.",
        "API.Example.COM",
        "xn--bcher-kva.example",
        "1.2.3.com",
        "0x7f.example",
        "a.b-c.d9",
        "123.example",
        "a" * 63 + ".io",
    ],
)
def test_dns_names_are_not_addresses(host: str) -> None:
    assert parse_host(host) is None


@given(st.ip_addresses(v=4))
def test_every_ipv4_address_round_trips_through_its_canonical_form(address: IPv4) -> None:
    assert parse_host(str(address)) == address


@given(st.ip_addresses(v=6))
def test_every_ipv6_address_round_trips_bracketed_or_not(address: IPv6) -> None:
    assert parse_host(str(address)) == address
    assert parse_host(f"[{address.exploded.upper()}]") == address


@given(st.lists(st.integers(0, 255), min_size=1, max_size=5), st.booleans())
def test_a_dotted_number_is_an_address_only_as_a_canonical_quad(
    parts: list[int], padded: bool
) -> None:
    host = ".".join(f"0{p}" if padded else str(p) for p in parts)
    if len(parts) == 4 and not padded:
        assert parse_host(host) == IPv4(host)
    else:
        with pytest.raises(ValueError, match="ambiguous IPv4 form"):
            parse_host(host)
