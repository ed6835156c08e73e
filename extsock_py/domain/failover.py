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
  next to the old one and the old one goes only once the new tunnel is installed.
- A redirect from the gateway (RFC 5685) is followed, not fought: charon moves the
  tunnel to the target under the same clone; `remote` names where it really is, no
  failure is counted, and the IKE_SAs it left behind (`retired`) are news of nothing.
  When the target later fails, the failover goes on with the configured list.
- DNS names in the gateway list are resolved at each attempt (GatewaysResolved, from the
  caller): a name with several addresses is that many gateways, tried in turn.
- A failure of the CHILD_SA alone (child-down, the tunnel monitor) and every teardown of
  a healthy tunnel ask charon to end only this connection's CHILD_SA when the IKE_SA
  carries another connection's tunnel (`Terminate.child_only`).
- It is the only writer of a connection's state: charon coming back (CharonRestarted), a
  reload's new policy (PolicyChanged) and what the last run persisted (Restored) come in
  as events too, and ask for no action.

Its sub-machines, and the fields of `ConnState` each one owns:
- phase: `phase` (Phase below), the one every other part is read against.
- attempt: `gateway`, `ike_id`, `deadline`, `attempts_on_gateway`, `failed_in_cycle`,
  `cycles_failed`, `retransmits`, `failures_total`, and the outage being measured
  (`outage_*`, from the first failure to the tunnel up again).
- standby: `standby`, a make-before-break switch in flight (failback or operator).
- failback: `probe`, `next_probe_at`, `healthy_since`: probes of the primary.
- hold: `held`; the operator's hold, kept across charon restarts and extsock restarts.
- redirect: `redirect`, `remote`, `retired`: a redirect being followed, where it led.
The transitions are one handler per event type (`_HANDLERS`, at the end); each handler
reads the phase and the sub-machine the event concerns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from extsock_py.domain import events as ev
from extsock_py.domain.actions import (
    Action,
    Initiate,
    LoadClone,
    Notify,
    StartProbe,
    StopProbe,
    Terminate,
    UnloadClone,
)
from extsock_py.domain.gateways import next_gateway
from extsock_py.domain.notices import NoticeKind
from extsock_py.domain.policy import FailoverPolicy, backoff_delay


class Phase(StrEnum):
    IDLE = "idle"  # loaded, not started
    CONNECTING = "connecting"  # an attempt towards `gateway` is under way
    UP = "up"  # tunnel installed through `gateway`
    BACKOFF = "backoff"  # a whole cycle failed; waiting until `deadline`
    DOWN = "down"  # down while held by the operator: no automatic action
    GAVE_UP = "gave-up"  # max_cycles failed in a row; waits for the operator or a reload
    STOPPED = "stopped"  # the operator brought it down


@dataclass(frozen=True)
class Standby:
    """A make-before-break switch in flight: a second clone being brought up."""

    gateway: str
    reason: str
    started: float
    deadline: float
    ike_id: int | None = None


@dataclass(frozen=True)
class Redirect:
    """A redirect charon follows: the tunnel is being set up again towards `target`."""

    target: str
    from_id: int
    started: float
    deadline: float
    from_remote: str | None = None


@dataclass(frozen=True)
class Probe:
    """A failback probe in flight."""

    gateway: str
    deadline: float
    ike_id: int | None = None


