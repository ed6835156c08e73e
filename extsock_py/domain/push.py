"""What a pushed connection may be, when a non-root client pushes it (`extsock.control.push`).

    push {
        gateways = 203.0.113.0/24, segw.example.net   # where pushed connections may go
        local_ts = 10.50.0.0/16                        # what they may claim, each side
        remote_ts = 10.9.0.0/16
        ids = app-*.example.net                        # their local identities
        max = 64                                       # pushed connections in all
    }

Without the section only root (and the daemon's uid) pushes. A gateway address must lie in
a listed network; a gateway name must be listed as that name (charon resolves it, and
whatever the name resolves to is trusted as the name is). Every selector must be written
out (no `dynamic`) and lie inside the listed ranges; every local identity (`id`, `eap_id`,
`xauth_id`, and the connection's `ppk_id`: charon picks credentials by them) must match an
`ids` pattern as charon compares identities. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from extsock_py.domain.identity import IdPattern, pushable_identity
from extsock_py.domain.selectors import Network, SelectorError, strict_reading, within

# Local auth round keys that name an identity charon picks a credential by.
IDENTITY_KEYS = ("id", "eap_id", "xauth_id")


@dataclass(frozen=True)
class PushPolicy:
    gateway_networks: tuple[Network, ...] = ()
    gateway_names: frozenset[str] = frozenset()  # lower case, without a trailing dot
    local_ts: tuple[Network, ...] = ()
    remote_ts: tuple[Network, ...] = ()
    ids: tuple[IdPattern, ...] = ()
    max: int = 0


def texts(value: Any) -> list[str]:
    """A VICI value as its list of strings (a comma string is split, as swanctl does)."""
    if value is None:
        return []
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [text for item in value for text in texts(item)]
    return [str(value)]


def scalars(value: Any) -> list[str]:
    """An identity value as its strings: never split at commas (a DN holds them)."""
    if value is None:
        return []
    if isinstance(value, bytes):
        return [value.decode(errors="replace")]
    if isinstance(value, list | tuple):
        return [text for item in value for text in scalars(item)]
    return [str(value)]


def auth_rounds(body: Mapping[str, Any], side: str) -> list[tuple[str, Mapping[str, Any]]]:
    return [
        (key, section)
        for key, section in body.items()
        if (key == side or key.startswith(side + "-")) and isinstance(section, Mapping)
    ]


def _children(body: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    children = body.get("children")
    if not isinstance(children, Mapping):
        return []
    return [(str(n), c) for n, c in children.items() if isinstance(c, Mapping)]


def _gateway_refusal(entry: str, policy: PushPolicy) -> str:
    try:
        address = ipaddress.ip_address(entry)
    except ValueError:
        address = None
    if address is not None:
        if any(address in net for net in policy.gateway_networks):
            return ""
        return f"gateway {entry} is not inside extsock.control.push.gateways"
    name = entry.lower().rstrip(".")
    if name and name in policy.gateway_names:
        return ""
    return (
        f"gateway {entry!r} is not listed in extsock.control.push.gateways (a name must be "
        "listed as that name, an address must lie in a listed network)"
    )


def _selector_refusal(
    child: str, key: str, entries: list[str], allowed: tuple[Network, ...]
) -> str:
    where = f"children.{child}.{key}"
    if not entries:
        return (
            f"{where} is missing: a pushed connection names its selectors, inside "
            f"extsock.control.push.{key}"
        )
    for entry in entries:
        try:
            selector = strict_reading(entry)
        except SelectorError as exc:
            return f"{where}: {exc}"
        if selector.dynamic:
            return (
                f"{where}: 'dynamic' is decided by charon when the SA comes up: name the "
                f"selector, inside extsock.control.push.{key}"
            )
        if not within(selector, allowed):
            shown = ", ".join(map(str, allowed)) or "nothing"
            return f"{where}: {entry} is not inside extsock.control.push.{key} ({shown})"
    return ""


def _identity_refusal(round_: str, key: str, value: str, patterns: Iterable[IdPattern]) -> str:
    where = f"{round_}.{key}"
    try:
        identity = pushable_identity(value)
    except ValueError as exc:
        return f"{where} {value[:80]!r} is refused: {exc}"
    if any(p.matches(identity) for p in patterns):
        return ""
    return f"{where} {value[:80]!r} ({identity}) matches no pattern of extsock.control.push.ids"


def push_refusal(body: Mapping[str, Any], policy: PushPolicy | None, others: int) -> str:
    """Why a non-root client may not push `body` ('' when it may); `others`: the pushed
    connections there are already, this one's own name not counted."""
    if policy is None:
        return (
            "only root pushes connections: the policy has no extsock.control.push section "
            "(gateways, local_ts, remote_ts, ids, max) for other users"
        )
    if others >= policy.max:
        return f"{others} pushed connections already, the most extsock.control.push.max allows"
    for entry in texts(body.get("remote_addrs")):
        why = _gateway_refusal(entry, policy)
        if why:
            return why
    for value in scalars(body.get("ppk_id")):  # charon picks the PPK by it
        why = _identity_refusal("connection", "ppk_id", value, policy.ids)
        if why:
            return why.replace("connection.ppk_id", "ppk_id", 1)
    for round_, section in auth_rounds(body, "local"):
        for key in IDENTITY_KEYS:
            for value in scalars(section.get(key)):
                why = _identity_refusal(round_, key, value, policy.ids)
                if why:
                    return why
    for child, options in _children(body):
        for key, allowed in (("local_ts", policy.local_ts), ("remote_ts", policy.remote_ts)):
            why = _selector_refusal(child, key, texts(options.get(key)), allowed)
            if why:
                return why
    return ""
