"""Rules that keep a pushed connection from touching the configured ones.

A connection pushed over the control socket must not present a configured connection's
identity (a gateway with `unique = replace` would drop the configured IKE_SA for it),
nor claim traffic a configured connection carries (its policies would take that traffic).
Pure functions over load-conn bodies: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_ANY = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bytes):
        return [value.decode(errors="replace")]
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [text for item in value for text in _texts(item)]
    return [str(value)]


def _rounds(body: Mapping[str, Any], side: str) -> list[Mapping[str, Any]]:
    return [
        section
        for key, section in body.items()
        if (key == side or key.startswith(side + "-")) and isinstance(section, Mapping)
    ]


def local_ids(body: Mapping[str, Any]) -> set[str]:
    """The identities a connection presents (every local auth round's `id`)."""
    return {text for round_ in _rounds(body, "local") for text in _texts(round_.get("id"))}


def _networks(entries: Iterable[str]) -> list[Network]:
    """Traffic selector entries as networks; `dynamic` (the tunnel's own addresses) is
    left out, a protocol/port suffix ignored (it narrows, it does not move, the traffic)."""
    out: list[Network] = []
    for entry in entries:
        text = entry.split("[", 1)[0].strip()
        if not text or text == "dynamic":
            continue
        if text in ("%any", "%any4", "%any6"):
            out.extend(_ANY)
            continue
        try:
            if "-" in text:
                first, last = (ipaddress.ip_address(p.strip()) for p in text.split("-", 1))
                out.extend(ipaddress.summarize_address_range(first, last))
            else:
                out.append(ipaddress.ip_network(text, strict=False))
        except (ValueError, TypeError):
            continue  # not an address: charon refuses it on load
    return out


def remote_networks(body: Mapping[str, Any]) -> list[Network]:
    children = body.get("children")
    if not isinstance(children, Mapping):
        return []
    entries: list[str] = []
    for child in children.values():
        if isinstance(child, Mapping):
            entries.extend(_texts(child.get("remote_ts")))
    return _networks(entries)


def collision(pushed: Mapping[str, Any], configured: Mapping[str, Mapping[str, Any]]) -> str:
    """Why the pushed body may not sit beside the configured connections ('' when it may)."""
    mine = local_ids(pushed)
    theirs_nets = remote_networks(pushed)
    for name, body in configured.items():
        same = sorted(mine & local_ids(body))
        if same:
            return f"local id '{same[0]}' is the identity of configured connection '{name}'"
        for net in theirs_nets:
            for other in remote_networks(body):
                if net.version == other.version and net.overlaps(other):
                    return (
                        f"remote_ts {net} overlaps {other}, a traffic selector of configured "
                        f"connection '{name}'"
                    )
    return ""
