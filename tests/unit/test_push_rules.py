"""The pure rules behind the push policy: selectors and identities as charon reads them."""

from __future__ import annotations

import ipaddress

import pytest

from extsock_py.domain.identity import IdKind, parse_identity, parse_pattern, same_identity
from extsock_py.domain.selectors import (
    Selector,
    SelectorError,
    charon_reading,
    strict_reading,
)


def nets(*texts: str) -> Selector:
    return Selector(tuple(ipaddress.ip_network(t) for t in texts))


@pytest.mark.parametrize(
    ("text", "charon"),
    [
        ("0.0.0.0/0x", nets("0.0.0.0/0")),  # atoi("0x") = 0
        ("10.0.0.0/8abc", nets("10.0.0.0/8")),
        ("0.0.0.0/+0", nets("0.0.0.0/0")),
        ("0.0.0.0/ 0", nets("0.0.0.0/0")),
        ("10.0.0.0/264", nets("10.0.0.0/8")),  # a uint8_t
        ("10.0.0.1/-1", None),  # the "-" makes it a range for charon, and no valid one
        ("10.0.0.0/", nets("0.0.0.0/0")),
        ("%any", nets("0.0.0.0/32")),  # not everything: a host route to 0.0.0.0
        ("10.0.0.0 - 10.0.0.3", nets("10.0.0.0/30")),
        ("10.0.0.0/24[tcp/80]", nets("10.0.0.0/24")),
        ("::ffff:1.2.3.4", None),  # charon tries a dotted text as IPv4 only
        ("10.0.0.0/24,10.1.0.0/16", nets("10.0.0.0/24")),  # one list item: atoi stops at ','
        ("dynamic", Selector(dynamic=True)),
        ("host.example", None),
    ],
)
def test_charon_reads_selectors_with_atoi(text: str, charon: Selector | None) -> None:
    assert charon_reading(text) == charon


@pytest.mark.parametrize("text", ["0.0.0.0/0x", "10.0.0.0/8abc", "0.0.0.0/+0", "10.0.0.0/33"])
def test_the_strict_reading_refuses_what_charon_reads_otherwise(text: str) -> None:
    with pytest.raises(SelectorError, match="expected dynamic, an address"):
        strict_reading(text)


def test_the_strict_reading_agrees_with_charon_where_it_accepts() -> None:
    for text in ("10.0.0.0/8", "10.0.0.1", "2001:db8::/32", "10.0.0.0-10.0.0.3", "dynamic"):
        assert strict_reading(text) == charon_reading(text)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("host.example", "fqdn:host.example"),
        ("host.example", "@HOST.example"),
        ("host.example", "DNS:host.EXAMPLE"),
        ("host.example", "fqdn:#686f73742e6578616d706c65"),
        ("user@x.example", "email:USER@x.example"),
        ("user@x.example", "@@user@x.example"),
        ("user@x.example", "{3}:user@x.example"),
        ("10.0.0.1", "ipv4:10.0.0.1"),
        ("CN=a, O=b", "cn=a,o=b"),
    ],
)
def test_one_identity_to_charon_however_spelled(a: str, b: str) -> None:
    assert same_identity(a, b)


def test_different_types_are_different_identities() -> None:
    assert not same_identity("host.example", "email:host.example")
    assert not same_identity("host.example", "keyid:host.example")
    assert parse_identity("%any").kind is IdKind.ANY
    assert parse_identity("@#0a0b").value == b"\x0a\x0b"


def test_patterns_match_by_kind_and_case() -> None:
    pattern = parse_pattern("app-*.example.net")
    assert pattern.matches(parse_identity("APP-1.example.net"))
    assert pattern.matches(parse_identity("fqdn:app-2.example.net"))
    assert not pattern.matches(parse_identity("email:app-1.example.net"))
    assert not pattern.matches(parse_identity("app-1.example.net.evil"))
    assert parse_pattern("*@apps.example").matches(parse_identity("a@APPS.example"))
