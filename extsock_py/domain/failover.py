"""The failover state machine of one managed connection: `step(state, event, now)`.

Rules of this module (as h11's _state.py states its own):
- It is pure: no I/O, no clock, no randomness. Time comes in as `now`; what must
  happen goes out as actions; the caller executes them and feeds back the results
  as events.
- Every event names the gateway it concerns. An event about a gateway, an IKE_SA or
  a probe that is not the current one is stale and changes nothing.
- Only failures of the current gateway count. A teardown the operator asked for
  (Stop) is not a failure, and a held connection records failures but never moves.
- At most one clone is loaded per connection, except during a make-before-break
  switch (failback or an operator switch while up), when the new clone is brought up
  next to the old one and the old one goes only once the new tunnel is installed, and
  then only after `policy.switch_drain` (`Drain`): what is still on its way through the
  old tunnel (answers the far side sent towards the old gateway) arrives. A drain ends
  early when anything else moves the tunnel (a failure, a switch, a stop). The hot
  standby's clone (`standby = yes`) is loaded too while it stands by.
- A redirect from the gateway (RFC 5685) is followed, not fought: charon moves the
  tunnel to the target under the same clone; `remote` names where it really is, no
  failure is counted, and the IKE_SAs it left behind (`retired`) are news of nothing,
  as is the IKE_SA a drain left (it may live on for another connection), until a CHILD_SA
  a switch or an attempt awaits is installed in it (`_taken_back`).
  When the target later fails, the failover goes on with the configured list.
- DNS names in the gateway list are resolved at each attempt (GatewaysResolved, from the
  caller): a name with several addresses is that many gateways, tried in turn.
- A failure of the CHILD_SA alone (child-down, the tunnel monitor) and every teardown of
  a healthy tunnel ask charon to end only this connection's CHILD_SA when the IKE_SA
  carries another connection's tunnel (`Terminate.child_only`).
- It is the only writer of a connection's state: charon coming back (CharonRestarted), a
  reload's new policy (PolicyChanged) and what the last run persisted (Restored) come in
  as events too, and ask for no action.

Its sub-machines, each one a small frozen record of `ConnState`:
- phase: `ConnState.phase` (Phase below), the one every other part is read against.
- attempt (`Attempt`): the gateway whose clone is used or tried, its IKE_SA, the
  deadline of the phase (connect timeout, end of backoff), and the counts of the cycle
  through the gateways.
- outage (`Outage`, or None): the outage being measured, from the first failure to the
  tunnel up again.
- switch (`Switch`, or None): a make-before-break switch in flight (failback or
  operator), a second clone being brought up next to the tunnel.
- drain (`Drain`, or None): the tunnel a finished switch left, kept for a while.
- failback (`Failback`): probes of the primary and their schedule.
- hold (`Kept`): the operator's hold and the count of failures, both kept across
  charon restarts and extsock restarts.
- redirect (`Redirects`): a redirect being followed, where redirects led the tunnel,
  and the IKE_SAs they left behind.
- hot standby (`HotStandby`, or None; domain/standby.py, `standby = yes`): a childless
  IKE_SA towards the gateway after the tunnel's. News about it is taken first
  (`_standby_news`) and never reaches the tunnel's handlers; after every step it is
  pointed where it belongs (`_standby_follows`): after the tunnel's gateway while up,
  nowhere otherwise. An attempt or a switch towards its gateway takes it over (`_take`).
The transitions read as a table: `step` dispatches on the event type (`match`, checked
exhaustive by mypy); each handler reads the phase and the sub-machine the event concerns.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Never

from extsock_py.domain import events as ev
from extsock_py.domain import standby as sb
from extsock_py.domain.actions import (
    Action,
    Initiate,
    LoadClone,
    Notify,
    StartProbe,
    StopProbe,
    StopStandby,
    Terminate,
    UnloadClone,
)
from extsock_py.domain.gateways import next_gateway
from extsock_py.domain.notices import NoticeKind
from extsock_py.domain.policy import FailoverPolicy, backoff_delay
from extsock_py.domain.standby import HotStandby, StandbyPhase


class Phase(StrEnum):
    IDLE = "idle"  # loaded, not started
    CONNECTING = "connecting"  # an attempt towards `attempt.gateway` is under way
    UP = "up"  # tunnel installed through `attempt.gateway`
    BACKOFF = "backoff"  # a whole cycle failed; waiting until `attempt.deadline`
    DOWN = "down"  # down while held by the operator: no automatic action
    GAVE_UP = "gave-up"  # max_cycles failed in a row; waits for the operator or a reload
    STOPPED = "stopped"  # the operator brought it down


@dataclass(frozen=True)
class Attempt:
    """The current attempt (or tunnel) and the counts of the cycle through the gateways."""

    gateway: str | None = None  # whose clone is used or tried
    ike_id: int | None = None  # its IKE_SA, once charon named it
    deadline: float | None = None  # CONNECTING: connect timeout; BACKOFF: end of the backoff
    tries: int = 0  # failed attempts on `gateway` in this cycle
    failed_in_cycle: int = 0  # gateways that failed in this cycle
    cycles_failed: int = 0  # whole cycles failed in a row
    retransmits: int = 0  # retransmits of the IKE_SA while up, since its last answer


@dataclass(frozen=True)
class Outage:
    """An outage being measured: from the first failure to the tunnel up again."""

    since: float
    reason: str
    from_gateway: str | None
    # Seconds of silence before the failure was declared, when a detector knows them (the
    # tunnel monitor's last answer or inbound packet): outage = that + detection to up.
    lead: float | None = None


@dataclass(frozen=True)
class Switch:
    """A make-before-break switch in flight: a second clone being brought up."""

    gateway: str
    reason: str
    started: float
    deadline: float
    ike_id: int | None = None


@dataclass(frozen=True)
class Drain:
    """The tunnel a make-before-break switch left, kept until `until` for what is still on
    its way through it; then terminated and its clone unloaded."""

    gateway: str
    ike_id: int | None
    until: float


@dataclass(frozen=True)
class Probe:
    """A failback probe in flight."""

    gateway: str
    deadline: float
    ike_id: int | None = None


@dataclass(frozen=True)
class Failback:
    """Probes of the primary while up elsewhere: the one in flight and the next one."""

    probe: Probe | None = None
    next_probe_at: float | None = None
    healthy_since: float | None = None  # the primary answered every probe since


@dataclass(frozen=True)
class Kept:
    """What outlives an attempt, a charon restart and an extsock restart."""

    held: bool = False  # the operator's hold
    failures_total: int = 0


@dataclass(frozen=True)
class Redirect:
    """A redirect charon follows: the tunnel is being set up again towards `target`."""

    target: str
    from_id: int
    started: float
    deadline: float
    from_remote: str | None = None


@dataclass(frozen=True)
class Redirects:
    """What redirects did to the tunnel."""

    pending: Redirect | None = None  # one being followed
    remote: str | None = None  # where a redirect took the tunnel (None: `attempt.gateway`)
    retired: tuple[int, ...] = ()  # IKE_SAs a redirect left behind: their news is stale


@dataclass(frozen=True)
class ConnState:
    name: str
    gateways: tuple[str, ...]
    policy: FailoverPolicy
    phase: Phase = Phase.IDLE
    attempt: Attempt = Attempt()
    outage: Outage | None = None
    switch: Switch | None = None
    drain: Drain | None = None
    failback: Failback = Failback()
    kept: Kept = Kept()
    redirects: Redirects = Redirects()
    hot_standby: HotStandby | None = None

    @property
    def gateway(self) -> str | None:
        """The gateway whose clone is used or tried."""
        return self.attempt.gateway

    @property
    def ike_id(self) -> int | None:
        """The IKE_SA carrying the tunnel (or the attempt), as far as known."""
        return self.attempt.ike_id

    @property
    def peer(self) -> str | None:
        """The gateway the tunnel really goes to."""
        return self.redirects.remote if self.redirects.remote is not None else self.gateway

    @property
    def primary(self) -> str:
        return self.gateways[0]


Result = tuple[ConnState, list[Action]]


def initial_state(name: str, gateways: tuple[str, ...], policy: FailoverPolicy) -> ConnState:
    if not gateways:
        raise ValueError(f"connection {name!r} has no gateway")
    return ConnState(name=name, gateways=gateways, policy=policy)


def wake_at(state: ConnState) -> float | None:
    """The earliest time at which a Tick may change this state."""
    times = [state.attempt.deadline, state.failback.next_probe_at]
    if state.switch is not None:
        times.append(state.switch.deadline)
    if state.drain is not None:
        times.append(state.drain.until)
    if state.failback.probe is not None:
        times.append(state.failback.probe.deadline)
    if state.redirects.pending is not None:
        times.append(state.redirects.pending.deadline)
    if state.hot_standby is not None:
        times.append(state.hot_standby.deadline)
    pending = [t for t in times if t is not None]
    return min(pending) if pending else None


def step(state: ConnState, event: ev.Event, now: float) -> Result:
    """Apply one event at time `now`; return the new state and the actions to carry out."""
    taken = _standby_news(state, event, now)
    new, actions = taken if taken is not None else _dispatch(state, event, now)
    return _standby_follows(new, actions, now)


def _dispatch(state: ConnState, event: ev.Event, now: float) -> Result:
    match event:
        case ev.GatewaysResolved():
            return _on_resolved(state, event, now)
        case ev.Start():
            return _on_start(state, event, now)
        case ev.Retry():
            return _on_retry(state, event, now)
        case ev.Adopt():
            return _on_adopt(state, event, now)
        case ev.IkeConnecting():
            return _on_connecting(state, event, now)
        case ev.IkeUp():
            return state, []  # the tunnel is up with its CHILD_SA (TunnelUp), not before
        case ev.TunnelUp():
            return _on_tunnel_up(state, event, now)
        case ev.IkeRekeyed():
            return _on_rekeyed(state, event, now)
        case ev.TunnelDown():
            return _on_tunnel_down(state, event, now)
        case ev.Redirected():
            return _on_redirected(state, event, now)
        case ev.RedirectRefused():
            return _on_redirect_refused(state, event, now)
        case ev.InitiateFailed():
            return _on_initiate_failed(state, event, now)
        case ev.RetransmitSeen():
            return _on_retransmit(state, event, now)
        case ev.PeerAnswered():
            return _on_peer_answered(state, event, now)
        case ev.MonitorDead():
            return _on_monitor_dead(state, event, now)
        case ev.ProbeUp():
            return _on_probe_up(state, event, now)
        case ev.ProbeFailed():
            return _on_probe_failed(state, event, now)
        case ev.Tick():
            return _on_tick(state, event, now)
        case ev.Switch():
            return _on_switch(state, event, now)
        case ev.Hold():
            return _on_hold(state, event, now)
        case ev.Release():
            return _on_release(state, event, now)
        case ev.Stop():
            return _on_stop(state, event, now)
        case ev.CharonRestarted():
            return _on_charon_restarted(state, event, now)
        case ev.PolicyChanged():
            return _on_policy_changed(state, event, now)
        case ev.Restored():
            return _on_restored(state, event, now)
        case _:
            # mypy checks that every event has its case above; at run time, an object that
            # is no event (a caller's bug) changes nothing, as it always has.
            _exhaustive: Never = event
            return state, []


# --- starting and attempts -------------------------------------------------------------


def _attempt(state: ConnState, gateway: str, now: float, reload_clone: bool = True) -> Result:
    """Start an attempt towards `gateway`, then unload the previous clone if it differs
    (after the initiate: unloading is not on the way to the new tunnel)."""
    actions, ike_id, reload_clone = _take(state, gateway, reload_clone)
    if reload_clone:
        actions.append(LoadClone(gateway))
    actions.append(Initiate(gateway))
    if state.gateway is not None and state.gateway != gateway:
        actions.append(UnloadClone(state.gateway))
    new = replace(
        state,
        hot_standby=None if _standing_at(state, gateway) else state.hot_standby,
        phase=Phase.CONNECTING,
        attempt=replace(
            state.attempt,
            gateway=gateway,
            ike_id=ike_id,
            retransmits=0,
            deadline=now + state.policy.connect_timeout,
        ),
        failback=replace(state.failback, next_probe_at=None, healthy_since=None),
        redirects=replace(state.redirects, remote=None, pending=None),
    )
    return new, actions


def _standing_at(state: ConnState, gateway: str) -> bool:
    return state.hot_standby is not None and state.hot_standby.gateway == gateway


def _take(
    state: ConnState, gateway: str, reload_clone: bool
) -> tuple[list[Action], int | None, bool]:
    """What a new tunnel towards `gateway` does with the hot standby standing there: an
    established one carries it (initiate only: strongSwan 6 would close a childless IKE_SA
    whose config is loaded again), one not up yet is ended before the clone is loaded.
    Returns (actions first, the IKE_SA taken over or None, whether to load the clone)."""
    hs = state.hot_standby
    if hs is None or hs.gateway != gateway:
        return [], None, reload_clone
    taken = sb.take(hs, gateway)
    if taken is not None:
        return [], taken, False
    ended: list[Action] = []
    if hs.phase is not StandbyPhase.BACKOFF:
        ended.append(StopStandby(hs.gateway, hs.ike_id, unload=False))
    return ended, None, True


def _on_start(state: ConnState, event: ev.Start, now: float) -> Result:
    match state.phase:
        case Phase.IDLE | Phase.STOPPED | Phase.GAVE_UP:
            fresh = _forget_unloaded_clone(_reset_counters(state))
            return _attempt(fresh, fresh.primary, now)
        case Phase.CONNECTING | Phase.UP | Phase.BACKOFF | Phase.DOWN:
            return state, []


def _forget_unloaded_clone(state: ConnState) -> ConnState:
    if state.phase in (Phase.GAVE_UP, Phase.STOPPED):
        return replace(state, attempt=replace(state.attempt, gateway=None))
    return state


def _on_retry(state: ConnState, event: ev.Retry, now: float) -> Result:
    match state.phase:
        case Phase.CONNECTING | Phase.UP:
            return state, []
        case Phase.IDLE | Phase.BACKOFF | Phase.DOWN | Phase.GAVE_UP | Phase.STOPPED:
            fresh = _forget_unloaded_clone(_reset_counters(state))
            fresh = replace(fresh, kept=replace(fresh.kept, held=False))
            return _attempt(fresh, fresh.primary, now)


def _on_adopt(state: ConnState, event: ev.Adopt, now: float) -> Result:
    if event.gateway not in state.gateways:
        return state, []
    fresh = _reset_counters(state)
    redirected = None
    if event.remote is not None and not _same_host(event.remote, event.gateway):
        redirected = event.remote
    up = replace(
        fresh,
        phase=Phase.UP,
        attempt=replace(fresh.attempt, gateway=event.gateway, ike_id=event.ike_id, deadline=None),
        redirects=Redirects(remote=redirected),  # the tunnel goes where its IKE_SA goes
    )
    return _schedule_failback(up, now), [
        Notify(NoticeKind.TUNNEL_UP, gateway=event.gateway, reason="adopted")
    ]


def _reset_counters(state: ConnState) -> ConnState:
    """The cycle's counts and the outage start over (the tunnel is up, or a new start)."""
    counts = replace(state.attempt, tries=0, failed_in_cycle=0, cycles_failed=0, retransmits=0)
    return replace(state, attempt=counts, outage=None)


