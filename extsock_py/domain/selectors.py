"""Traffic selectors read as charon reads them, and what traffic a child claims.

charon (vici `parse_ts`, `host_create_from_subnet`) reads `ADDR/BITS` with `atoi()` into a
`uint8_t`, clamped to the family's width: `0.0.0.0/0x`, `0.0.0.0/ 0`, `0.0.0.0/+0` are /0,
`10.0.0.0/8abc` is /8, `10.0.0.0/264` is /8 again, `10.0.0.0/-1` is /32. Python's
`ipaddress` refuses all of them. Two readings, so that neither can be fooled:

- `charon_reading`: what charon loaded from a configured connection (lenient, as charon);
- `strict_reading`: a pushed selector, accepted only in a form both read the same way.

Pure functions: no I/O.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ALL = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
MAX_LENGTH = 128

_V4 = r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}"
_V6 = r"[0-9A-Fa-f]*:[0-9A-Fa-f:.]*"
_BITS = r"0|[1-9][0-9]{0,2}"
_STRICT = re.compile(
    rf"(?P<addr>dynamic|(?P<a>{_V4}|{_V6})(?:/(?P<bits>{_BITS})|-(?P<b>{_V4}|{_V6}))?)"
    r"(?:\[(?P<pp>[A-Za-z0-9_-]*(?:/[A-Za-z0-9_-]*)?)\])?"
)
STRICT_FORM = (
    "dynamic, an address, ADDRESS/BITS (BITS in plain decimal, at most 32 or 128) or "
    "FROM-TO (no spaces), optionally followed by [PROTOCOL/PORT]"
)


class SelectorError(ValueError):
    """A pushed traffic selector that is refused; the message says why and what is accepted."""


@dataclass(frozen=True)
class Selector:
    """One traffic selector: `dynamic` (decided by charon when the SA comes up) or networks."""

    networks: tuple[Network, ...] = ()
    dynamic: bool = False


DYNAMIC = Selector(dynamic=True)


# --- charon's reading ------------------------------------------------------------------------


def _atoi(text: str) -> int:
    """C's atoi(): leading white space, an optional sign, then digits; 0 when none."""
    match = re.match(r"[ \t\n\v\f\r]*([+-]?[0-9]+)", text)
    return int(match.group(1)) if match else 0


def _host(text: str, version: int | None = None) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """host_create_from_string(): %any forms, then inet_pton (ValueError when neither)."""
    if text in ("%any", "%any4") and version in (None, 4):
        return ipaddress.IPv4Address(0)
    if text == "%any" or text == "%any6":
        return ipaddress.IPv6Address(0)
    if not re.fullmatch(rf"{_V4}|{_V6}", text):
        raise ValueError(text)
    if version is None and "." in text and ":" in text:
        raise ValueError(text)  # charon tries a dotted text as IPv4 only
    address = ipaddress.ip_address(text)
    if version is not None and address.version != version:
        raise ValueError(text)
    return address


@functools.lru_cache(maxsize=8192)  # pure: a push compares with every connection's selectors
def charon_reading(entry: str) -> Selector | None:
    """What charon loads for this `local_ts`/`remote_ts` entry (None: charon refuses it)."""
    text = entry.split("\0", 1)[0].split("[", 1)[0]
    try:
        if text == "dynamic":
            return DYNAMIC
        if "-" in text:
            first, _, last = text.partition("-")
            high = _host(last.lstrip(" "))
            low = _host(first.rstrip(" "), high.version)
            if int(low) > int(high):
                return Selector(())
            return Selector(tuple(ipaddress.summarize_address_range(low, high)))
        if "/" in text:
            addr, _, bits_text = text.partition("/")
            host = _host(addr)
            bits = min(_atoi(bits_text) & 0xFF, host.max_prefixlen)
        else:
            host = _host(text)
            bits = host.max_prefixlen
        return Selector((ipaddress.ip_network(f"{host}/{bits}", strict=False),))
    except ValueError:
        return None


# --- the strict reading of pushed selectors --------------------------------------------------


def strict_reading(entry: str) -> Selector:
    """A pushed selector, or SelectorError when charon might read it otherwise than here."""
    shown = entry if len(entry) <= 60 else entry[:60] + "..."
    match = _STRICT.fullmatch(entry) if len(entry) <= MAX_LENGTH else None
    why = ""
    if match is not None:
        try:
            parsed = _strict(match)
        except ValueError as exc:
            why = f" ({exc})"
        else:
            if parsed != charon_reading(entry):  # belt and braces: both readings agree
                why = " (charon would read it differently)"
            else:
                return parsed
    raise SelectorError(f"traffic selector {shown!r} is refused{why}: expected {STRICT_FORM}")


def _strict(match: re.Match[str]) -> Selector:
    if match.group("addr") == "dynamic":
        return DYNAMIC
    first = ipaddress.ip_address(match.group("a"))
    if match.group("b") is not None:
        last = ipaddress.ip_address(match.group("b"))
        if first.version != last.version or int(first) > int(last):
            raise ValueError("FROM and TO must be of one family, FROM not above TO")
        return Selector(tuple(ipaddress.summarize_address_range(first, last)))
    bits = first.max_prefixlen if match.group("bits") is None else int(match.group("bits"))
    if bits > first.max_prefixlen:
        raise ValueError(f"at most /{first.max_prefixlen} for IPv{first.version}")
    return Selector((ipaddress.ip_network(f"{first}/{bits}", strict=False),))


def within(selector: Selector, allowed: tuple[Network, ...]) -> bool:
    """Every network of `selector` inside one of `allowed` (a dynamic one never is)."""
    if selector.dynamic:
        return False
    return all(any(_inside(net, room) for room in allowed) for net in selector.networks)


def _inside(net: Network, room: Network) -> bool:
    if isinstance(net, ipaddress.IPv4Network) and isinstance(room, ipaddress.IPv4Network):
        return net.subnet_of(room)
    if isinstance(net, ipaddress.IPv6Network) and isinstance(room, ipaddress.IPv6Network):
        return net.subnet_of(room)
    return False


def overlaps(a: tuple[Network, ...], b: tuple[Network, ...]) -> tuple[Network, Network] | None:
    """A pair of overlapping networks, one from each, or None."""
    for one in a:
        for other in b:
            if one.version == other.version and one.overlaps(other):
                return one, other
    return None