@dataclass(frozen=True)
class ConnState:
    name: str
    gateways: tuple[str, ...]
    policy: FailoverPolicy
    phase: Phase = Phase.IDLE
    gateway: str | None = None
    ike_id: int | None = None
    deadline: float | None = None
    attempts_on_gateway: int = 0
    failed_in_cycle: int = 0
    cycles_failed: int = 0
    retransmits: int = 0
    failures_total: int = 0
    held: bool = False
    outage_since: float | None = None
    outage_reason: str | None = None
    outage_from: str | None = None
    # Seconds of silence before the failure was declared, when a detector knows them (the
    # tunnel monitor's last answer or inbound packet): outage = that + detection to up.
    outage_lead: float | None = None
    standby: Standby | None = None
    probe: Probe | None = None
    next_probe_at: float | None = None
    healthy_since: float | None = None
    remote: str | None = None  # where a redirect took the tunnel (None: `gateway` itself)
    redirect: Redirect | None = None
    retired: tuple[int, ...] = ()  # IKE_SAs a redirect left behind: their news is stale

    @property
    def peer(self) -> str | None:
        """The gateway the tunnel really goes to."""
        return self.remote if self.remote is not None else self.gateway

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
    times = [state.deadline, state.next_probe_at]
    if state.standby is not None:
        times.append(state.standby.deadline)
    if state.probe is not None:
        times.append(state.probe.deadline)
    if state.redirect is not None:
        times.append(state.redirect.deadline)
    pending = [t for t in times if t is not None]
    return min(pending) if pending else None


def step(state: ConnState, event: ev.Event, now: float) -> Result:
    """Apply one event at time `now`; return the new state and the actions to carry out."""
    handler = _HANDLERS.get(type(event))
    if handler is None:
        return state, []
    return handler(state, event, now)


# --- starting and attempts -------------------------------------------------------------


def _attempt(state: ConnState, gateway: str, now: float, reload_clone: bool = True) -> Result:
    """Start an attempt towards `gateway`, then unload the previous clone if it differs
    (after the initiate: unloading is not on the way to the new tunnel)."""
    actions: list[Action] = []
    if reload_clone:
        actions.append(LoadClone(gateway))
    actions.append(Initiate(gateway))
    if reload_clone and state.gateway is not None and state.gateway != gateway:
        actions.append(UnloadClone(state.gateway))
    new = replace(
        state,
        phase=Phase.CONNECTING,
        gateway=gateway,
        ike_id=None,
        retransmits=0,
        deadline=now + state.policy.connect_timeout,
        next_probe_at=None,
        healthy_since=None,
        remote=None,
        redirect=None,
    )
    return new, actions


def _on_start(state: ConnState, event: ev.Start, now: float) -> Result:
    if state.phase not in (Phase.IDLE, Phase.STOPPED, Phase.GAVE_UP):
        return state, []
    fresh = _forget_unloaded_clone(_reset_counters(state))
    return _attempt(fresh, fresh.primary, now)


def _forget_unloaded_clone(state: ConnState) -> ConnState:
    if state.phase in (Phase.GAVE_UP, Phase.STOPPED):
        return replace(state, gateway=None)
    return state


def _on_retry(state: ConnState, event: ev.Retry, now: float) -> Result:
    if state.phase in (Phase.UP, Phase.CONNECTING):
        return state, []
    fresh = replace(_forget_unloaded_clone(_reset_counters(state)), held=False)
    return _attempt(fresh, fresh.primary, now)


def _on_adopt(state: ConnState, event: ev.Adopt, now: float) -> Result:
    if event.gateway not in state.gateways:
        return state, []
    up = replace(
        _reset_counters(state),
        phase=Phase.UP,
        gateway=event.gateway,
        ike_id=event.ike_id,
        deadline=None,
    )
    return _schedule_failback(up, now), [
        Notify(NoticeKind.TUNNEL_UP, gateway=event.gateway, reason="adopted")
    ]


def _reset_counters(state: ConnState) -> ConnState:
    return replace(
        state,
        attempts_on_gateway=0,
        failed_in_cycle=0,
        cycles_failed=0,
        retransmits=0,
        outage_since=None,
        outage_reason=None,
        outage_from=None,
        outage_lead=None,
    )


# --- charon's news about the current attempt or tunnel -----------------------------------


def _is_current(state: ConnState, gateway: str, ike_id: int | None) -> bool:
    if gateway != state.gateway or state.phase not in (Phase.CONNECTING, Phase.UP):
        return False
    if ike_id is not None and ike_id in state.retired:
        return False
    return state.ike_id is None or ike_id is None or ike_id == state.ike_id


