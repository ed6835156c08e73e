"""Domain events: what happened to one managed connection, as the failover machine sees it.

Charon's events are decoded by the vici adapter and attributed to a connection and a
gateway by the event usecase; operator requests arrive here as events too, so that
every decision goes through one pure function.
"""

from __future__ import annotations

from dataclasses import dataclass

from extsock_py.domain.policy import FailoverPolicy


@dataclass(frozen=True)
class Start:
    """Bring the connection up for the first time (or again after a reload)."""


@dataclass(frozen=True)
class Adopt:
    """charon already has this connection's tunnel up on `gateway`: keep it. `remote`: the
    IKE_SA's remote host when a redirect took it elsewhere (charon keeps the clone's name)."""

    gateway: str
    ike_id: int
    remote: str | None = None


@dataclass(frozen=True)
class IkeConnecting:
    """charon started an IKE_SA towards `gateway` (learned from its log)."""

    gateway: str
    ike_id: int


@dataclass(frozen=True)
class IkeUp:
    """An IKE_SA of the clone towards `gateway` is established (with or without a
    CHILD_SA: a hot standby's has none)."""

    gateway: str
    ike_id: int


@dataclass(frozen=True)
class TunnelUp:
    """The CHILD_SA is installed through `gateway`: traffic can pass. `remote`: the remote
    host of the IKE_SA that carries it, when known (charon's reuse_ikesa can put it into an
    IKE_SA of an equal config that a redirect took elsewhere)."""

    gateway: str
    ike_id: int
    remote: str | None = None


@dataclass(frozen=True)
class IkeRekeyed:
    """The IKE_SA towards `gateway` was rekeyed: it lives on under `new_id`."""

    gateway: str
    old_id: int
    new_id: int


@dataclass(frozen=True)
class TunnelDown:
    """The IKE_SA or its CHILD_SA towards `gateway` went away (ike-updown / child-updown),
    or charon has no route left to it (`no-route`: MOBIKE deferred, the SA lingers)."""

    gateway: str
    ike_id: int
    what: str = "ike-down"  # ike-down, child-down, no-route, expired (hard lifetime)


@dataclass(frozen=True)
class Redirected:
    """The gateway redirected the IKE_SA `ike_id` (RFC 5685) and charon follows it to
    `target`: not a failure (the clone stays the one towards `gateway`)."""

    gateway: str
    ike_id: int
    target: str


@dataclass(frozen=True)
class RedirectRefused:
    """charon did not follow the redirect of IKE_SA `ike_id`: it stays where it was."""

    gateway: str
    ike_id: int


@dataclass(frozen=True)
class InitiateFailed:
    """charon refused or abandoned the initiation towards `gateway`."""

    gateway: str
    message: str
    ike_id: int | None = None


@dataclass(frozen=True)
class RetransmitSeen:
    """charon retransmitted a request of the IKE_SA towards `gateway`: the peer is silent."""

    gateway: str
    ike_id: int


@dataclass(frozen=True)
class PeerAnswered:
    """A response arrived after retransmits (alert retransmit-*-cleared): the peer lives."""

    gateway: str
    ike_id: int


@dataclass(frozen=True)
class MonitorDead:
    """The tunnel monitor lost `misses` probes in a row through `gateway`; `silence`:
    seconds since its last sign of life (an answer, or inbound packets)."""

    gateway: str
    silence: float | None = None


@dataclass(frozen=True)
class ProbeUp:
    """A failback probe reached `gateway` and authenticated."""

    gateway: str
    ike_id: int


@dataclass(frozen=True)
class ProbeFailed:
    """A failback probe towards `gateway` failed."""

    gateway: str
    ike_id: int | None = None


@dataclass(frozen=True)
class GatewaysResolved:
    """The gateway list with its DNS names resolved again (before an attempt)."""

    gateways: tuple[str, ...]


@dataclass(frozen=True)
class Tick:
    """Time passed: deadlines may have expired."""


@dataclass(frozen=True)
class Switch:
    """Operator: move to `to` now (the next gateway when None)."""

    to: str | None = None


@dataclass(frozen=True)
class Hold:
    """Operator: pause automatic action; the current SA is kept."""


@dataclass(frozen=True)
class Release:
    """Operator: resume automatic action."""


@dataclass(frozen=True)
class Stop:
    """Operator: bring the tunnel down and keep it down (not a failure)."""


@dataclass(frozen=True)
class Retry:
    """Operator: try again now, starting from the primary, after a give-up or stop."""


@dataclass(frozen=True)
class CharonRestarted:
    """charon came back after being away: every SA it had is gone. The machine starts
    over on `gateways`; the operator's hold and the failure count survive."""

    gateways: tuple[str, ...]


@dataclass(frozen=True)
class PolicyChanged:
    """A reload changed the connection's failover policy (its gateways stayed the same)."""

    policy: FailoverPolicy


@dataclass(frozen=True)
class Restored:
    """What the last run persisted comes back at start (only while still idle): the
    operator's hold and the failure count."""

    held: bool
    failures_total: int


Event = (
    Start
    | Adopt
    | IkeConnecting
    | IkeUp
    | TunnelUp
    | IkeRekeyed
    | TunnelDown
    | Redirected
    | RedirectRefused
    | InitiateFailed
    | RetransmitSeen
    | PeerAnswered
    | MonitorDead
    | ProbeUp
    | ProbeFailed
    | GatewaysResolved
    | Tick
    | Switch
    | Hold
    | Release
    | Stop
    | Retry
    | CharonRestarted
    | PolicyChanged
    | Restored
)
