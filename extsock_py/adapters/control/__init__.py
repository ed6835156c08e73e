"""The control socket: operators and applications drive the daemon over a unix socket.

Newline-delimited JSON, versioned (see docs/control-protocol.md): `protocol` holds the
message models, `server` the daemon side, `client` what the CLI uses.
"""

from __future__ import annotations

from extsock_py.adapters.control.client import ControlClient, ControlError, DaemonUnreachable
from extsock_py.adapters.control.protocol import DEFAULT_SOCKET, VERSION
from extsock_py.adapters.control.server import ControlServer, attach_control

__all__ = [
    "DEFAULT_SOCKET",
    "VERSION",
    "ControlClient",
    "ControlError",
    "ControlServer",
    "DaemonUnreachable",
    "attach_control",
]