def _is_standby(state: ConnState, gateway: str, ike_id: int | None) -> bool:
    sb = state.standby
    if sb is None or sb.gateway != gateway:
        return False
    return sb.ike_id is None or ike_id is None or ike_id == sb.ike_id


def _on_connecting(state: ConnState, event: ev.IkeConnecting, now: float) -> Result:
    if _is_standby(state, event.gateway, None) and state.standby is not None:
        return replace(state, standby=replace(state.standby, ike_id=event.ike_id)), []
    if state.phase is Phase.CONNECTING and event.gateway == state.gateway:
        # A redirect at IKE_SA_INIT starts the same IKE_SA again towards its target.
        retired = tuple(i for i in state.retired if i != event.ike_id)
        return replace(state, ike_id=event.ike_id, retired=retired), []
    return state, []


def _on_tunnel_up(state: ConnState, event: ev.TunnelUp, now: float) -> Result:
    if _is_standby(state, event.gateway, event.ike_id) and state.standby is not None:
        return _complete_standby(state, event, now)
    if not _is_current(state, event.gateway, event.ike_id):
        return state, []
    if state.redirect is not None:
        return _complete_redirect(state, event, now)
    if state.phase is Phase.UP:
        return replace(state, ike_id=event.ike_id), []
    actions: list[Action] = []
    if state.outage_since is not None:
        actions.append(
            Notify(
                NoticeKind.FAILOVER,
                gateway=event.gateway,
                from_gateway=state.outage_from,
                reason=state.outage_reason,
                duration=now - state.outage_since,
                outage=None
                if state.outage_lead is None
                else now - state.outage_since + state.outage_lead,
            )
        )
    actions.append(Notify(NoticeKind.TUNNEL_UP, gateway=event.gateway))
    up = replace(_reset_counters(state), phase=Phase.UP, ike_id=event.ike_id, deadline=None)
    return _schedule_failback(up, now), actions


def _on_rekeyed(state: ConnState, event: ev.IkeRekeyed, now: float) -> Result:
    if _is_standby(state, event.gateway, event.old_id) and state.standby is not None:
        return replace(state, standby=replace(state.standby, ike_id=event.new_id)), []
    if state.ike_id == event.old_id and event.gateway == state.gateway:
        return replace(state, ike_id=event.new_id, retransmits=0), []
    return state, []


def _on_tunnel_down(state: ConnState, event: ev.TunnelDown, now: float) -> Result:
    # Only after ike-down is the IKE_SA gone; after child-down or no-route it lingers in
    # charon (without a CHILD_SA, or stale with no path) and must be terminated.
    terminate = event.what != "ike-down"
    if _is_standby(state, event.gateway, event.ike_id):
        return _abort_standby(state, now, terminate=terminate)
    if not _is_current(state, event.gateway, event.ike_id):
        return state, []
    return _fail(state, now, event.what, terminate=terminate)


def _on_redirected(state: ConnState, event: ev.Redirected, now: float) -> Result:
    if not _is_current(state, event.gateway, event.ike_id):
        return state, []
    redirect = Redirect(
        target=event.target,
        from_id=event.ike_id,
        started=state.redirect.started if state.redirect is not None else now,
        deadline=now + state.policy.connect_timeout,
        from_remote=state.peer,
    )
    # charon sets the tunnel up again towards the target, under a new IKE_SA (established,
    # or redirected during IKE_AUTH) or the same one (IKE_SA_INIT): which one is unknown
    # until it is up, and the one left behind goes away without meaning anything.
    followed = replace(
        state,
        ike_id=None,
        retired=(*state.retired, event.ike_id)[-4:],
        redirect=redirect,
        retransmits=0,
    )
    if state.phase is Phase.CONNECTING:
        followed = replace(followed, remote=event.target, deadline=redirect.deadline)
    return followed, []


