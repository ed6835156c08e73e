"""What the failover machine asks the outside world to do, and what it tells it."""

from __future__ import annotations

from dataclasses import dataclass

from extsock_py.domain.notices import NoticeKind


@dataclass(frozen=True)
class LoadClone:
    """Load the connection's clone whose only remote address is `gateway`."""

    gateway: str


@dataclass(frozen=True)
class UnloadClone:
    """Unload the clone towards `gateway`."""

    gateway: str


@dataclass(frozen=True)
class Initiate:
    """Initiate the clone towards `gateway` (without waiting for the result)."""

    gateway: str


@dataclass(frozen=True)
class Terminate:
    """Force-terminate the IKE_SA towards `gateway` (by id when known, else by clone name).

    `child_only`: the failure is the CHILD_SA's, not the IKE_SA's; when the IKE_SA also
    carries another connection's tunnel, only this connection's CHILD_SA is terminated."""

    gateway: str
    ike_id: int | None
    child_only: bool = False


@dataclass(frozen=True)
class StartProbe:
    """Load a childless probe connection towards `gateway` and initiate it."""

    gateway: str


@dataclass(frozen=True)
class StopProbe:
    """Terminate and unload the probe towards `gateway`."""

    gateway: str
    ike_id: int | None


@dataclass(frozen=True)
class StartStandby:
    """Load the clone towards `gateway` and initiate its IKE_SA alone (no CHILD_SA): the
    hot standby a later Initiate of the clone's child reuses (one CREATE_CHILD_SA)."""

    gateway: str


@dataclass(frozen=True)
class StopStandby:
    """Terminate the hot standby's IKE_SA (by id when known, else by clone name), then
    unload its clone unless `unload` is False (the tunnel's own clone)."""

    gateway: str
    ike_id: int | None
    unload: bool = True


@dataclass(frozen=True)
class Notify:
    """Tell operators and subscribers something happened (no effect on charon)."""

    kind: NoticeKind
    gateway: str | None = None
    from_gateway: str | None = None
    reason: str | None = None
    duration: float | None = None
    outage: float | None = None  # failover: last sign of life to tunnel up, when known


Action = (
    LoadClone
    | UnloadClone
    | Initiate
    | Terminate
    | StartProbe
    | StopProbe
    | StartStandby
    | StopStandby
    | Notify
)