# --- charon's news about the current attempt or tunnel -----------------------------------


def _is_current(state: ConnState, gateway: str, ike_id: int | None) -> bool:
    if gateway != state.gateway or state.phase not in (Phase.CONNECTING, Phase.UP):
        return False
    if ike_id is not None and ike_id in state.redirects.retired:
        return False
    return state.ike_id is None or ike_id is None or ike_id == state.ike_id


def _is_switch(state: ConnState, gateway: str, ike_id: int | None) -> bool:
    sw = state.switch
    if sw is None or sw.gateway != gateway:
        return False
    if ike_id is not None and ike_id in state.redirects.retired:
        return False  # a drained tunnel towards the same gateway, going away
    return sw.ike_id is None or ike_id is None or ike_id == sw.ike_id


def _on_connecting(state: ConnState, event: ev.IkeConnecting, now: float) -> Result:
    if _is_switch(state, event.gateway, None) and state.switch is not None:
        return replace(state, switch=replace(state.switch, ike_id=event.ike_id)), []
    if state.phase is Phase.CONNECTING and event.gateway == state.gateway:
        # A redirect at IKE_SA_INIT starts the same IKE_SA again towards its target.
        retired = tuple(i for i in state.redirects.retired if i != event.ike_id)
        return replace(
            state,
            attempt=replace(state.attempt, ike_id=event.ike_id),
            redirects=replace(state.redirects, retired=retired),
        ), []
    return state, []