def _on_redirect_refused(state: ConnState, event: ev.RedirectRefused, now: float) -> Result:
    rd = state.redirect
    if rd is None or rd.from_id != event.ike_id or event.gateway != state.gateway:
        return state, []
    # charon keeps the IKE_SA where it was: so does the machine.
    remote = rd.from_remote if rd.from_remote != state.gateway else None
    retired = tuple(i for i in state.retired if i != rd.from_id)
    kept = replace(state, redirect=None, ike_id=rd.from_id, retired=retired, remote=remote)
    if state.phase is Phase.CONNECTING:
        kept = replace(kept, deadline=rd.started + state.policy.connect_timeout)
    return kept, []


def _complete_redirect(state: ConnState, event: ev.TunnelUp, now: float) -> Result:
    rd = state.redirect
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
        if state.outage_since is not None:  # a failover that a redirect completed
            actions.append(
                Notify(
                    NoticeKind.FAILOVER,
                    gateway=rd.target,
                    from_gateway=state.outage_from,
                    reason=state.outage_reason,
                    duration=now - state.outage_since,
                )
            )
        actions.append(Notify(NoticeKind.TUNNEL_UP, gateway=rd.target, reason="redirect"))
    up = replace(
        _reset_counters(state),
        phase=Phase.UP,
        ike_id=event.ike_id,
        remote=rd.target if rd.target != state.gateway else None,
        redirect=None,
        deadline=None,
    )
    return _schedule_failback(up, now), actions


def _on_initiate_failed(state: ConnState, event: ev.InitiateFailed, now: float) -> Result:
    if _is_standby(state, event.gateway, event.ike_id):
        return _abort_standby(state, now, terminate=True)
    if state.phase is not Phase.CONNECTING or not _is_current(state, event.gateway, event.ike_id):
        return state, []
    return _fail(state, now, "initiate-failed", terminate=True)


def _on_retransmit(state: ConnState, event: ev.RetransmitSeen, now: float) -> Result:
    limit = state.policy.dead_after_retransmits
    if _is_standby(state, event.gateway, event.ike_id):
        return _abort_standby(state, now, terminate=True) if limit else (state, [])
    if not _is_current(state, event.gateway, event.ike_id):
        return state, []
    if state.phase is not Phase.UP:
        # A connect is judged by connect_timeout alone: a gateway answering a storm of
        # connects late (a retransmit after charon's 4 s) is slow, not dead.
        return replace(state, ike_id=event.ike_id), []
    counted = replace(state, retransmits=state.retransmits + 1, ike_id=event.ike_id)
    if limit and counted.retransmits >= limit:
        return _fail(counted, now, "retransmit", terminate=True)
    return counted, []


def _on_peer_answered(state: ConnState, event: ev.PeerAnswered, now: float) -> Result:
    if not _is_current(state, event.gateway, event.ike_id):
        return state, []
    return replace(state, retransmits=0), []


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
    actions: list[Action] = []
    base = state
    if state.standby is not None:
        base, actions = _abort_standby(state, now, terminate=True)
    if base.probe is not None:
        actions.append(StopProbe(base.probe.gateway, base.probe.ike_id))
    if terminate:
        actions.append(Terminate(gateway, base.ike_id, child_only=reason in _CHILD_FAILURES))
    if base.phase is Phase.UP:
        actions.append(Notify(NoticeKind.TUNNEL_DOWN, gateway=peer, reason=reason))
    failed = replace(
        base,
        ike_id=None,
        deadline=None,
        probe=None,
        next_probe_at=None,
        healthy_since=None,
        failures_total=base.failures_total + 1,
        attempts_on_gateway=base.attempts_on_gateway + 1,
        outage_since=base.outage_since if base.outage_since is not None else now,
        outage_reason=base.outage_reason or reason,
        outage_from=base.outage_from or peer,
        outage_lead=base.outage_lead if base.outage_since is not None else lead,
        redirect=None,
    )
    if failed.held:
        return replace(failed, phase=Phase.DOWN), actions
    if failed.attempts_on_gateway < failed.policy.attempts_per_gateway:
        retried, more = _attempt(failed, gateway, now, reload_clone=False)
        return retried, actions + more
    failed = replace(failed, attempts_on_gateway=0, failed_in_cycle=failed.failed_in_cycle + 1)
    if failed.failed_in_cycle < len(failed.gateways):
        return _move_on(failed, now, reason, actions)
    failed = replace(failed, failed_in_cycle=0, cycles_failed=failed.cycles_failed + 1)
    limit = failed.policy.max_cycles
    if limit and failed.cycles_failed >= limit:
        actions += [
            UnloadClone(gateway),
            Notify(NoticeKind.GAVE_UP, gateway=gateway, reason=reason),
        ]
        return replace(failed, phase=Phase.GAVE_UP), actions
    delay = backoff_delay(failed.policy.backoff, failed.cycles_failed, failed.name)
    return replace(failed, phase=Phase.BACKOFF, deadline=now + delay), actions


