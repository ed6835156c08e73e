"""The configuration extsock should bring charon to, whatever file or client it came from."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from extsock_py.domain.access import ControlAccess
from extsock_py.domain.credentials import AuthorityLoad, Credentials, PoolLoad
from extsock_py.domain.gateways import initiable_gateways, is_name
from extsock_py.domain.policy import FailoverPolicy
from extsock_py.domain.profile import ConnectionProfile


@dataclass(frozen=True)
class NewerOption:
    """An option (or value) only some strongSwan releases know, where the file uses it."""

    file: str
    line: int
    key: str  # dotted, e.g. connections.home.children.net.per_cpu_sas
    since: str  # the first release that knows it, e.g. "6.0.2"

    def needs_newer_than(self, version: str) -> bool:
        """True if a charon of `version` (e.g. "5.9.8", "6.0.1dr1") predates this option."""
        return _release(version) < _release(self.since)


def _release(version: str) -> tuple[int, ...]:
    """(6, 0, 1) of "6.0.1" or "6.0.1dr1"; what does not parse counts as 0."""
    parts = []
    for piece in version.split(".")[:3]:
        match = re.match(r"\d+", piece)
        parts.append(int(match.group()) if match else 0)
    return tuple(parts)


@dataclass(frozen=True)
class DesiredConfig:
    source: str
    connections: Mapping[str, Mapping[str, Any]]  # name -> load-conn body
    policies: Mapping[str, FailoverPolicy] = field(default_factory=dict)
    credentials: Credentials = field(default_factory=Credentials)
    authorities: Sequence[AuthorityLoad] = ()
    pools: Sequence[PoolLoad] = ()
    newer_options: Sequence[NewerOption] = ()  # checked against the charon in use
    control: ControlAccess = field(default_factory=ControlAccess)  # who may do what


def remote_addrs_of(body: Mapping[str, Any]) -> list[str]:
    value = body.get("remote_addrs", [])
    if isinstance(value, str | bytes):
        value = [value]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in value]


def gateway_names(desired: DesiredConfig) -> set[str]:
    """The DNS names among the connections' initiable gateways."""
    return {
        gateway
        for body in desired.connections.values()
        for gateway in initiable_gateways(remote_addrs_of(body))[0]
        if is_name(gateway)
    }


def split_managed(
    desired: DesiredConfig,
    resolve: Callable[[str], tuple[str, ...]] | None = None,
) -> tuple[dict[str, ConnectionProfile], dict[str, Mapping[str, Any]]]:
    """Managed profiles (two or more initiable gateways, or one DNS name with two or more
    addresses now, as `resolve` says) and the connections left to charon."""
    managed: dict[str, ConnectionProfile] = {}
    plain: dict[str, Mapping[str, Any]] = {}
    for name, body in desired.connections.items():
        gateways, rejected = initiable_gateways(remote_addrs_of(body))
        several = len(gateways) >= 2 or (
            len(gateways) == 1
            and resolve is not None
            and is_name(gateways[0])
            and len(resolve(gateways[0])) >= 2
        )
        if several:
            policy = desired.policies.get(name, FailoverPolicy())
            managed[name] = ConnectionProfile(name, gateways, body, policy, rejected)
        else:
            plain[name] = body
    return managed, plain