def _failover_notice(outage: Outage, gateway: str, now: float) -> Notify:
    """The FAILOVER notice of an outage that ends now with the tunnel up through `gateway`
    (by an attempt of extsock's or by a redirect that completed it)."""
    duration = now - outage.since
    return Notify(
        NoticeKind.FAILOVER,
        gateway=gateway,
        from_gateway=outage.from_gateway,
        reason=outage.reason,
        duration=duration,
        outage=None if outage.lead is None else duration + outage.lead,
    )


def _on_tunnel_up(state: ConnState, event: ev.TunnelUp, now: float) -> Result:
    state = _taken_back(state, event)
    if _is_switch(state, event.gateway, event.ike_id) and state.switch is not None:
        return _complete_switch(state, event, now)
    if not _is_current(state, event.gateway, event.ike_id):
        return state, []
    if state.redirects.pending is not None:
        return _complete_redirect(state, event, now)
    if state.phase is Phase.UP:  # a new IKE_SA carries the tunnel (e.g. reauthentication)
        return replace(state, attempt=replace(state.attempt, ike_id=event.ike_id)), []
    # CONNECTING (`_is_current` lets no other phase through): the attempt succeeded.
    actions: list[Action] = []
    if state.outage is not None:
        actions.append(_failover_notice(state.outage, event.gateway, now))
    actions.append(Notify(NoticeKind.TUNNEL_UP, gateway=event.gateway))
    fresh = _reset_counters(state)
    up = replace(
        fresh,
        phase=Phase.UP,
        attempt=replace(fresh.attempt, ike_id=event.ike_id, deadline=None),
        redirects=_carried(fresh.redirects, event),
    )
    return _schedule_failback(up, now), actions


