"""The hot standby of one connection (`standby = yes`): a childless IKE_SA kept up towards
the gateway after the active one, so that a failover there is one CREATE_CHILD_SA.

Rules of this module (a sub-machine of failover.py, pure like it):
- The standby is the connection's own clone towards its gateway, initiated without a
  CHILD_SA. charon reuses an established IKE_SA of the same config for a later initiate
  of the clone's child (`reuse_ikesa`, the default): no IKE_SA_INIT, no IKE_AUTH.
- It exists only while the tunnel is up, and it follows the list: towards the gateway
  after the active one (cyclic), never the active gateway itself.
- It never carries traffic and none of its failures is the tunnel's: a standby that dies,
  retransmits or does not come up within connect_timeout waits the backoff policy's delay
  (growing with its failures in a row, jittered by its own seed) and is set up again.
  It never gives up: it costs nothing while it waits.
- Its clone is loaded when it starts and unloaded when it stops, except when it is handed
  over to the tunnel (`take`): its IKE_SA then carries the tunnel's CHILD_SA, so the clone
  is NOT loaded again (strongSwan 6 closes a childless IKE_SA whose config is reloaded).
- It is never terminated by clone name while that clone is the tunnel's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from extsock_py.domain.actions import Action, Notify, StartStandby, StopStandby
from extsock_py.domain.gateways import next_gateway
from extsock_py.domain.notices import NoticeKind
from extsock_py.domain.policy import FailoverPolicy, backoff_delay


class StandbyPhase(StrEnum):
    CONNECTING = "connecting"  # the childless IKE_SA is being set up
    UP = "up"  # established, ready to carry the tunnel's CHILD_SA
    BACKOFF = "backoff"  # it failed; set up again at `deadline`


@dataclass(frozen=True)
class HotStandby:
    gateway: str
    phase: StandbyPhase
    deadline: float | None = None  # connect deadline (CONNECTING) or end of the backoff
    ike_id: int | None = None
    failures: int = 0  # failed attempts in a row: the backoff grows with them
    since: float | None = None  # up since


Result = tuple[HotStandby | None, list[Action]]


def wanted(gateways: tuple[str, ...], active: str | None, policy: FailoverPolicy) -> str | None:
    """Where the standby of a tunnel up through `active` belongs (None: nowhere)."""
    if not policy.standby or active is None or active not in gateways:
        return None
    target = next_gateway(gateways, active)
    return None if target == active else target


def follow(
    hs: HotStandby | None,
    target: str | None,
    now: float,
    policy: FailoverPolicy,
    active: str | None,
    reason: str = "moved",
) -> Result:
    """Point the standby at `target`: keep it when it is there, else stop it and start anew."""
    if hs is not None and hs.gateway == target:
        return hs, []
    actions = stop(hs, active, reason)
    if target is None:
        return None, actions
    started = HotStandby(target, StandbyPhase.CONNECTING, deadline=now + policy.connect_timeout)
    return started, [*actions, StartStandby(target)]


def stop(hs: HotStandby | None, active: str | None, reason: str) -> list[Action]:
    """What ends the standby (the caller drops the record)."""
    if hs is None:
        return []
    mine = hs.gateway != active
    actions: list[Action] = []
    if hs.ike_id is not None or mine:
        actions.append(StopStandby(hs.gateway, hs.ike_id, unload=mine))
    if hs.phase is StandbyPhase.UP:
        actions.append(Notify(NoticeKind.STANDBY_DOWN, gateway=hs.gateway, reason=reason))
    return actions


def take(hs: HotStandby | None, target: str) -> int | None:
    """The standby's IKE_SA when it is up towards `target`: the tunnel's next CHILD_SA may
    ride in it (the caller initiates without loading the clone again)."""
    if hs is None or hs.gateway != target or hs.phase is not StandbyPhase.UP:
        return None
    return hs.ike_id


def concerns(hs: HotStandby | None, gateway: str, ike_id: int | None) -> bool:
    """True when news about `gateway`'s IKE_SA `ike_id` is news about the standby."""
    if hs is None or hs.gateway != gateway or hs.phase is StandbyPhase.BACKOFF:
        return False
    return hs.ike_id is None or ike_id is None or ike_id == hs.ike_id


def connecting(hs: HotStandby, ike_id: int) -> HotStandby:
    if hs.phase is StandbyPhase.CONNECTING and hs.ike_id is None:
        return replace(hs, ike_id=ike_id)
    return hs


def rekeyed(hs: HotStandby, old_id: int, new_id: int) -> HotStandby:
    return replace(hs, ike_id=new_id) if hs.ike_id == old_id else hs


def up(hs: HotStandby, ike_id: int, now: float) -> Result:
    if hs.phase is StandbyPhase.UP:
        return replace(hs, ike_id=ike_id), []
    ready = replace(hs, phase=StandbyPhase.UP, ike_id=ike_id, deadline=None, failures=0, since=now)
    return ready, [Notify(NoticeKind.STANDBY_UP, gateway=hs.gateway)]


def failed(
    hs: HotStandby, now: float, policy: FailoverPolicy, seed: str, reason: str, terminate: bool
) -> Result:
    """The standby died or did not come up: terminate what is left, wait, try again."""
    actions: list[Action] = []
    if terminate:
        actions.append(StopStandby(hs.gateway, hs.ike_id, unload=False))
    if hs.phase is StandbyPhase.UP:
        actions.append(Notify(NoticeKind.STANDBY_DOWN, gateway=hs.gateway, reason=reason))
    failures = hs.failures + 1
    delay = backoff_delay(policy.backoff, failures, f"{seed}/standby")
    waiting = HotStandby(hs.gateway, StandbyPhase.BACKOFF, deadline=now + delay, failures=failures)
    return waiting, actions


def tick(hs: HotStandby, now: float, policy: FailoverPolicy, seed: str) -> Result:
    if hs.deadline is None or now < hs.deadline:
        return hs, []
    if hs.phase is StandbyPhase.CONNECTING:
        return failed(hs, now, policy, seed, "connect-timeout", terminate=True)
    if hs.phase is StandbyPhase.BACKOFF:
        again = replace(
            hs, phase=StandbyPhase.CONNECTING, ike_id=None, deadline=now + policy.connect_timeout
        )
        return again, [StartStandby(hs.gateway)]
    return hs, []
