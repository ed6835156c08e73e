"""Which remote_addrs entries are gateways, and the order extsock walks them in."""

from __future__ import annotations

import pytest

from extsock_py.domain.gateways import classify_address, initiable_gateways, next_gateway


@pytest.mark.parametrize(
    ("entry", "initiable", "reason_has"),
    [
        ("10.0.0.1", True, ""),
        (" 10.0.0.1 ", True, ""),
        ("2001:db8::1", True, ""),
        ("fe80::1%eth0", True, ""),
        ("::1", False, "loopback"),
        ("127.0.0.1", False, "loopback"),
        ("0.0.0.0", False, "unspecified"),
        ("::", False, "unspecified"),
        ("255.255.255.255", False, "broadcast"),
        ("224.0.0.1", False, "multicast"),
        ("ff02::1", False, "multicast"),
        ("vpn.example.net\n", True, ""),
        ("vpn.example.net", True, ""),
        ("vpn.example.net.", True, ""),
        ("gw-1", True, ""),
        ("%any", False, "any peer"),
        ("%any6", False, "any peer"),
        ("10.0.0.0/24", False, "subnet"),
        ("2001:db8::/64", False, "subnet"),
        ("10.0.0.1-10.0.0.9", False, "range"),
        ("2001:db8::1-2001:db8::9", False, "range"),
        ("", False, "empty"),
        ("   ", False, "empty"),
        ("10.0.0.256", False, "not an IPv4"),
        ("1.2.3", False, "not an IPv4"),
        ("bad_name!", False, "not an IPv4"),
        ("-leading.example", False, "not an IPv4"),
    ],
)
def test_classify_address(entry: str, initiable: bool, reason_has: str) -> None:
    verdict = classify_address(entry)
    assert verdict.initiable is initiable
    assert reason_has in verdict.reason
    if initiable:
        assert verdict.address == entry.strip() and verdict.reason == ""


def test_initiable_gateways_keeps_list_order_and_drops_duplicates() -> None:
    gateways, rejected = initiable_gateways(
        ["10.0.0.2", "%any", "2001:db8::1", "10.0.0.2", "10.1.0.0/16", "vpn.example.net"]
    )
    assert gateways == ("10.0.0.2", "2001:db8::1", "vpn.example.net")
    assert [v.address for v in rejected] == ["%any", "10.1.0.0/16"]
    assert not any(v.initiable for v in rejected)


def test_initiable_gateways_of_nothing() -> None:
    assert initiable_gateways([]) == ((), ())


G2 = ("a", "b")
G3 = ("10.0.0.1", "10.0.0.2", "10.0.0.3")
V6 = ("2001:db8::1", "2001:db8::2")


@pytest.mark.parametrize(
    ("gateways", "current", "expected"),
    [
        (G2, "a", "b"),
        (G2, "b", "a"),
        (G3, "10.0.0.1", "10.0.0.2"),
        (G3, "10.0.0.2", "10.0.0.3"),
        (G3, "10.0.0.3", "10.0.0.1"),
        (V6, "2001:db8::1", "2001:db8::2"),
        (V6, "2001:db8::2", "2001:db8::1"),
        (G3, None, "10.0.0.1"),
        (G3, "10.9.9.9", "10.0.0.1"),  # no longer in the list: back to the primary
        (("only",), "only", "only"),
    ],
)
def test_next_gateway_is_cyclic(
    gateways: tuple[str, ...], current: str | None, expected: str
) -> None:
    assert next_gateway(gateways, current) == expected


def test_next_gateway_of_no_gateways() -> None:
    with pytest.raises(ValueError):
        next_gateway((), None)
