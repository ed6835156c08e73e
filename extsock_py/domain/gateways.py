"""Gateway addresses: which entries of `remote_addrs` extsock can initiate to, and in what order."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

# A DNS name as charon resolves it for remote_addrs: labels of letters, digits and hyphens.
_DNS_NAME = re.compile(
    r"(?=.{1,253}\Z)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?"
)


@dataclass(frozen=True)
class AddressVerdict:
    """Whether one remote_addrs entry can be initiated to, and why not."""

    address: str
    initiable: bool
    reason: str = ""


def classify_address(entry: str) -> AddressVerdict:
    """Tell whether charon could initiate to this remote_addrs entry."""
    text = entry.strip()
    if not text:
        return AddressVerdict(entry, False, "empty entry")
    if text.startswith("%"):
        return AddressVerdict(text, False, f"{text} matches any peer and names no gateway")
    if "/" in text:
        return AddressVerdict(text, False, "a subnet matches peers and names no single gateway")
    if "-" in text and _is_range(text):
        return AddressVerdict(text, False, "a range matches peers and names no single gateway")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        why = _not_unicast(address)
        return AddressVerdict(text, False, why) if why else AddressVerdict(text, True)
    if _DNS_NAME.fullmatch(text) and not text.replace(".", "").isdigit():
        return AddressVerdict(text, True)
    return AddressVerdict(text, False, "not an IPv4 or IPv6 address or a DNS name")


def _not_unicast(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Why `address` cannot be a gateway: charon cannot initiate to it, or only to itself."""
    if address.is_unspecified:
        return "the unspecified address names no gateway"
    if address.is_loopback:
        return "a loopback address is this host, not a gateway"
    if address.is_multicast:
        return "a multicast address names no single gateway"
    if address == ipaddress.IPv4Address("255.255.255.255"):
        return "the broadcast address names no single gateway"
    return ""


def _is_range(text: str) -> bool:
    first, _, last = text.partition("-")
    try:
        ipaddress.ip_address(first.strip())
        ipaddress.ip_address(last.strip())
    except ValueError:
        return False
    return True


def initiable_gateways(
    remote_addrs: list[str],
) -> tuple[tuple[str, ...], tuple[AddressVerdict, ...]]:
    """Split remote_addrs into the gateways in list order and the entries that are not gateways."""
    gateways: list[str] = []
    rejected: list[AddressVerdict] = []
    for entry in remote_addrs:
        verdict = classify_address(entry)
        if verdict.initiable:
            if verdict.address not in gateways:
                gateways.append(verdict.address)
        else:
            rejected.append(verdict)
    return tuple(gateways), tuple(rejected)


def is_name(gateway: str) -> bool:
    """True for a DNS name (not an IPv4 or IPv6 address)."""
    try:
        ipaddress.ip_address(gateway)
    except ValueError:
        return True
    return False


def expand(configured: tuple[str, ...], resolved: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The gateways to try in turn: each address as listed, each name replaced by the
    addresses it resolved to (kept as a name when it resolved to none: charon will say),
    each address once."""
    out: list[str] = []
    for entry in configured:
        addresses = (resolved.get(entry) or (entry,)) if is_name(entry) else (entry,)
        for address in addresses:
            if address not in out:
                out.append(address)
    return tuple(out)


def next_gateway(gateways: tuple[str, ...], current: str | None) -> str:
    """The gateway after `current` in list order, cyclic; the primary when current is unknown."""
    if not gateways:
        raise ValueError("no gateways")
    if current is None or current not in gateways:
        return gateways[0]
    return gateways[(gateways.index(current) + 1) % len(gateways)]
