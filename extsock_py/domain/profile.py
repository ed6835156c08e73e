"""A managed connection and the clones extsock loads for it, one gateway each.

The clone of a connection is the connection itself with one remote address and with
charon's own retrying switched off, because extsock owns the retrying:
- `remote_addrs` holds the one gateway the clone is for;
- `keyingtries = 1`: charon gives up after one attempt instead of retrying the same
  dead address;
- each child's `start_action = none` and `close_action = none`: charon neither starts
  nor traps the clone when it is loaded nor restarts it when the peer closes it;
- each child's `dpd_action = clear`: on a dead peer charon clears the SA instead of
  restarting towards the same dead gateway; extsock then moves to the next one;
- with the policy's `remote_id = address`, each remote auth round's `id` is the gateway's
  address: a gateway per tunnel with a PSK of its own (cloud VPN endpoints identify as
  their address, and charon picks the PSK by the remote id before the gateway answers).
Everything else (proposals, version, auth rounds with ids, certs and pubkeys as bytes,
children and all their options) is carried over unchanged, except with the policy's
`clone_if_id_base` (route-based clones, XFRM): then each child's `if_id_in` and `if_id_out`
are the clone's own interface ID (`clone_if_id`), one per gateway.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from extsock_py.domain.gateways import AddressVerdict
from extsock_py.domain.policy import FailoverPolicy

CLONE_SEPARATOR = "@"
PROBE_SUFFIX = "~probe"


@dataclass(frozen=True)
class ConnectionProfile:
    """A connection from swanctl.conf (or pushed by an application) that extsock manages."""

    name: str
    gateways: tuple[str, ...]
    body: Mapping[str, Any]  # the load-conn body of the original connection, without its name
    policy: FailoverPolicy = field(default_factory=FailoverPolicy)
    not_gateways: tuple[AddressVerdict, ...] = ()

    @property
    def children(self) -> tuple[str, ...]:
        kids = self.body.get("children", {})
        return tuple(kids) if isinstance(kids, Mapping) else ()


@dataclass(frozen=True)
class CloneName:
    """The parts of a clone's (or probe's) connection name."""

    connection: str
    gateway: str
    probe: bool = False


def clone_name(connection: str, gateway: str) -> str:
    return f"{connection}{CLONE_SEPARATOR}{gateway}"


def probe_name(connection: str, gateway: str) -> str:
    return clone_name(connection, gateway) + PROBE_SUFFIX


def parse_clone_name(name: str) -> CloneName | None:
    """Split a name made by clone_name/probe_name; None for any other name."""
    probe = name.endswith(PROBE_SUFFIX)
    core = name[: -len(PROBE_SUFFIX)] if probe else name
    connection, sep, gateway = core.rpartition(CLONE_SEPARATOR)
    if not sep or not connection or not gateway:
        return None
    return CloneName(connection, gateway, probe)


# A gateway outside the list (a redirect's, a DNS name's address) gets an ID past the list's.
_IF_ID_UNLISTED = 1000
_IF_ID_SPREAD = 100_000


def clone_if_id(profile: ConnectionProfile, gateway: str) -> int | None:
    """The XFRM interface ID of the clone towards `gateway`; None without route-based clones.

    `clone_if_id_base` + the gateway's place in the list (0-based); for an address outside
    the list, a stable value past the list's (from a hash of the address)."""
    base = profile.policy.clone_if_id_base
    if base <= 0:
        return None
    if gateway in profile.gateways:
        return base + profile.gateways.index(gateway)
    return base + _IF_ID_UNLISTED + zlib.crc32(gateway.encode()) % _IF_ID_SPREAD


def clone_body(profile: ConnectionProfile, gateway: str) -> dict[str, Any]:
    """The load-conn body of the clone of `profile` towards `gateway`."""
    # Any address: one of the list, one a DNS name of the list resolved to, or a redirect's.
    body = copy.deepcopy(dict(profile.body))
    body["remote_addrs"] = [gateway]
    body["keyingtries"] = "1"
    if_id = clone_if_id(profile, gateway)
    children = body.get("children", {})
    for child in children.values():
        child["start_action"] = "none"
        child["close_action"] = "none"
        child["dpd_action"] = "clear"
        if if_id is not None:
            child["if_id_in"] = str(if_id)
            child["if_id_out"] = str(if_id)
    if profile.policy.remote_id == "address":
        for key, value in body.items():
            if key.startswith("remote") and isinstance(value, dict):  # remote, remote-2...
                value["id"] = gateway
    return body


def probe_body(profile: ConnectionProfile, gateway: str) -> dict[str, Any]:
    """A childless copy towards `gateway`: it authenticates, installs nothing, and is dropped."""
    body = clone_body(profile, gateway)
    body.pop("children", None)
    body["childless"] = "force"
    body["dpd_delay"] = "0"
    body["rekey_time"] = "0"
    body["reauth_time"] = "0"
    return body
