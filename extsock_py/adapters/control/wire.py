"""What both ends of the control socket share, without the server's models: the version,
the default path, the event kinds and the line encoding (docs/control-protocol.md).

The client (and so the CLI's client commands) imports this alone; `protocol` adds the
pydantic models that the daemon validates requests and events with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

VERSION: Final = 1
DEFAULT_SOCKET: Final = "/run/extsock/extsock.sock"

EVENT_KINDS: Final = frozenset(
    {
        "ike-state",
        "tunnel-up",
        "tunnel-down",
        "failover-started",
        "failover",
        "redirected",
        "switch-failed",
        "standby-up",
        "standby-down",
        "gave-up",
        "held",
        "released",
        "charon-lost",
        "charon-back",
        "reloaded",
        "reload-failed",
        "unloaded",
    }
)
"""The event kinds a subscriber may ask for; protocol.EVENT_MODELS has one model for each."""


def encode_line(message: Mapping[str, Any]) -> bytes:
    """One message as the wire carries it: compact JSON and a newline."""
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"
