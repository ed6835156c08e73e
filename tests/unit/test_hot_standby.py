"""The hot standby inside the failover machine (`standby = yes`): step(state, event, now).

Setups are reached by replaying events; time is an argument (a fake clock), nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from extsock_py.domain import events as ev
from extsock_py.domain.actions import (
    Action,
    Initiate,
    LoadClone,
    Notify,
    StartStandby,
    StopStandby,
    Terminate,
    UnloadClone,
)
from extsock_py.domain.failover import ConnState, Phase, initial_state, step, wake_at
from extsock_py.domain.notices import NoticeKind
from extsock_py.domain.policy import BackoffPolicy, FailoverPolicy, backoff_delay
from extsock_py.domain.standby import HotStandby, StandbyPhase

GW1, GW2, GW3 = "10.0.0.1", "10.0.0.2", "10.0.0.3"
T0 = 100.0
BACKOFF = BackoffPolicy(initial=1.0, maximum=8.0, jitter=0.0)
ON = FailoverPolicy(standby=True, backoff=BACKOFF)


def run(state: ConnState, *events: ev.Event, now: float = T0) -> tuple[ConnState, list[Action]]:
    actions: list[Action] = []
    for event in events:
        state, more = step(state, event, now)
        actions += more
    return state, actions


def up_on_gw1(gateways: Sequence[str] = (GW1, GW2), policy: FailoverPolicy = ON) -> ConnState:
    """Tunnel up on GW1 (IKE_SA 1); the standby just asked for."""
    state = initial_state("home", tuple(gateways), policy)
    return run(state, ev.Start(), ev.IkeConnecting(GW1, 1), ev.TunnelUp(GW1, 1))[0]


def with_standby_up(gateways: Sequence[str] = (GW1, GW2)) -> ConnState:
    """Tunnel up on GW1 (IKE_SA 1), standby up on the next gateway (IKE_SA 2)."""
    target = gateways[1]
    state = up_on_gw1(gateways)
    return run(state, ev.IkeConnecting(target, 2), ev.IkeUp(target, 2))[0]


def hs(state: ConnState) -> HotStandby:
    assert state.hot_standby is not None
    return state.hot_standby


# --- it comes up, and only when asked for ----------------------------------------------


def test_off_by_default_nothing_stands_by() -> None:
    state = initial_state("home", (GW1, GW2), FailoverPolicy())
    state, actions = run(state, ev.Start(), ev.TunnelUp(GW1, 1))
    assert state.hot_standby is None
    assert not [a for a in actions if isinstance(a, StartStandby | StopStandby)]


def test_a_single_gateway_has_no_standby() -> None:
    state = up_on_gw1((GW1,))
    assert state.hot_standby is None


def test_the_tunnel_up_starts_the_standby_towards_the_next_gateway() -> None:
    state = initial_state("home", (GW1, GW2, GW3), ON)
    state, actions = run(state, ev.Start(), ev.TunnelUp(GW1, 1))
    assert StartStandby(GW2) in actions
    assert actions.index(Notify(NoticeKind.TUNNEL_UP, gateway=GW1)) < actions.index(
        StartStandby(GW2)
    )
    assert hs(state) == HotStandby(GW2, StandbyPhase.CONNECTING, deadline=T0 + ON.connect_timeout)
    state, actions = run(state, ev.IkeConnecting(GW2, 2), ev.IkeUp(GW2, 2), now=T0 + 0.02)
    assert hs(state).phase is StandbyPhase.UP and hs(state).ike_id == 2
    assert actions == [Notify(NoticeKind.STANDBY_UP, gateway=GW2)]
    assert state.phase is Phase.UP and state.gateway == GW1 and state.ike_id == 1


def test_ike_up_of_the_tunnels_own_sa_is_not_the_standby() -> None:
    state = up_on_gw1()
    after, actions = run(state, ev.IkeUp(GW1, 1))
    assert after == state and actions == []


# --- the failover onto it: one CREATE_CHILD_SA --------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        ev.TunnelDown(GW1, 1, "ike-down"),
        ev.RetransmitSeen(GW1, 1),
        ev.MonitorDead(GW1),
    ],
)
def test_failover_onto_the_standby_initiates_without_loading_the_clone(failure: ev.Event) -> None:
    state = with_standby_up()
    state, actions = run(state, failure, now=T0 + 10)
    assert Initiate(GW2) in actions
    assert LoadClone(GW2) not in actions  # strongSwan 6 would close the childless IKE_SA
    assert not [a for a in actions if isinstance(a, StopStandby)]
    assert state.phase is Phase.CONNECTING and state.gateway == GW2
    assert state.hot_standby is None  # handed over to the tunnel
    assert UnloadClone(GW1) in actions
    state, actions = run(state, ev.TunnelUp(GW2, 2), now=T0 + 10.003)
    assert state.phase is Phase.UP and state.ike_id == 2
    failover = next(a for a in actions if isinstance(a, Notify) and a.kind is NoticeKind.FAILOVER)
    assert failover.from_gateway == GW1 and failover.gateway == GW2
    assert failover.duration == pytest.approx(0.003)
    # The standby follows the list: towards the gateway after the new one.
    assert StartStandby(GW1) in actions
    assert hs(state).gateway == GW1


def test_with_three_gateways_the_standby_moves_on_to_the_third() -> None:
    state = with_standby_up((GW1, GW2, GW3))
    state, _ = run(state, ev.TunnelDown(GW1, 1, "ike-down"), now=T0 + 1)
    state, actions = run(state, ev.TunnelUp(GW2, 2), now=T0 + 1.01)
    assert StartStandby(GW3) in actions and hs(state).gateway == GW3


def test_a_standby_not_up_yet_is_stopped_before_the_cold_attempt() -> None:
    state = up_on_gw1()
    state, _ = run(state, ev.IkeConnecting(GW2, 2))  # still connecting
    state, actions = run(state, ev.TunnelDown(GW1, 1, "ike-down"), now=T0 + 1)
    stop = StopStandby(GW2, 2, unload=False)
    assert stop in actions and LoadClone(GW2) in actions and Initiate(GW2) in actions
    assert actions.index(stop) < actions.index(LoadClone(GW2))
    assert state.hot_standby is None and state.gateway == GW2


def test_a_standby_elsewhere_is_stopped_when_the_tunnel_fails() -> None:
    """Three gateways, standby on GW2; the failover goes to GW2 cold when the standby is in
    backoff, and the standby is started again only once the tunnel is up."""
    state = with_standby_up((GW1, GW2, GW3))
    state, _ = run(state, ev.TunnelDown(GW2, 2, "ike-down"), now=T0 + 1)  # standby died
    assert hs(state).phase is StandbyPhase.BACKOFF
    state, actions = run(state, ev.TunnelDown(GW1, 1, "ike-down"), now=T0 + 1.1)
    assert LoadClone(GW2) in actions and Initiate(GW2) in actions
    assert state.hot_standby is None


# --- it dies, and comes back with the backoff; never a failure of the tunnel -----------------


@pytest.mark.parametrize(
    ("event", "terminated", "reason"),
    [
        (ev.TunnelDown(GW2, 2, "ike-down"), False, "ike-down"),
        (ev.RetransmitSeen(GW2, 2), True, "retransmit"),
        (ev.TunnelDown(GW2, 2, "no-route"), True, "no-route"),
    ],
)
def test_a_dead_standby_waits_the_backoff_and_comes_back(
    event: ev.Event, terminated: bool, reason: str
) -> None:
    before = with_standby_up()
    state, actions = run(before, event, now=T0 + 5)
    assert (StopStandby(GW2, 2, unload=False) in actions) is terminated
    assert Notify(NoticeKind.STANDBY_DOWN, gateway=GW2, reason=reason) in actions
    assert not [a for a in actions if isinstance(a, Terminate | LoadClone | Initiate)]
    # The tunnel saw nothing.
    assert state.phase is Phase.UP and state.gateway == GW1 and state.ike_id == 1
    assert (
        state.kept.failures_total == 0 and state.attempt.retransmits == 0 and state.outage is None
    )
    delay = backoff_delay(BACKOFF, 1, "home/standby")
    assert hs(state).phase is StandbyPhase.BACKOFF and hs(state).deadline == T0 + 5 + delay
    assert wake_at(state) == T0 + 5 + delay
    assert run(state, ev.Tick(), now=T0 + 5 + delay - 0.001)[1] == []
    state, actions = run(state, ev.Tick(), now=T0 + 5 + delay)
    assert actions == [StartStandby(GW2)]
    assert hs(state).phase is StandbyPhase.CONNECTING


def test_a_gateway_that_stays_dead_gets_growing_waits_and_the_tunnel_nothing() -> None:
    state = up_on_gw1()
    now = T0
    waits: list[float] = []
    for _ in range(5):
        deadline = hs(state).deadline
        assert deadline is not None
        now = deadline
        state, _ = run(state, ev.Tick(), now=now)  # connect timeout
        assert hs(state).phase is StandbyPhase.BACKOFF
        deadline = hs(state).deadline
        assert deadline is not None
        waits.append(deadline - now)
        now = deadline
        state, actions = run(state, ev.Tick(), now=now)
        assert StartStandby(GW2) in actions
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert (
        state.phase is Phase.UP
        and state.kept.failures_total == 0
        and state.attempt.cycles_failed == 0
    )


def test_an_initiate_refused_for_the_standby_is_its_failure_only() -> None:
    state = up_on_gw1()
    state, _ = run(state, ev.InitiateFailed(GW2, "establishing IKE_SA failed"))
    assert hs(state).phase is StandbyPhase.BACKOFF
    assert state.phase is Phase.UP and state.kept.failures_total == 0


def test_news_of_the_standby_in_backoff_is_stale() -> None:
    state = with_standby_up()
    state, _ = run(state, ev.TunnelDown(GW2, 2, "ike-down"))
    after, actions = run(state, ev.RetransmitSeen(GW2, 2), ev.TunnelDown(GW2, 2, "ike-down"))
    assert after == state and actions == []


def test_the_standby_follows_its_ike_sa_through_a_rekey() -> None:
    state = with_standby_up()
    state, _ = run(state, ev.IkeRekeyed(GW2, 2, 7))
    assert hs(state).ike_id == 7 and state.ike_id == 1
    state, actions = run(state, ev.TunnelDown(GW1, 1, "ike-down"))
    assert Initiate(GW2) in actions and LoadClone(GW2) not in actions


# --- the operator, reloads, charon ---------------------------------------------------------


def test_stop_ends_the_standby_and_unloads_its_clone() -> None:
    state, actions = run(with_standby_up(), ev.Stop())
    assert StopStandby(GW2, 2, unload=True) in actions
    assert Notify(NoticeKind.STANDBY_DOWN, gateway=GW2, reason="stopped") in actions
    assert state.hot_standby is None and state.phase is Phase.STOPPED


def test_an_operator_switch_to_the_standby_rides_in_it() -> None:
    state, actions = run(with_standby_up(), ev.Switch(GW2), now=T0 + 1)
    assert Initiate(GW2) in actions and LoadClone(GW2) not in actions
    assert state.hot_standby is None
    state, actions = run(state, ev.TunnelUp(GW2, 2), now=T0 + 1.005)
    assert state.gateway == GW2 and state.phase is Phase.UP
    # After GW2 comes GW1 again, whose clone still carries the drained old tunnel: the
    # standby goes there once the drain is over and the old clone unloaded.
    assert state.hot_standby is None and StartStandby(GW1) not in actions
    assert wake_at(state) == T0 + 1.005 + ON.switch_drain
    state, actions = run(state, ev.Tick(), now=T0 + 1.005 + ON.switch_drain)
    assert StartStandby(GW1) in actions
    assert actions.index(UnloadClone(GW1)) < actions.index(StartStandby(GW1))


def test_turning_standby_off_in_a_reload_stops_it_and_on_starts_it() -> None:
    state, actions = run(with_standby_up(), ev.PolicyChanged(FailoverPolicy()))
    assert StopStandby(GW2, 2, unload=True) in actions and state.hot_standby is None
    state, actions = run(state, ev.PolicyChanged(ON))
    assert StartStandby(GW2) in actions and hs(state).gateway == GW2


def test_charon_restarted_forgets_the_standby() -> None:
    state, actions = run(with_standby_up(), ev.CharonRestarted((GW1, GW2)))
    assert state.hot_standby is None and actions == []


def test_held_tunnel_keeps_its_standby() -> None:
    state, actions = run(with_standby_up(), ev.Hold())
    assert hs(state).phase is StandbyPhase.UP
    assert not [a for a in actions if isinstance(a, StopStandby)]


def test_the_standby_is_never_on_the_tunnels_gateway() -> None:
    """Whatever the order of news, the standby and the tunnel never share a gateway."""
    state = with_standby_up((GW1, GW2, GW3))
    script: list[ev.Event] = [
        ev.TunnelDown(GW1, 1, "ike-down"),
        ev.TunnelUp(GW2, 2),
        ev.IkeConnecting(GW3, 3),
        ev.IkeUp(GW3, 3),
        ev.RetransmitSeen(GW2, 2),
        ev.IkeConnecting(GW3, 4),
        ev.TunnelUp(GW3, 4),
        ev.Switch(GW1),
        ev.Tick(),
    ]
    now = T0
    for event in script:
        now += 1.0
        state, _ = run(state, event, now=now)
        if state.hot_standby is not None:
            assert state.hot_standby.gateway != state.gateway, (event, state)
    assert state.kept.failures_total >= 1


def test_the_drained_tunnels_late_ike_down_is_not_the_new_standbys_failure() -> None:
    """The drain ends (old IKE_SA 1 terminated), the standby starts at GW1 at once; the
    ike-down of IKE_SA 1 that follows is news of the drained tunnel, not of the standby."""
    state = run(with_standby_up(), ev.Switch(GW2), ev.TunnelUp(GW2, 2), now=T0 + 1)[0]
    state, actions = run(state, ev.Tick(), now=T0 + 1 + ON.switch_drain)
    assert Terminate(GW1, 1, child_only=True) in actions and StartStandby(GW1) in actions
    assert hs(state).phase is StandbyPhase.CONNECTING and hs(state).ike_id is None
    state, actions = run(state, ev.TunnelDown(GW1, 1, "ike-down"), now=T0 + 2.01)
    assert actions == [] and hs(state).phase is StandbyPhase.CONNECTING
    state, _ = run(state, ev.IkeConnecting(GW1, 3), ev.IkeUp(GW1, 3), now=T0 + 2.02)
    assert hs(state).phase is StandbyPhase.UP and hs(state).ike_id == 3