def _carried(rds: Redirects, event: ev.TunnelUp) -> Redirects:
    """Where the tunnel goes: where the IKE_SA that carries it goes (charon can put the
    CHILD_SA into an IKE_SA of an equal config that a redirect took elsewhere)."""
    if event.remote is None:
        return rds
    return replace(rds, remote=None if _same_host(event.remote, event.gateway) else event.remote)


def _same_host(a: str, b: str) -> bool:
    """The same address however written (charon writes IPv6 in its canonical form)."""
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def _taken_back(state: ConnState, event: ev.TunnelUp) -> ConnState:
    """A CHILD_SA installed in an IKE_SA the connection left behind (`retired`: at the end
    of a drain, by a redirect) is news of a tunnel coming, never of one going. When that
    IKE_SA lives on for another connection (charon's reuse_ikesa), charon puts the next
    CHILD_SA of a switch or an attempt towards its gateway into it: awaited there, the
    IKE_SA is the connection's again, and its news counts from now on."""
    rds = state.redirects
    if event.ike_id not in rds.retired:
        return state
    sw = state.switch
    awaited = (
        sw is not None and sw.gateway == event.gateway and sw.ike_id in (None, event.ike_id)
    ) or (
        state.phase is Phase.CONNECTING
        and state.gateway == event.gateway
        and state.ike_id in (None, event.ike_id)
    )
    if not awaited:
        return state
    retired = tuple(i for i in rds.retired if i != event.ike_id)
    return replace(state, redirects=replace(rds, retired=retired))


def _on_rekeyed(state: ConnState, event: ev.IkeRekeyed, now: float) -> Result:
    if _is_switch(state, event.gateway, event.old_id) and state.switch is not None:
        return replace(state, switch=replace(state.switch, ike_id=event.new_id)), []
    if state.ike_id == event.old_id and event.gateway == state.gateway:
        return replace(
            state, attempt=replace(state.attempt, ike_id=event.new_id, retransmits=0)
        ), []
    d = state.drain
    if _is_drained(state, event.gateway, event.old_id) and d is not None:
        # The drained tunnel lives on in the new IKE_SA: the end of the drain ends that one.
        return replace(state, drain=replace(d, ike_id=event.new_id)), []
    return state, []


def _on_tunnel_down(state: ConnState, event: ev.TunnelDown, now: float) -> Result:
    # Only after ike-down is the IKE_SA gone; after child-down or no-route it lingers in
    # charon (without a CHILD_SA, or stale with no path) and must be terminated.
    terminate = event.what != "ike-down"
    if _is_drained(state, event.gateway, event.ike_id):
        return _end_drain(state)
    if _is_switch(state, event.gateway, event.ike_id):
        return _abort_switch(state, now, terminate=terminate)
    if not _is_current(state, event.gateway, event.ike_id):
        return state, []
    return _fail(state, now, event.what, terminate=terminate)


def _on_redirected(state: ConnState, event: ev.Redirected, now: float) -> Result:
    if not _is_current(state, event.gateway, event.ike_id):
        return state, []
    rds = state.redirects
    redirect = Redirect(
        target=event.target,
        from_id=event.ike_id,
        started=rds.pending.started if rds.pending is not None else now,
        deadline=now + state.policy.connect_timeout,
        from_remote=state.peer,
    )
    # charon sets the tunnel up again towards the target, under a new IKE_SA (established,
    # or redirected during IKE_AUTH) or the same one (IKE_SA_INIT): which one is unknown
    # until it is up, and the one left behind goes away without meaning anything.
    followed = replace(
        state,
        attempt=replace(state.attempt, ike_id=None, retransmits=0),
        redirects=replace(rds, retired=(*rds.retired, event.ike_id)[-4:], pending=redirect),
    )
    if state.phase is Phase.CONNECTING:
        followed = replace(
            followed,
            attempt=replace(followed.attempt, deadline=redirect.deadline),
            redirects=replace(followed.redirects, remote=event.target),
        )
    return followed, []


def _on_redirect_refused(state: ConnState, event: ev.RedirectRefused, now: float) -> Result:
    rd = state.redirects.pending
    if rd is None or rd.from_id != event.ike_id or event.gateway != state.gateway:
        return state, []
    # charon keeps the IKE_SA where it was: so does the machine.
    remote = rd.from_remote if rd.from_remote != state.gateway else None
    retired = tuple(i for i in state.redirects.retired if i != rd.from_id)
    deadline = state.attempt.deadline
    if state.phase is Phase.CONNECTING:
        deadline = rd.started + state.policy.connect_timeout
    stayed = replace(
        state,
        attempt=replace(state.attempt, ike_id=rd.from_id, deadline=deadline),
        redirects=Redirects(pending=None, remote=remote, retired=retired),
    )
    return stayed, []


