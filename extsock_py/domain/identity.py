"""IKE identities read as charon reads them (`identification_create_from_string`).

`host.example`, `@host.example`, `fqdn:host.example`, `dns:HOST.example` and
`fqdn:#686f73742e6578616d706c65` are one identity to charon: type FQDN, compared without
regard to ASCII case. The same holds for e-mail identities (`user@x`, `email:user@x`,
`rfc822:`, `userfqdn:`, `@@user@x`). Comparing the text would let a pushed connection present
a configured connection's identity under another spelling. Pure functions: no I/O.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum


class IdKind(StrEnum):
    ANY = "any"
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    FQDN = "fqdn"
    EMAIL = "email"
    DN = "dn"
    KEY_ID = "keyid"
    OTHER = "other"  # subnets, ranges, general names, URIs, numeric types


# charon's type prefixes (matched without regard to case), in charon's order.
_PREFIXES: tuple[tuple[str, IdKind], ...] = (
    ("ipv4:", IdKind.IPV4),
    ("ipv6:", IdKind.IPV6),
    ("ipv4net:", IdKind.OTHER),
    ("ipv6net:", IdKind.OTHER),
    ("ipv4range:", IdKind.OTHER),
    ("ipv6range:", IdKind.OTHER),
    ("rfc822:", IdKind.EMAIL),
    ("email:", IdKind.EMAIL),
    ("userfqdn:", IdKind.EMAIL),
    ("fqdn:", IdKind.FQDN),
    ("dns:", IdKind.FQDN),
    ("asn1dn:", IdKind.DN),
    ("asn1gn:", IdKind.OTHER),
    ("xmppaddr:", IdKind.OTHER),
    ("keyid:", IdKind.KEY_ID),
    ("uri:", IdKind.OTHER),
)
_NUMERIC = {1: IdKind.IPV4, 2: IdKind.FQDN, 3: IdKind.EMAIL, 5: IdKind.IPV6, 9: IdKind.DN}
_ANY_TEXTS = frozenset(["", "%any", "%any6", "0.0.0.0", "*", "::", "0::0"])
_CASELESS = frozenset([IdKind.FQDN, IdKind.EMAIL])
# Kinds a pushed connection may present: the ones an `ids` pattern can describe.
PUSHABLE = frozenset([IdKind.FQDN, IdKind.EMAIL, IdKind.IPV4, IdKind.IPV6])


@dataclass(frozen=True)
class Identity:
    """An identity as charon holds it: its type and its encoding (FQDN and e-mail in lower
    case, as charon compares them; addresses packed; the rest as given)."""

    kind: IdKind
    value: bytes

    @property
    def text(self) -> str:
        if self.kind in (IdKind.IPV4, IdKind.IPV6) and len(self.value) in (4, 16):
            return str(ipaddress.ip_address(self.value))
        return self.value.decode("latin-1")

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.text}"


def _hex(text: str) -> bytes:
    """chunk_from_hex(): an optional 0x, ':' separators, an odd digit count padded left."""
    digits = text[2:] if text.startswith("0x") else text
    digits = digits.replace(":", "")
    if not re.fullmatch(r"[0-9A-Fa-f]*", digits):
        raise ValueError("not hexadecimal")
    if len(digits) % 2:
        digits = "0" + digits
    return bytes.fromhex(digits)


def _encoded(kind: IdKind, rest: str) -> Identity:
    value = _hex(rest[1:]) if rest.startswith("#") else rest.encode("utf-8", "surrogateescape")
    if kind in (IdKind.IPV4, IdKind.IPV6) and not rest.startswith("#"):
        try:
            value = ipaddress.ip_address(rest).packed
        except ValueError:
            kind = IdKind.OTHER
    return _canonical(kind, value)


def _canonical(kind: IdKind, value: bytes) -> Identity:
    if kind in _CASELESS:
        value = value.lower()  # strncasecmp: ASCII only, as bytes.lower()
    return Identity(kind, value)


@functools.lru_cache(maxsize=8192)  # pure: a push compares with every connection's ids
def parse_identity(text: str) -> Identity:
    """The identity charon makes of `text`; ValueError for hex that charon would misread."""
    text = text.split("\0", 1)[0]  # charon reads a C string
    lowered = text.lower()
    for prefix, kind in _PREFIXES:
        if lowered.startswith(prefix):
            return _encoded(kind, text[len(prefix) :])
    numeric = re.fullmatch(r"\{([0-9]+)\}:(.*)", text, re.DOTALL)
    if numeric:
        return _encoded(_NUMERIC.get(int(numeric.group(1)), IdKind.OTHER), numeric.group(2))
    if "=" in text:
        # a distinguished name: compared here by its text without spaces, in lower case
        # (more alike than charon's binary comparison, never less)
        return Identity(IdKind.DN, re.sub(r"\s+", "", text).lower().encode())
    if "@" not in text:
        if text in _ANY_TEXTS:
            return Identity(IdKind.ANY, b"")
        for kind, version in ((IdKind.IPV4, 4), (IdKind.IPV6, 6)):
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                continue
            if address.version == version and "%" not in text:
                return Identity(kind, address.packed)
        if ":" not in text and re.fullmatch(r"[0-9.]+(/[0-9]*|-[0-9.]+)", text):
            return Identity(IdKind.OTHER, text.encode())  # an IPv4 subnet or range
        if ":" in text:
            return Identity(IdKind.KEY_ID, text.encode("utf-8", "surrogateescape"))
        return _canonical(IdKind.FQDN, text.encode("utf-8", "surrogateescape"))
    if text.startswith("@#"):
        return Identity(IdKind.KEY_ID, _hex(text[2:]))
    if text.startswith("@@"):
        return _encoded(IdKind.EMAIL, text[2:])
    if text.startswith("@"):
        return _encoded(IdKind.FQDN, text[1:])
    return _encoded(IdKind.EMAIL, text)


def same_identity(a: str, b: str) -> bool:
    """Whether charon would take `a` and `b` for one identity (unreadable hex: compared as text)."""
    try:
        return parse_identity(a) == parse_identity(b)
    except ValueError:
        return a == b


# --- patterns of the push policy (`ids`) -------------------------------------------------------


@dataclass(frozen=True)
class IdPattern:
    """A glob over identities of one kind: `app-*.example.net`, `*@apps.example`."""

    kind: IdKind
    glob: str
    written: str

    def matches(self, identity: Identity) -> bool:
        if identity.kind is not self.kind:
            return False
        text = identity.text.lower() if identity.kind in _CASELESS else identity.text
        return fnmatch.fnmatchcase(text, self.glob)


def parse_pattern(text: str) -> IdPattern:
    """An `ids` entry: an identity as charon writes it, where the value may hold * ? [...]."""
    written = text.strip()
    probe = parse_identity(written.replace("*", "x").replace("?", "x").replace("[", "x"))
    if probe.kind not in PUSHABLE:
        raise ValueError(
            f"{written!r} is a {probe.kind.value} identity: an ids pattern is a DNS name "
            "(fqdn:), an e-mail address (email:) or an IP address"
        )
    glob = written
    lowered = written.lower()
    for prefix, _ in _PREFIXES:
        if lowered.startswith(prefix):
            glob = written[len(prefix) :]
            break
    else:
        glob = glob[2:] if glob.startswith("@@") else glob[1:] if glob.startswith("@") else glob
    if glob.startswith("#"):
        raise ValueError(f"{written!r}: a pattern is written as text, not #hex")
    if probe.kind in _CASELESS:
        glob = glob.lower()
    return IdPattern(probe.kind, glob, written)


def pushable_identity(text: str) -> Identity:
    """A pushed connection's own identity: one an `ids` pattern can judge (ValueError why not)."""
    try:
        identity = parse_identity(text)
    except ValueError:
        raise ValueError("its #hex form is not hexadecimal") from None
    if identity.kind not in PUSHABLE:
        raise ValueError(
            f"it is a {identity.kind.value} identity; a pushed connection presents a DNS "
            "name, an e-mail address or an IP address"
        )
    body = identity.text
    if any(c in body for c in "*?[]") or re.search(r"[\x00-\x20\x7f]", body) or "^" in body:
        raise ValueError("it holds a wildcard, white space or a control character")
    return identity
