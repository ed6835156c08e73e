"""What extsock publishes to operators and subscribers (control, metrics, logs): the kinds,
and one typed record per shape of event."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar


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
    UNLOADED = "unloaded"  # a pushed connection was unloaded: it is no longer managed


# --- the published records: typed here, made JSON only by the publisher adapter -----------


@dataclass(frozen=True)
class ConnectionNotice:
    """What the failover machine tells of one managed connection (its `Notify` actions):
    tunnel up or down, a failover started or done, a redirect, a failed switch, a give-up,
    held or released. A None field is not part of the event."""

    kind: NoticeKind
    connection: str
    gateway: str | None = None
    from_gateway: str | None = None
    reason: str | None = None
    duration: float | None = None
    outage: float | None = None  # failover: last sign of life to tunnel up, when known
    virtual_ips: tuple[str, ...] | None = None  # tunnel-up: the addresses assigned, if any


@dataclass(frozen=True)
class IkeStateNotice:
    """An IKE_SA of a managed connection changed state, as charon reported it."""

    kind: ClassVar[NoticeKind] = NoticeKind.IKE_STATE
    connection: str
    connections: tuple[str, ...]  # every connection whose CHILD_SA the IKE_SA carries
    ike: str
    gateway: str | None
    old: str
    new: str
    ike_id: int | None
    virtual_ips: tuple[str, ...]


@dataclass(frozen=True)
class MonitorDeadNotice:
    """The tunnel monitor heard nothing through the tunnel for too long."""

    kind: ClassVar[NoticeKind] = NoticeKind.MONITOR_DEAD
    connection: str
    gateway: str
    silence: float
    unanswered: int


@dataclass(frozen=True)
class CharonLostNotice:
    kind: ClassVar[NoticeKind] = NoticeKind.CHARON_LOST
    reason: str


@dataclass(frozen=True)
class CharonBackNotice:
    kind: ClassVar[NoticeKind] = NoticeKind.CHARON_BACK


@dataclass(frozen=True)
class ReloadedNotice:
    kind: ClassVar[NoticeKind] = NoticeKind.RELOADED
    managed: tuple[str, ...]


@dataclass(frozen=True)
class ReloadFailedNotice:
    kind: ClassVar[NoticeKind] = NoticeKind.RELOAD_FAILED
    error: str


Notice = (
    ConnectionNotice
    | IkeStateNotice
    | MonitorDeadNotice
    | CharonLostNotice
    | CharonBackNotice
    | ReloadedNotice
    | ReloadFailedNotice
)