def _move_on(state: ConnState, now: float, reason: str, actions: list[Action]) -> Result:
    assert state.gateway is not None
    target = next_gateway(state.gateways, state.gateway)
    moved, more = _attempt(state, target, now)
    notice = Notify(
        NoticeKind.FAILOVER_STARTED, gateway=target, from_gateway=state.peer, reason=reason
    )
    return moved, [*actions, notice, *more]


# --- time --------------------------------------------------------------------------------


def _on_tick(state: ConnState, event: ev.Tick, now: float) -> Result:
    actions: list[Action] = []
    if state.standby is not None and now >= state.standby.deadline:
        state, more = _abort_standby(state, now, terminate=True)
        actions += more
    if state.probe is not None and now >= state.probe.deadline:
        state, more = _probe_failed(state, now)
        actions += more
    if state.redirect is not None and now >= state.redirect.deadline:
        if state.phase is Phase.UP:
            state, more = _fail(state, now, "redirect-failed", terminate=True)
            actions += more
        else:
            state = replace(state, redirect=None)  # CONNECTING: connect_timeout judges it
    if state.deadline is not None and now >= state.deadline:
        if state.phase is Phase.CONNECTING:
            state, more = _fail(state, now, "connect-timeout", terminate=True)
            actions += more
        elif state.phase is Phase.BACKOFF:
            assert state.gateway is not None
            state, more = _attempt(state, next_gateway(state.gateways, state.gateway), now)
            actions += more
    if (
        state.next_probe_at is not None
        and now >= state.next_probe_at
        and state.phase is Phase.UP
        and not state.held
        and state.probe is None
        and state.standby is None
    ):
        probe = Probe(gateway=state.primary, deadline=now + state.policy.failback.probe_timeout)
        state = replace(state, probe=probe, next_probe_at=None)
        actions.append(StartProbe(state.primary))
    return state, actions


# --- failback: probes and make-before-break -----------------------------------------------


def _schedule_failback(state: ConnState, now: float) -> ConnState:
    fb = state.policy.failback
    if (
        not fb.enabled
        or state.held  # no probe while held (Release schedules one): else wake_at stays due
        or state.gateway == state.primary
        or state.phase is not Phase.UP
    ):
        return replace(state, next_probe_at=None, healthy_since=None)
    return replace(state, next_probe_at=now + fb.probe_interval)


def _on_probe_up(state: ConnState, event: ev.ProbeUp, now: float) -> Result:
    if state.probe is None or state.probe.gateway != event.gateway:
        return state, []
    actions: list[Action] = [StopProbe(event.gateway, event.ike_id)]
    healthy_since = state.healthy_since if state.healthy_since is not None else now
    probed = replace(state, probe=None, healthy_since=healthy_since)
    if now - healthy_since >= state.policy.failback.hold_down:
        switched, more = _begin_standby(probed, state.primary, now, "failback")
        return switched, actions + more
    return replace(probed, next_probe_at=now + state.policy.failback.probe_interval), actions


