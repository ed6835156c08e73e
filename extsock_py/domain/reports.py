"""What the daemon reports to its operators, as plain records: a connection's status (as the
manager knows it and as the operator shows it), what a config apply or reload did, and
the operator's results. The adapters alone turn them into JSON (`adapters/reports_json.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from extsock_py.domain.observations import CharonRelease


@dataclass(frozen=True)
class ConnectionStatus:
    """A status row: the machine's view (from the failover manager), then what the operator
    usecase adds from charon's SAs and the daemon (`ike_state` to `last_phase`)."""

    connection: str
    gateways: tuple[str, ...]
    active_gateway: str | None
    target_gateway: str | None
    phase: str  # a Phase, or "unknown" while charon is away
    ike_id: int | None
    held: bool
    failures_total: int
    failures_in_cycle: int
    cycles_failed: int
    next_action: str | None
    next_action_in: float | None
    switch_gateway: str | None  # the target of a make-before-break switch in flight
    redirected_to: str | None
    virtual_ips: tuple[str, ...]
    ike_state: str = "NONE"
    ike_gateway: str | None = None
    next_action_at: float | None = None
    source: str = "config"  # or "control": pushed by an application
    last_phase: str | None = None  # while charon is away: the phase last known
    # The hot standby (`standby = yes`): its gateway and phase (connecting, up, backoff).
    hot_standby_gateway: str | None = None
    hot_standby_phase: str | None = None
    # The tunnel a make-before-break switch left, kept for `switch_drain` before it is
    # terminated: its gateway, IKE_SA, seconds left (and the wall time, from the operator).
    draining_gateway: str | None = None
    draining_ike_id: int | None = None
    draining_in: float | None = None
    draining_until: float | None = None


@dataclass
class ApplyReport:
    managed: list[str] = field(default_factory=list)
    plain: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    credentials: int = 0
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # what charon refused, one line each


@dataclass(frozen=True)
class ReloadReport:
    """What a reload did: refused (`error`: the running config is kept), deferred until
    charon is back, or `applied` as the report says."""

    error: str | None = None
    deferred: bool = False
    applied: ApplyReport | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class DaemonSnapshot:
    """What the metrics read at a scrape: the manager's rows as they are, and counters."""

    charon_reachable: bool
    processed: int
    skipped: int
    connections: list[ConnectionStatus]


@dataclass(frozen=True)
class StatusReport:
    """`status`: whether charon answers, what release it is, and the rows asked for."""

    charon_reachable: bool
    charon: CharonRelease | None  # as the event session last read it (None before)
    connections: tuple[ConnectionStatus, ...]


@dataclass(frozen=True)
class HistoryRecord:
    """One failover record of the state store (a switch, a give-up, a redirect...)."""

    time: float
    connection: str
    from_gateway: str | None = None
    to_gateway: str | None = None
    reason: str | None = None
    result: str | None = None
    duration: float | None = None
    outage: float | None = None
    id: int | None = None  # the store's row id (a store may keep none)


@dataclass(frozen=True)
class HealthReport:
    """Healthy when charon is reachable and every connection is up or waits by policy.
    `charon_reachable` is None (and `connections` too) when the loop did not answer."""

    healthy: bool
    reasons: tuple[str, ...]
    charon_reachable: bool | None = None
    connections: Mapping[str, str] | None = None  # connection -> phase


@dataclass(frozen=True)
class ChangeResult:
    """`switch`, `hold`, `release`, `retry`, `terminate`: the row after, and whether the
    request changed the connection's state."""

    connection: ConnectionStatus
    changed: bool


@dataclass(frozen=True)
class LoadResult:
    """`load`: the pushed connection's row, whether it was started (new) or updated."""

    connection: ConnectionStatus
    started: bool
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class UnloadResult:
    """`unload`: the pushed connection is no longer managed."""

    connection: str
    notes: tuple[str, ...] = ()