def _complete_redirect(state: ConnState, event: ev.TunnelUp, now: float) -> Result:
    rd = state.redirects.pending
    assert rd is not None and state.gateway is not None
    actions: list[Action] = [
        Notify(
            NoticeKind.REDIRECTED,
            gateway=rd.target,
            from_gateway=rd.from_remote,
            reason="redirect",
            duration=now - rd.started,
        )
    ]
    if state.phase is not Phase.UP:
        if state.outage is not None:  # a failover that a redirect completed
            actions.append(_failover_notice(state.outage, rd.target, now))
        actions.append(Notify(NoticeKind.TUNNEL_UP, gateway=rd.target, reason="redirect"))
    fresh = _reset_counters(state)
    up = replace(
        fresh,
        phase=Phase.UP,
        attempt=replace(fresh.attempt, ike_id=event.ike_id, deadline=None),
        redirects=replace(
            fresh.redirects,
            remote=rd.target if rd.target != state.gateway else None,
            pending=None,
        ),
    )
    return _schedule_failback(up, now), actions


def _on_initiate_failed(state: ConnState, event: ev.InitiateFailed, now: float) -> Result:
    if _is_switch(state, event.gateway, event.ike_id):
        return _abort_switch(state, now, terminate=True)
    if state.phase is not Phase.CONNECTING or not _is_current(state, event.gateway, event.ike_id):
        return state, []
    return _fail(state, now, "initiate-failed", terminate=True)


def _on_retransmit(state: ConnState, event: ev.RetransmitSeen, now: float) -> Result:
    limit = state.policy.dead_after_retransmits
    if _is_switch(state, event.gateway, event.ike_id) and state.switch is not None:
        # A switch is a connect: judged by its deadline alone, like any connect. The tunnel
        # still runs through the old gateway meanwhile, so waiting costs nothing, and a
        # target whose first answer got lost is slow, not dead (seen with a 6.1 initiator:
        # after INVALID_KE its charon may drop the answer to the second IKE_SA_INIT and go
        # on at its first retransmit, 4 s later; README, strongSwan releases).
        return replace(state, switch=replace(state.switch, ike_id=event.ike_id)), []
    if not _is_current(state, event.gateway, event.ike_id):
        return state, []
    match state.phase:
        case Phase.UP if state.redirects.pending is not None:
            # The retransmit is the redirect's new IKE_SA (the one it left is retired): a
            # connect, judged by the redirect's deadline alone. charon may even lose the
            # target's first answer (it sends IKE_SA_INIT before the new IKE_SA is in its
            # manager; the answer comes back on its first retransmit), and the tunnel still
            # runs through the IKE_SA being left until the new one is up.
            return state, []
        case Phase.UP:
            retransmits = state.attempt.retransmits + 1
            counted = replace(
                state, attempt=replace(state.attempt, retransmits=retransmits, ike_id=event.ike_id)
            )
            if limit and retransmits >= limit:
                return _fail(counted, now, "retransmit", terminate=True)
            return counted, []
        case _:  # CONNECTING (`_is_current` lets no other phase through)
            # A connect is judged by connect_timeout alone: a gateway answering a storm of
            # connects late (a retransmit after charon's 4 s) is slow, not dead.
            return replace(state, attempt=replace(state.attempt, ike_id=event.ike_id)), []


def _on_peer_answered(state: ConnState, event: ev.PeerAnswered, now: float) -> Result:
    if not _is_current(state, event.gateway, event.ike_id):
        return state, []
    return replace(state, attempt=replace(state.attempt, retransmits=0)), []


def _on_monitor_dead(state: ConnState, event: ev.MonitorDead, now: float) -> Result:
    if state.phase is not Phase.UP or event.gateway != state.gateway:
        return state, []
    return _fail(state, now, "monitor", terminate=True, lead=event.silence)


# --- failure, the heart ----------------------------------------------------------------


_CHILD_FAILURES = frozenset({"child-down", "monitor"})


def _fail(
    state: ConnState, now: float, reason: str, terminate: bool, lead: float | None = None
) -> Result:
    """The current gateway failed: terminate what is left and decide where to go next."""
    assert state.gateway is not None
    gateway = state.gateway
    peer = state.peer
    base, actions = _end_drain(state)
    if base.switch is not None:
        base, more = _abort_switch(base, now, terminate=True)
        actions += more
    if base.failback.probe is not None:
        actions.append(StopProbe(base.failback.probe.gateway, base.failback.probe.ike_id))
    if terminate:
        actions.append(Terminate(gateway, base.ike_id, child_only=reason in _CHILD_FAILURES))
    if base.phase is Phase.UP:
        actions.append(Notify(NoticeKind.TUNNEL_DOWN, gateway=peer, reason=reason))
    outage = base.outage
    if outage is None:
        outage = Outage(since=now, reason=reason, from_gateway=peer, lead=lead)
    failed = replace(
        base,
        attempt=replace(base.attempt, ike_id=None, deadline=None, tries=base.attempt.tries + 1),
        failback=Failback(),
        kept=replace(base.kept, failures_total=base.kept.failures_total + 1),
        outage=outage,
        redirects=replace(base.redirects, pending=None, retired=_left(base, gateway, peer)),
    )
    if failed.kept.held:
        return replace(failed, phase=Phase.DOWN), actions
    if failed.attempt.tries < failed.policy.attempts_per_gateway:
        retried, more = _attempt(failed, gateway, now, reload_clone=False)
        return retried, actions + more
    a = failed.attempt
    failed = replace(failed, attempt=replace(a, tries=0, failed_in_cycle=a.failed_in_cycle + 1))
    if failed.attempt.failed_in_cycle < len(failed.gateways):
        return _move_on(failed, now, reason, actions)
    a = failed.attempt
    failed = replace(
        failed, attempt=replace(a, failed_in_cycle=0, cycles_failed=a.cycles_failed + 1)
    )
    limit = failed.policy.max_cycles
    if limit and failed.attempt.cycles_failed >= limit:
        actions += [
            UnloadClone(gateway),
            Notify(NoticeKind.GAVE_UP, gateway=gateway, reason=reason),
        ]
        return replace(failed, phase=Phase.GAVE_UP), actions
    delay = backoff_delay(failed.policy.backoff, failed.attempt.cycles_failed, failed.name)
    backoff = replace(failed.attempt, deadline=now + delay)
    return replace(failed, phase=Phase.BACKOFF, attempt=backoff), actions


