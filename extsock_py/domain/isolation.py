"""Rules that keep a pushed connection from touching the configured ones, or each other.

A connection pushed over the control socket must not present another connection's
identity (a gateway with `unique = replace` would drop that IKE_SA for it), compared as
charon compares identities (`fqdn:`, `@`, case, `#hex`), nor claim traffic another
connection carries: a child claims the pairs (local_ts x remote_ts), and two children
collide when both their local and their remote selectors overlap. Selectors are read as
charon reads them (`selectors.charon_reading`). `dynamic` (or no selector) stands for
what charon puts there when the SA comes up: locally this host's own addresses and
virtual IPs; remotely the connection's gateways (every address, for a `%any`, a range or
`pools`). Pure functions over load-conn bodies: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from extsock_py.domain.identity import Identity, parse_identity
from extsock_py.domain.push import auth_rounds, scalars, texts
from extsock_py.domain.selectors import ALL, Network, charon_reading, overlaps

HOST = "this host"


@dataclass(frozen=True)
class Side:
    """What one side of a child covers: networks, and symbols where no address is known
    (this host, a gateway by name)."""

    networks: tuple[Network, ...]
    marks: frozenset[str] = frozenset()
    written: str = ""

    def meets(self, other: Side) -> tuple[str, str] | None:
        """How the two overlap, as (this, that) shown to a user, or None."""
        shared = sorted(self.marks & other.marks)
        if shared:
            return self.written or shared[0], other.written or shared[0]
        pair = overlaps(self.networks, other.networks)
        if pair is None:
            return None
        return self.written or str(pair[0]), other.written or str(pair[1])


def host_side(addresses: Iterable[str]) -> Side:
    """`dynamic` on the local side: this host's own addresses and virtual IPs."""
    nets: list[Network] = []
    for text in addresses:
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            continue
    return Side(tuple(nets), frozenset([HOST]), "dynamic (this host's addresses)")


def _gateway_side(body: Mapping[str, Any]) -> Side:
    """`dynamic` on the remote side: the connection's gateways."""
    entries = texts(body.get("remote_addrs")) or ["%any"]
    if body.get("pools"):
        return Side(ALL, written="dynamic (addresses from pools)")
    nets: list[Network] = []
    marks: set[str] = set()
    for entry in entries:
        reading = charon_reading(entry)
        if entry.startswith("%any"):
            nets.extend(ALL)
        elif reading is not None and not reading.dynamic:
            nets.extend(reading.networks)
        else:
            marks.add("gateway " + entry.lower().rstrip("."))
    return Side(tuple(nets), frozenset(marks), "dynamic (its gateways)")


def _side(entries: list[str], dynamic: Callable[[], Side]) -> list[Side]:
    if not entries:
        return [dynamic()]
    sides: list[Side] = []
    for entry in entries:
        reading = charon_reading(entry)
        if reading is None:
            continue  # charon refuses it: nothing is loaded
        sides.append(dynamic() if reading.dynamic else Side(reading.networks, written=entry))
    return sides


@dataclass(frozen=True)
class Claim:
    child: str
    local: Side
    remote: Side


def claims(body: Mapping[str, Any], host: Side) -> list[Claim]:
    """The traffic each child of `body` claims, one Claim per (local, remote) pair."""
    children = body.get("children")
    if not isinstance(children, Mapping):
        return []
    known: list[Side] = []

    def gateways() -> Side:  # read only where a child's remote side is dynamic
        if not known:
            known.append(_gateway_side(body))
        return known[0]

    out: list[Claim] = []
    for name, child in children.items():
        if not isinstance(child, Mapping):
            continue
        for local in _side(texts(child.get("local_ts")), lambda: host):
            for remote in _side(texts(child.get("remote_ts")), gateways):
                out.append(Claim(str(name), local, remote))
    return out


def local_ids(body: Mapping[str, Any]) -> list[str]:
    """The identities a connection presents (every local auth round's `id`)."""
    return [text for _, round_ in auth_rounds(body, "local") for text in scalars(round_.get("id"))]


def _identity(text: str) -> Identity | str:
    try:
        return parse_identity(text)
    except ValueError:
        return text  # unreadable #hex: compared as text


def _clash(
    ids: list[tuple[str, Identity | str]],
    mine: list[Claim],
    what: str,
    body: Mapping[str, Any],
    host: Side,
) -> str:
    for theirs in local_ids(body):
        seen = _identity(theirs)
        for own, parsed in ids:
            if parsed == seen:
                shown = "" if own == theirs else f" (as charon reads '{theirs}')"
                return f"local id '{own}' is the identity of {what}{shown}"
    theirs_claims = claims(body, host) if mine else []
    for claim in mine:
        for other in theirs_claims:
            remote = claim.remote.meets(other.remote)
            local = claim.local.meets(other.local) if remote else None
            if remote and local:
                return (
                    f"remote_ts {remote[0]} overlaps {remote[1]}, a traffic selector of {what} "
                    f"(local_ts {local[0]} overlaps {local[1]})"
                )
    return ""


def collision(
    pushed: Mapping[str, Any],
    configured: Mapping[str, Mapping[str, Any]],
    others: Mapping[str, Mapping[str, Any]] | None = None,
    host_addresses: Iterable[str] = (),
) -> str:
    """Why the pushed body may not sit beside the configured and the other pushed
    connections ('' when it may)."""
    host = host_side(host_addresses)
    mine = claims(pushed, host)
    ids = [(own, _identity(own)) for own in local_ids(pushed)]
    for kind, bodies in (("configured", configured), ("pushed", others or {})):
        for name, body in bodies.items():
            why = _clash(ids, mine, f"{kind} connection '{name}'", body, host)
            if why:
                return why
    return ""
