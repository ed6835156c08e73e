"""Checks and decoders for single swanctl.conf values, raising pydantic errors with context.

A check raises `PydanticCustomError('config', ...)` whose context carries `message` and
`accepted`; model.py turns the first one into a ConfigError naming file, line and key.
"""

from __future__ import annotations

import binascii
import ipaddress
import re
from collections.abc import Callable, Iterable

from pydantic_core import PydanticCustomError

from . import keys
from .settings import split_list

_DNS_NAME = re.compile(
    r"^(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?$"
)
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_B64_VALUES = {c: i for i, c in enumerate(_B64)} | {"+": 62, "-": 62, "/": 63, "_": 63, "=": 0}


def fail(message: str, accepted: str | None = None) -> PydanticCustomError:
    """The error a check raises; `message` must never contain a secret."""
    return PydanticCustomError("config", "{message}", {"message": message, "accepted": accepted})


def one_of(value: str, choices: Iterable[str], accepted: str) -> str:
    """A single value out of `choices`; a comma list gets its own message."""
    text = value.strip()
    if text in choices:
        return text
    if len(split_list(text)) > 1:
        raise fail(f"a list '{text}' where a single value is expected", accepted)
    raise fail(f"invalid value '{text}'", accepted)


def version(value: str) -> int:
    return int(one_of(value, ("0", "1", "2"), "0, 1 or 2"))


def integer(value: str) -> int:
    text = value.strip()
    if not text.isdigit():
        if len(split_list(text)) > 1:
            raise fail(f"a list '{text}' where a single value is expected", "an integer")
        raise fail(f"invalid value '{text}'", "an integer")
    return int(text)


_ACTIONS = ("none", "clear", "trap", "route", "start", "restart")


def action(value: str) -> str:
    text = value.strip()
    if "|" in text and all(part in ("none", "trap", "start") for part in text.split("|")):
        return text
    return one_of(text, _ACTIONS, "none, clear, trap, route, start, restart or trap|start")


def mode(value: str) -> str:
    return one_of(value, keys.MODES, ", ".join(keys.MODES) + " (iptfs from strongSwan 6.0.2)")


def auth(value: str) -> str:
    """What vici_config.c parse_auth() accepts."""
    text = value.strip()
    low = text.lower()
    if (
        text.startswith(("ike:", "pubkey", "rsa", "ecdsa", "bliss"))
        or low == "psk"
        or low.startswith(("eap", "xauth"))
    ):
        if len(split_list(text)) > 1:
            raise fail(f"a list '{text}' where a single value is expected", "one method a round")
        return text
    raise fail(
        f"invalid value '{text}'",
        "pubkey, psk, eap[-type], xauth[-backend], rsa/ecdsa[-constraints] or ike:<constraints>",
    )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_subnet_or_range(text: str) -> bool:
    if "/" in text:
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            return False
        return True
    low, sep, high = text.partition("-")
    return bool(sep) and _is_ip(low) and _is_ip(high)


def _address(token: str) -> bool:
    if token in ("%any", "%any4", "%any6") or _is_ip(token) or _is_subnet_or_range(token):
        return True
    return _DNS_NAME.match(token) is not None and not token.replace(".", "").isdigit()


def _traffic_selector(token: str) -> bool:
    net, bracket, rest = token.partition("[")
    if bracket and not rest.endswith("]"):
        return False
    return net == "dynamic" or _is_ip(net) or _is_subnet_or_range(net)


def _token_list(check: Callable[[str], bool], accepted: str) -> Callable[[str], tuple[str, ...]]:
    def parse(value: str) -> tuple[str, ...]:
        items = split_list(value)
        for item in items:
            if not check(item):
                raise fail(f"invalid list item '{item}'", accepted)
        return tuple(items)

    return parse


addresses = _token_list(
    _address, "a comma list of IP addresses, subnets, ranges, DNS names or %any"
)
traffic_selectors = _token_list(
    _traffic_selector, "a comma list of subnets, IP addresses, ranges or dynamic, each [proto/port]"
)
names = _token_list(bool, "a comma list")


def file_list(value: str) -> tuple[str, ...]:
    """certs/cacerts/pubkeys: file names, or inline 0x (hex) / 0s (base64) blobs."""
    items = split_list(value)
    for item in items:
        if item[:2].lower() in ("0x", "0s"):
            decode_blob(item)
    return tuple(items)


def decode_blob(text: str) -> bytes:
    """Decode a `0x` (hex) or `0s` (base64) value as swanctl does; other text as UTF-8."""
    prefix = text[:2].lower()
    if prefix == "0x":
        return _from_hex(text[2:])
    if prefix == "0s":
        return _from_base64(text[2:])
    return text.encode()


def _from_hex(text: str) -> bytes:
    # chunk_from_hex(): skips a second 0x, ignores ':' separators, odd length gets a leading 0.
    if text.startswith("0x"):
        text = text[2:]
    digits = text.replace(":", "")
    if len(digits) % 2:
        digits = "0" + digits
    try:
        return binascii.unhexlify(digits)
    except (binascii.Error, ValueError):
        raise fail("invalid 0x hex encoding", "0x followed by hex digits") from None


def _from_base64(text: str) -> bytes:
    # chunk_from_base64(): '-' and '_' as '+' and '/', each '=' drops one byte. It silently
    # drops a trailing partial group of 4; that truncates a key, so it is an error here.
    if len(text) % 4:
        raise fail("0s base64 length is not a multiple of 4", "complete base64, padded with '='")
    out = bytearray()
    length = 0
    for start in range(0, len(text) // 4 * 4, 4):
        group = text[start : start + 4]
        try:
            b = [_B64_VALUES[c] for c in group]
        except KeyError:
            raise fail("invalid 0s base64 encoding", "0s followed by base64") from None
        out += bytes(
            [
                ((b[0] << 2) | (b[1] >> 4)) & 0xFF,
                ((b[1] << 4) | (b[2] >> 2)) & 0xFF,
                ((b[2] << 6) | b[3]) & 0xFF,
            ]
        )
        length += 3
        for c in group:
            if c == "=" and length > 0:
                length -= 1
    return bytes(out[:length])