def _left(state: ConnState, gateway: str, peer: str | None) -> tuple[int, ...]:
    """The retired IKE_SAs after a failure. A redirected tunnel's IKE_SA, named after the
    clone of `gateway`, goes on dying after it failed: its news is stale, for the next
    attempt may go to `gateway` under the same clone (the list goes on after the target)."""
    retired = state.redirects.retired
    if peer is None or _same_host(peer, gateway) or state.ike_id is None:
        return retired
    return (*retired, state.ike_id)[-4:]


def _move_on(state: ConnState, now: float, reason: str, actions: list[Action]) -> Result:
    assert state.gateway is not None
    target = next_gateway(state.gateways, state.gateway)
    if state.peer is not None and target == state.peer != state.gateway:
        # A redirect took the tunnel to the gateway after the clone's, and that one failed.
        # (Going on after the target instead brings the next attempt under the clone of the
        # gateway that redirected, often beside its dying IKE_SA: chaos seeds 2607, 2608.)
        target = next_gateway(state.gateways, target)
    moved, more = _attempt(state, target, now)
    notice = Notify(
        NoticeKind.FAILOVER_STARTED, gateway=target, from_gateway=state.peer, reason=reason
    )
    return moved, [*actions, notice, *more]


# --- time --------------------------------------------------------------------------------


def _on_tick(state: ConnState, event: ev.Tick, now: float) -> Result:
    actions: list[Action] = []
    if state.drain is not None and now >= state.drain.until:
        state, actions = _end_drain(state)
    if state.hot_standby is not None:
        hot, more = sb.tick(state.hot_standby, now, state.policy, state.name)
        state = replace(state, hot_standby=hot)
        actions += more
    if state.switch is not None and now >= state.switch.deadline:
        state, more = _abort_switch(state, now, terminate=True)
        actions += more
    if state.failback.probe is not None and now >= state.failback.probe.deadline:
        state, more = _probe_failed(state, now)
        actions += more
    redirect = state.redirects.pending
    if redirect is not None and now >= redirect.deadline:
        if state.phase is Phase.UP:
            state, more = _fail(state, now, "redirect-failed", terminate=True)
            actions += more
        else:  # CONNECTING: connect_timeout judges it
            state = replace(state, redirects=replace(state.redirects, pending=None))
    deadline = state.attempt.deadline
    if deadline is not None and now >= deadline:
        match state.phase:
            case Phase.CONNECTING:
                state, more = _fail(state, now, "connect-timeout", terminate=True)
                actions += more
            case Phase.BACKOFF:
                assert state.gateway is not None
                state, more = _attempt(state, next_gateway(state.gateways, state.gateway), now)
                actions += more
            case _:  # no other phase has a deadline
                pass
    fb = state.failback
    if (
        fb.next_probe_at is not None
        and now >= fb.next_probe_at
        and state.phase is Phase.UP
        and not state.kept.held
        and fb.probe is None
        and state.switch is None
    ):
        probe = Probe(gateway=state.primary, deadline=now + state.policy.failback.probe_timeout)
        state = replace(state, failback=replace(fb, probe=probe, next_probe_at=None))
        actions.append(StartProbe(state.primary))
    return state, actions


# --- failback: probes and make-before-break -----------------------------------------------


def _schedule_failback(state: ConnState, now: float) -> ConnState:
    fb = state.policy.failback
    if (
        not fb.enabled
        or state.kept.held  # no probe while held (Release schedules one): else wake_at stays due
        or state.gateway == state.primary
        or state.phase is not Phase.UP
    ):
        return replace(
            state, failback=replace(state.failback, next_probe_at=None, healthy_since=None)
        )
    return replace(state, failback=replace(state.failback, next_probe_at=now + fb.probe_interval))


def _on_probe_up(state: ConnState, event: ev.ProbeUp, now: float) -> Result:
    fb = state.failback
    if fb.probe is None or fb.probe.gateway != event.gateway:
        return state, []
    actions: list[Action] = [StopProbe(event.gateway, event.ike_id)]
    healthy_since = fb.healthy_since if fb.healthy_since is not None else now
    probed = replace(state, failback=replace(fb, probe=None, healthy_since=healthy_since))
    if now - healthy_since >= state.policy.failback.hold_down:
        switched, more = _begin_switch(probed, state.primary, now, "failback")
        return switched, actions + more
    next_at = now + state.policy.failback.probe_interval
    return replace(probed, failback=replace(probed.failback, next_probe_at=next_at)), actions


def _on_probe_failed(state: ConnState, event: ev.ProbeFailed, now: float) -> Result:
    probe = state.failback.probe
    if probe is None or probe.gateway != event.gateway:
        return state, []
    return _probe_failed(state, now)


def _probe_failed(state: ConnState, now: float) -> Result:
    probe = state.failback.probe
    assert probe is not None
    actions: list[Action] = [StopProbe(probe.gateway, probe.ike_id)]
    ended = replace(state, failback=replace(state.failback, probe=None, healthy_since=None))
    return _schedule_failback(ended, now), actions


