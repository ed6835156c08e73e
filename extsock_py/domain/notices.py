"""The kinds of notice extsock publishes to operators and subscribers (control, metrics, logs)."""

from __future__ import annotations

from enum import StrEnum


class NoticeKind(StrEnum):
    """One kind of published event; its value is the name on the wire and in the logs."""

    TUNNEL_UP = "tunnel-up"
    TUNNEL_DOWN = "tunnel-down"
    FAILOVER_STARTED = "failover-started"
    FAILOVER = "failover"
    REDIRECTED = "redirected"
    SWITCH_FAILED = "switch-failed"
    STANDBY_UP = "standby-up"
    STANDBY_DOWN = "standby-down"
    GAVE_UP = "gave-up"
    HELD = "held"
    RELEASED = "released"
    IKE_STATE = "ike-state"
    MONITOR_DEAD = "monitor-dead"
    CHARON_LOST = "charon-lost"
    CHARON_BACK = "charon-back"
    RELOADED = "reloaded"
    RELOAD_FAILED = "reload-failed"
