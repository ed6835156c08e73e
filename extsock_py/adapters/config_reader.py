"""Reads swanctl.conf (connections, secrets, the `extsock` policy) into a DesiredConfig."""

from __future__ import annotations

from pathlib import Path

from extsock_py.adapters.policy_conf import read_policies
from extsock_py.adapters.swanctl.loader import read_swanctl_conf
from extsock_py.domain.config import DesiredConfig


def read_desired_config(path: Path) -> DesiredConfig:
    """Raise ConfigError (file, line, key, what is accepted) for anything unusable."""
    loaded = read_swanctl_conf(path)
    _default, policies = read_policies(loaded.extsock_section, list(loaded.connections))
    return DesiredConfig(
        source=str(path),
        connections=loaded.connections,
        policies=policies,
        shared_secrets=tuple(loaded.shared_secrets),
        private_keys=tuple(loaded.private_keys),
    )