def _begin_switch(state: ConnState, target: str, now: float, reason: str) -> Result:
    sw = Switch(
        gateway=target, reason=reason, started=now, deadline=now + state.policy.connect_timeout
    )
    state, actions = _end_drain(state)  # one old tunnel at a time, and never the target's
    probe = state.failback.probe
    if probe is not None:  # a probe answering mid-switch would start a second switch
        actions.append(StopProbe(probe.gateway, probe.ike_id))
    ended, taken, load = _take(state, target, True)
    sw = replace(sw, ike_id=taken)
    hot = None if _standing_at(state, target) else state.hot_standby
    new = replace(state, switch=sw, failback=Failback(), hot_standby=hot)
    return new, [*actions, *ended, *([LoadClone(target)] if load else []), Initiate(target)]


def _complete_switch(state: ConnState, event: ev.TunnelUp, now: float) -> Result:
    sw = state.switch
    assert sw is not None and state.gateway is not None
    old = state.gateway
    drain = state.policy.switch_drain
    actions: list[Action] = []
    if drain <= 0:  # no drain: the old tunnel goes at once
        actions += [Terminate(old, state.ike_id, child_only=True), UnloadClone(old)]
    actions += [
        Notify(
            NoticeKind.FAILOVER,
            gateway=sw.gateway,
            from_gateway=old,
            reason=sw.reason,
            duration=now - sw.started,
        ),
        Notify(NoticeKind.TUNNEL_UP, gateway=sw.gateway),
    ]
    fresh = _reset_counters(state)
    up = replace(
        fresh,
        phase=Phase.UP,
        attempt=replace(fresh.attempt, gateway=sw.gateway, ike_id=event.ike_id, deadline=None),
        switch=None,
        drain=Drain(old, state.ike_id, now + drain) if drain > 0 else None,
        redirects=_carried(replace(fresh.redirects, remote=None, pending=None), event),
    )
    return _schedule_failback(up, now), actions


def _is_drained(state: ConnState, gateway: str, ike_id: int | None) -> bool:
    d = state.drain
    return d is not None and d.gateway == gateway and ike_id is not None and ike_id == d.ike_id


def _end_drain(state: ConnState) -> Result:
    """The drained tunnel goes now: terminated, its clone unloaded, its news stale."""
    d = state.drain
    if d is None:
        return state, []
    rds = state.redirects
    retired = rds.retired if d.ike_id is None else (*rds.retired, d.ike_id)[-4:]
    ended = replace(state, drain=None, redirects=replace(rds, retired=retired))
    return ended, [Terminate(d.gateway, d.ike_id, child_only=True), UnloadClone(d.gateway)]


def _abort_switch(state: ConnState, now: float, terminate: bool) -> Result:
    sw = state.switch
    if sw is None:
        return state, []
    actions: list[Action] = []
    if terminate:
        actions.append(Terminate(sw.gateway, sw.ike_id))
    if sw.gateway != state.gateway:
        actions.append(UnloadClone(sw.gateway))
    actions.append(
        Notify(
            NoticeKind.SWITCH_FAILED,
            gateway=sw.gateway,
            from_gateway=state.gateway,
            reason=sw.reason,
        )
    )
    return _schedule_failback(replace(state, switch=None), now), actions


# --- the operator ------------------------------------------------------------------------


def _on_switch(state: ConnState, event: ev.Switch, now: float) -> Result:
    current = state.gateway
    target = event.to if event.to is not None else next_gateway(state.gateways, current)
    if target not in state.gateways or state.switch is not None:
        return state, []
    actions: list[Action] = []
    match state.phase:
        case Phase.UP:  # make-before-break
            if target == current:
                return state, []
            return _begin_switch(state, target, now, "operator")
        case Phase.CONNECTING:  # the attempt under way gives way
            if current is not None:
                actions.append(Terminate(current, state.ike_id, child_only=True))
        case Phase.IDLE | Phase.BACKOFF | Phase.DOWN | Phase.GAVE_UP | Phase.STOPPED:
            pass
    probe = state.failback.probe
    if probe is not None:
        actions.append(StopProbe(probe.gateway, probe.ike_id))
    fresh = _reset_counters(state)
    fresh = _forget_unloaded_clone(replace(fresh, failback=replace(fresh.failback, probe=None)))
    moved, more = _attempt(fresh, target, now)
    return moved, actions + more


def _on_hold(state: ConnState, event: ev.Hold, now: float) -> Result:
    if state.kept.held:
        return state, []
    actions: list[Action] = [Notify(NoticeKind.HELD, gateway=state.gateway)]
    probe = state.failback.probe
    if probe is not None:
        actions.append(StopProbe(probe.gateway, probe.ike_id))
    phase = Phase.DOWN if state.phase is Phase.BACKOFF else state.phase
    deadline = state.attempt.deadline if phase is Phase.CONNECTING else None
    return replace(
        state,
        phase=phase,
        kept=replace(state.kept, held=True),
        failback=replace(state.failback, probe=None, next_probe_at=None),
        attempt=replace(state.attempt, deadline=deadline),
    ), actions


def _on_release(state: ConnState, event: ev.Release, now: float) -> Result:
    if not state.kept.held:
        return state, []
    released = replace(state, kept=replace(state.kept, held=False))
    actions: list[Action] = [Notify(NoticeKind.RELEASED, gateway=state.gateway)]
    match released.phase:
        case Phase.DOWN:  # the gateway failed while held: move on now
            assert released.gateway is not None
            # the next gateway gets all its tries
            released = replace(released, attempt=replace(released.attempt, tries=0))
            target = next_gateway(released.gateways, released.gateway)
            moved, more = _attempt(released, target, now)
            return moved, actions + more
        case _:
            return _schedule_failback(released, now), actions