def _on_probe_failed(state: ConnState, event: ev.ProbeFailed, now: float) -> Result:
    if state.probe is None or state.probe.gateway != event.gateway:
        return state, []
    return _probe_failed(state, now)


def _probe_failed(state: ConnState, now: float) -> Result:
    assert state.probe is not None
    actions: list[Action] = [StopProbe(state.probe.gateway, state.probe.ike_id)]
    return _schedule_failback(replace(state, probe=None, healthy_since=None), now), actions


def _begin_standby(state: ConnState, target: str, now: float, reason: str) -> Result:
    sb = Standby(
        gateway=target, reason=reason, started=now, deadline=now + state.policy.connect_timeout
    )
    actions: list[Action] = []
    if state.probe is not None:  # a probe answering mid-switch would start a second standby
        actions.append(StopProbe(state.probe.gateway, state.probe.ike_id))
    new = replace(state, standby=sb, probe=None, next_probe_at=None, healthy_since=None)
    return new, [*actions, LoadClone(target), Initiate(target)]


def _complete_standby(state: ConnState, event: ev.TunnelUp, now: float) -> Result:
    sb = state.standby
    assert sb is not None and state.gateway is not None
    old = state.gateway
    actions: list[Action] = [
        Terminate(old, state.ike_id, child_only=True),
        UnloadClone(old),
        Notify(
            NoticeKind.FAILOVER,
            gateway=sb.gateway,
            from_gateway=old,
            reason=sb.reason,
            duration=now - sb.started,
        ),
        Notify(NoticeKind.TUNNEL_UP, gateway=sb.gateway),
    ]
    up = replace(
        _reset_counters(state),
        phase=Phase.UP,
        gateway=sb.gateway,
        ike_id=event.ike_id,
        standby=None,
        deadline=None,
        remote=None,
        redirect=None,
    )
    return _schedule_failback(up, now), actions


def _abort_standby(state: ConnState, now: float, terminate: bool) -> Result:
    sb = state.standby
    if sb is None:
        return state, []
    actions: list[Action] = []
    if terminate:
        actions.append(Terminate(sb.gateway, sb.ike_id))
    if sb.gateway != state.gateway:
        actions.append(UnloadClone(sb.gateway))
    actions.append(
        Notify(
            NoticeKind.SWITCH_FAILED,
            gateway=sb.gateway,
            from_gateway=state.gateway,
            reason=sb.reason,
        )
    )
    return _schedule_failback(replace(state, standby=None), now), actions


# --- the operator ------------------------------------------------------------------------


def _on_switch(state: ConnState, event: ev.Switch, now: float) -> Result:
    current = state.gateway
    target = event.to if event.to is not None else next_gateway(state.gateways, current)
    if target not in state.gateways or state.standby is not None:
        return state, []
    if state.phase is Phase.UP:
        if target == current:
            return state, []
        return _begin_standby(state, target, now, "operator")
    actions: list[Action] = []
    if state.phase is Phase.CONNECTING and current is not None:
        actions.append(Terminate(current, state.ike_id, child_only=True))
    if state.probe is not None:
        actions.append(StopProbe(state.probe.gateway, state.probe.ike_id))
    fresh = _forget_unloaded_clone(replace(_reset_counters(state), probe=None))
    moved, more = _attempt(fresh, target, now)
    return moved, actions + more


def _on_hold(state: ConnState, event: ev.Hold, now: float) -> Result:
    if state.held:
        return state, []
    actions: list[Action] = [Notify(NoticeKind.HELD, gateway=state.gateway)]
    held = state
    if state.probe is not None:
        actions.append(StopProbe(state.probe.gateway, state.probe.ike_id))
    if state.phase is Phase.BACKOFF:
        held = replace(held, phase=Phase.DOWN)
    return replace(
        held,
        held=True,
        probe=None,
        next_probe_at=None,
        deadline=(held.deadline if held.phase is Phase.CONNECTING else None),
    ), actions


