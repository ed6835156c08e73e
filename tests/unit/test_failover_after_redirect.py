"""Where a failover goes when the gateway a redirect (RFC 5685) took the tunnel to dies.

The clone stays the one towards the gateway that redirected, and the failover went on with
`remote_addrs` after that one. Found by the chaos run of issue 26 (seed 2602, 600 s,
at 00:57:03): segw3 had redirected both connections to segw1, segw1's link was cut, and
extsock logged `upb: failover-started 10.99.1.2 -> 10.99.1.2 (reason retransmit)`: the gateway
after segw3 in the list is segw1, the one that had just died. The attempt waited out
connect_timeout (6 s) before moving to segw2, an outage of 6 s where 0.1 s sufficed.
"""

from __future__ import annotations

from extsock_py.domain import events as ev
from extsock_py.domain.actions import Action
from extsock_py.domain.failover import ConnState, Phase, initial_state, step
from extsock_py.domain.policy import FailoverPolicy

GW1, GW2, GW3 = "10.0.0.1", "10.0.0.2", "10.0.0.3"
T0 = 1000.0


def run(state: ConnState, *events: ev.Event, now: float = T0) -> tuple[ConnState, list[Action]]:
    actions: list[Action] = []
    for event in events:
        state, more = step(state, event, now)
        actions += more
    return state, actions


def up_on_gw3_redirected_to(target: str, gateways: tuple[str, ...]) -> ConnState:
    state = initial_state("home", gateways, FailoverPolicy(max_cycles=0))
    state, _ = run(state, ev.Adopt(GW3, 4))
    state, _ = run(state, ev.Redirected(GW3, 4, target), ev.TunnelUp(GW3, 6), now=T0 + 1)
    assert (state.phase, state.gateway, state.peer) == (Phase.UP, GW3, target)
    return state


def test_the_failover_skips_the_redirect_target_that_died() -> None:
    state = up_on_gw3_redirected_to(GW1, (GW1, GW2, GW3))
    state, _ = run(state, ev.TunnelDown(GW3, 6), now=T0 + 5)
    assert (state.phase, state.gateway) == (Phase.CONNECTING, GW2)


def test_with_two_gateways_it_goes_back_to_the_one_that_redirected() -> None:
    state = up_on_gw3_redirected_to(GW1, (GW1, GW3))
    state, _ = run(state, ev.TunnelDown(GW3, 6), now=T0 + 5)
    assert (state.phase, state.gateway) == (Phase.CONNECTING, GW3)


def test_a_target_not_next_in_the_list_changes_nothing() -> None:
    state = initial_state("home", (GW1, GW2, GW3), FailoverPolicy(max_cycles=0))
    state, _ = run(state, ev.Adopt(GW1, 4))
    state, _ = run(state, ev.Redirected(GW1, 4, GW3), ev.TunnelUp(GW1, 6), now=T0 + 1)
    state, _ = run(state, ev.TunnelDown(GW1, 6), now=T0 + 5)
    assert (state.phase, state.gateway) == (Phase.CONNECTING, GW2)


def test_a_target_outside_the_list_changes_nothing() -> None:
    state = up_on_gw3_redirected_to("10.0.0.9", (GW1, GW2, GW3))
    state, _ = run(state, ev.TunnelDown(GW3, 6), now=T0 + 5)
    assert (state.phase, state.gateway) == (Phase.CONNECTING, GW1)


def test_the_dying_redirected_ike_sa_is_no_news_for_the_attempt_under_its_clone() -> None:
    """Chaos seed 2607 (01:20:58): segw1 had redirected both connections to segw3, segw3 was
    cut, the failover went on after segw3, to segw1 under the same clone; the old IKE_SA's
    ike-updown down a millisecond later was read as that attempt failing (`failover-started
    10.99.1.2 -> 10.99.2.2 (reason ike-down)`), and the attempt's CHILD_SA on segw1 came up
    beside segw2's: two installed CHILD_SAs per connection for 13 and 16 s. With two gateways
    the failover still goes back under the clone of the one that redirected."""
    policy = FailoverPolicy(max_cycles=0, dead_after_retransmits=1)
    state = initial_state("home", (GW1, GW3), policy)  # after GW1 is GW3, the target: GW1
    state, _ = run(state, ev.Adopt(GW1, 1))
    state, _ = run(state, ev.Redirected(GW1, 1, GW3), ev.TunnelUp(GW1, 2), now=T0 + 1)
    assert state.peer == GW3
    state, _ = run(state, ev.RetransmitSeen(GW1, 2), now=T0 + 5)
    assert (state.phase, state.gateway) == (Phase.CONNECTING, GW1)
    assert run(state, ev.TunnelDown(GW1, 2, "ike-down"), now=T0 + 5.01) == (state, [])
    state, _ = run(state, ev.IkeConnecting(GW1, 7), ev.TunnelUp(GW1, 7, GW1), now=T0 + 5.1)
    assert (state.phase, state.gateway, state.ike_id, state.peer) == (Phase.UP, GW1, 7, GW1)