def _on_stop(state: ConnState, event: ev.Stop, now: float) -> Result:
    state, actions = _end_drain(state)
    if state.switch is not None:
        state, more = _abort_switch(state, now, terminate=True)
        actions += more
    probe = state.failback.probe
    if probe is not None:
        actions.append(StopProbe(probe.gateway, probe.ike_id))
    gateway = state.gateway
    if gateway is not None:
        match state.phase:
            case Phase.UP:
                actions.append(Terminate(gateway, state.ike_id, child_only=True))
                actions.append(UnloadClone(gateway))
                actions.append(
                    Notify(NoticeKind.TUNNEL_DOWN, gateway=state.peer, reason="operator")
                )
            case Phase.CONNECTING:
                actions.append(Terminate(gateway, state.ike_id, child_only=True))
                actions.append(UnloadClone(gateway))
            case Phase.IDLE | Phase.BACKOFF | Phase.DOWN:  # a clone loaded, no SA
                actions.append(UnloadClone(gateway))
            case Phase.GAVE_UP | Phase.STOPPED:  # its clone is gone already
                pass
    fresh = _reset_counters(state)
    stopped = replace(
        fresh,
        phase=Phase.STOPPED,
        attempt=replace(fresh.attempt, ike_id=None, deadline=None),
        failback=Failback(),
        redirects=replace(fresh.redirects, remote=None, pending=None),
    )
    return stopped, actions


# --- bookkeeping: charon restarted, a reload, a restart of extsock ----------------------


def _on_charon_restarted(state: ConnState, event: ev.CharonRestarted, now: float) -> Result:
    # charon lost every SA: nothing to terminate or unload, the machine starts over.
    return replace(initial_state(state.name, event.gateways, state.policy), kept=state.kept), []


def _on_policy_changed(state: ConnState, event: ev.PolicyChanged, now: float) -> Result:
    return replace(state, policy=event.policy), []


def _on_restored(state: ConnState, event: ev.Restored, now: float) -> Result:
    if state.phase is not Phase.IDLE:  # charon's state has been read since: it wins
        return state, []
    return replace(state, kept=Kept(held=event.held, failures_total=event.failures_total)), []


def _on_resolved(state: ConnState, event: ev.GatewaysResolved, now: float) -> Result:
    # The attempt under way keeps its address; the next one is chosen from this list.
    if not event.gateways or event.gateways == state.gateways:
        return state, []
    return replace(state, gateways=event.gateways), []


# --- the hot standby (domain/standby.py) ------------------------------------------------


def _standby_news(state: ConnState, event: ev.Event, now: float) -> Result | None:
    """The step for news about the hot standby's IKE_SA; None for any other news. The
    standby never stands at the tunnel's gateway or a switch's, so what names its gateway
    is never the tunnel's: none of it counts as a failure of the tunnel."""
    hs = state.hot_standby
    if hs is None or _left_behind(state, event):
        return None
    policy, seed = state.policy, state.name

    def failed(reason: str, terminate: bool) -> Result:
        assert hs is not None
        hot, actions = sb.failed(hs, now, policy, seed, reason, terminate)
        return replace(state, hot_standby=hot), actions

    match event:
        case ev.IkeConnecting(gateway, ike_id) if (
            hs.gateway == gateway and hs.phase is StandbyPhase.CONNECTING
        ):
            return replace(state, hot_standby=sb.connecting(hs, ike_id)), []
        case ev.IkeUp(gateway, ike_id) if sb.concerns(hs, gateway, ike_id):
            hot, actions = sb.up(hs, ike_id, now)
            return replace(state, hot_standby=hot), actions
        case ev.IkeRekeyed(gateway, old_id, new_id) if sb.concerns(hs, gateway, old_id):
            return replace(state, hot_standby=sb.rekeyed(hs, old_id, new_id)), []
        case ev.TunnelDown(gateway, ike_id, what) if sb.concerns(hs, gateway, ike_id):
            return failed(what, terminate=what != "ike-down")
        case ev.RetransmitSeen(gateway, ike_id) if sb.concerns(hs, gateway, ike_id):
            if not policy.dead_after_retransmits:
                return state, []
            return failed("retransmit", terminate=True)
        case ev.InitiateFailed(gateway, _, ike_id) if sb.concerns(hs, gateway, ike_id):
            return failed("initiate-failed", terminate=True)
        case ev.PeerAnswered(gateway, ike_id) if sb.concerns(hs, gateway, ike_id):
            return state, []
        case (
            ev.TunnelDown(gateway, _, _)
            | ev.RetransmitSeen(gateway, _)
            | ev.InitiateFailed(gateway, _, _)
            | ev.IkeUp(gateway, _)
        ) if gateway == hs.gateway and gateway != state.gateway:
            return state, []  # an IKE_SA of the standby's clone it left behind: stale
    return None


def _left_behind(state: ConnState, event: ev.Event) -> bool:
    """News of an IKE_SA left behind (a drained tunnel's, a redirect's): a standby started
    at its gateway since is not what it concerns."""
    match event:
        case (
            ev.TunnelDown(ike_id=ike_id)
            | ev.RetransmitSeen(ike_id=ike_id)
            | ev.IkeUp(ike_id=ike_id)
            | ev.InitiateFailed(ike_id=ike_id)
        ):
            return ike_id is not None and ike_id in state.redirects.retired
    return False


def _standby_follows(state: ConnState, actions: list[Action], now: float) -> Result:
    """Point the hot standby where it belongs after this step: after the tunnel's gateway
    while the tunnel is up (kept as it is while a switch or a redirect is under way),
    nowhere otherwise. Its actions come after the step's: never on the tunnel's way."""
    if state.phase is Phase.UP and (state.switch is not None or state.redirects.pending):
        return state, actions
    target = None
    if state.phase is Phase.UP:
        target = sb.wanted(state.gateways, state.gateway, state.policy)
    hs = state.hot_standby
    if hs is None and target is None:
        return state, actions
    if hs is not None and hs.gateway == target:
        return state, actions
    if target is not None and state.drain is not None and state.drain.gateway == target:
        return state, actions  # its clone still carries the drained tunnel: after the drain
    reason = "moved" if target is not None else "stopped"
    hot, more = sb.follow(hs, target, now, state.policy, state.gateway, reason)
    return replace(state, hot_standby=hot), [*actions, *more]