def _on_release(state: ConnState, event: ev.Release, now: float) -> Result:
    if not state.held:
        return state, []
    released = replace(state, held=False)
    actions: list[Action] = [Notify(NoticeKind.RELEASED, gateway=state.gateway)]
    if released.phase is Phase.DOWN:
        assert released.gateway is not None
        released = replace(released, attempts_on_gateway=0)  # the next gateway gets all its tries
        moved, more = _attempt(released, next_gateway(released.gateways, released.gateway), now)
        return moved, actions + more
    return _schedule_failback(released, now), actions


def _on_stop(state: ConnState, event: ev.Stop, now: float) -> Result:
    actions: list[Action] = []
    if state.standby is not None:
        state, actions = _abort_standby(state, now, terminate=True)
    if state.probe is not None:
        actions.append(StopProbe(state.probe.gateway, state.probe.ike_id))
    if state.gateway is not None and state.phase not in (Phase.GAVE_UP, Phase.STOPPED):
        if state.phase in (Phase.CONNECTING, Phase.UP):
            actions.append(Terminate(state.gateway, state.ike_id, child_only=True))
        actions.append(UnloadClone(state.gateway))
    if state.phase is Phase.UP:
        actions.append(Notify(NoticeKind.TUNNEL_DOWN, gateway=state.peer, reason="operator"))
    stopped = replace(
        _reset_counters(state),
        phase=Phase.STOPPED,
        remote=None,
        redirect=None,
        ike_id=None,
        deadline=None,
        probe=None,
        next_probe_at=None,
        healthy_since=None,
    )
    return stopped, actions


# --- bookkeeping: charon restarted, a reload, a restart of extsock ----------------------


def _on_charon_restarted(state: ConnState, event: ev.CharonRestarted, now: float) -> Result:
    # charon lost every SA: nothing to terminate or unload, the machine starts over.
    fresh = initial_state(state.name, event.gateways, state.policy)
    return replace(fresh, held=state.held, failures_total=state.failures_total), []


def _on_policy_changed(state: ConnState, event: ev.PolicyChanged, now: float) -> Result:
    return replace(state, policy=event.policy), []


def _on_restored(state: ConnState, event: ev.Restored, now: float) -> Result:
    if state.phase is not Phase.IDLE:  # charon's state has been read since: it wins
        return state, []
    return replace(state, held=event.held, failures_total=event.failures_total), []


def _on_resolved(state: ConnState, event: ev.GatewaysResolved, now: float) -> Result:
    # The attempt under way keeps its address; the next one is chosen from this list.
    if not event.gateways or event.gateways == state.gateways:
        return state, []
    return replace(state, gateways=event.gateways), []


_HANDLERS: dict[type, Callable[[ConnState, Any, float], Result]] = {
    ev.GatewaysResolved: _on_resolved,
    ev.Start: _on_start,
    ev.Retry: _on_retry,
    ev.Adopt: _on_adopt,
    ev.IkeConnecting: _on_connecting,
    ev.TunnelUp: _on_tunnel_up,
    ev.IkeRekeyed: _on_rekeyed,
    ev.TunnelDown: _on_tunnel_down,
    ev.Redirected: _on_redirected,
    ev.RedirectRefused: _on_redirect_refused,
    ev.InitiateFailed: _on_initiate_failed,
    ev.RetransmitSeen: _on_retransmit,
    ev.PeerAnswered: _on_peer_answered,
    ev.MonitorDead: _on_monitor_dead,
    ev.ProbeUp: _on_probe_up,
    ev.ProbeFailed: _on_probe_failed,
    ev.Tick: _on_tick,
    ev.Switch: _on_switch,
    ev.Hold: _on_hold,
    ev.Release: _on_release,
    ev.Stop: _on_stop,
    ev.CharonRestarted: _on_charon_restarted,
    ev.PolicyChanged: _on_policy_changed,
    ev.Restored: _on_restored,
}
