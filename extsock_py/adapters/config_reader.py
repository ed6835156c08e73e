"""Reads swanctl.conf (connections, secrets, the `extsock` policy) into a DesiredConfig."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from extsock_py.adapters.access_conf import read_access
from extsock_py.adapters.icmp_prober import check_echo, describe_echo_error
from extsock_py.adapters.monitor_prober import NETNS_DIR, check_local, describe_error
from extsock_py.adapters.policy_conf import SectionLike, locate_policy_key, read_policies
from extsock_py.adapters.swanctl.loader import read_swanctl_conf
from extsock_py.domain.config import DesiredConfig
from extsock_py.domain.errors import ConfigError
from extsock_py.domain.policy import FailoverPolicy


def read_desired_config(path: Path) -> DesiredConfig:
    """Raise ConfigError (file, line, key, what is accepted) for anything unusable."""
    loaded = read_swanctl_conf(path)
    _default, policies = read_policies(loaded.extsock_section, list(loaded.connections))
    if loaded.extsock_section is not None:
        check_monitor_addresses(loaded.extsock_section, policies)
    return DesiredConfig(
        source=str(path),
        connections=loaded.connections,
        policies=policies,
        credentials=loaded.credentials,
        authorities=loaded.authorities,
        pools=loaded.pools,
        newer_options=loaded.newer_options,
        control=read_access(loaded.extsock_section),
    )


def check_monitor_addresses(section: SectionLike, policies: Mapping[str, FailoverPolicy]) -> None:
    """Each enabled monitor's `local` must be an address of this host (of its `netns`).

    Checked when the file is read, not when a tunnel comes up: a wrong address is then
    reported with its file, line and key by `extsock run` (before charon is touched),
    by `check-config`, and by a reload (refused, the running config kept), instead of a
    monitor that silently never probes. With `probe = icmp`, an echo socket must be
    allowed there too (a ping socket, or a raw one): else the error names `monitor.probe`.
    """
    checked: set[tuple[str, str | None, str]] = set()
    for name, policy in policies.items():
        monitor = policy.monitor
        if not monitor.enabled or monitor.local is None:
            continue
        if (monitor.local, monitor.netns, monitor.probe) in checked:
            continue
        try:
            check_local(monitor.local, monitor.netns)
        except OSError as exc:
            key_path = ("monitor", "local")
            if monitor.netns is not None and not (NETNS_DIR / monitor.netns).exists():
                key_path = ("monitor", "netns")
            file, line, key = locate_policy_key(section, name, key_path)
            raise ConfigError(
                file,
                line,
                key,
                describe_error(exc, monitor.local, monitor.netns),
                "an address inside the local traffic selector, present on this host"
                + (f" (in network namespace {monitor.netns})" if monitor.netns else ""),
            ) from None
        if monitor.probe == "icmp":
            try:
                check_echo(monitor.local, monitor.netns)
            except OSError as exc:
                file, line, key = locate_policy_key(section, name, ("monitor", "probe"))
                raise ConfigError(
                    file,
                    line,
                    key,
                    describe_echo_error(exc, monitor.netns),
                    "probe = udp, or a host where extsock may open ICMP sockets",
                ) from None
        checked.add((monitor.local, monitor.netns, monitor.probe))
