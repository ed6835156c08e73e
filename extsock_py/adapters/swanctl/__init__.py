"""swanctl.conf: parse, validate and translate into the VICI messages swanctl sends."""

from extsock_py.domain.errors import ConfigError

from .loader import LoadedConfig, read_swanctl_conf
from .secret import Secret
from .settings import Section, Value, parse_settings

__all__ = [
    "ConfigError",
    "LoadedConfig",
    "Secret",
    "Section",
    "Value",
    "parse_settings",
    "read_swanctl_conf",
]
