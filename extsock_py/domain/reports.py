"""What the daemon reports to its operators: a connection's status (as the manager knows it
and as the operator shows it), what a config apply or reload did."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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

    def fields(self) -> dict[str, Any]:
        """The row as the control protocol and `extsock failover status --json` show it."""
        out: dict[str, Any] = {
            "connection": self.connection,
            "gateways": list(self.gateways),
            "active_gateway": self.active_gateway,
            "target_gateway": self.target_gateway,
            "phase": self.phase,
            "ike_id": self.ike_id,
            "held": self.held,
            "failures_total": self.failures_total,
            "failures_in_cycle": self.failures_in_cycle,
            "cycles_failed": self.cycles_failed,
            "next_action": self.next_action,
            "next_action_in": self.next_action_in,
            # Named so in version 1 of the control protocol (documented): kept for users.
            "standby_gateway": self.switch_gateway,
            "redirected_to": self.redirected_to,
            "virtual_ips": list(self.virtual_ips),
            "ike_state": self.ike_state,
            "ike_gateway": self.ike_gateway,
            "next_action_at": self.next_action_at,
            "source": self.source,
        }
        if self.last_phase is not None:
            out["last_phase"] = self.last_phase
        return out


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
