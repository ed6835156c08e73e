"""A CHILD_SA that charon puts into a shared IKE_SA a redirect took elsewhere.

charon's reuse_ikesa matches a clone's config (`remote_addrs` the clone's gateway) to an
established IKE_SA with an equal config, whatever its remote host: an IKE_SA named after
segw3's clone but redirected to segw1 takes the next CHILD_SA towards segw3. Found by the
chaos run of issue 26 (seed 2605, 01:07:09): segw1 deleted upb's CHILD_SA, extsock failed upb
over "10.99.1.2 -> 10.99.3.2", and charon put the new CHILD_SA into `upa@10.99.3.2[5]`,
redirected to segw1 6 s before. extsock's status named segw3 while upb's traffic went on
through segw1; the run's link cut of "upb's gateway" segw3 then hit nothing. The tunnel
goes where its IKE_SA goes: the TunnelUp carries the IKE_SA's remote host.
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


def up_on(gateway: str) -> ConnState:
    state = initial_state("home", (GW1, GW2, GW3), FailoverPolicy(max_cycles=0))
    state, _ = run(state, ev.Adopt(gateway, 4))
    return state


def test_a_failover_into_an_ike_sa_redirected_elsewhere_is_up_where_that_one_goes() -> None:
    state, _ = run(up_on(GW1), ev.TunnelDown(GW1, 4, "child-down"), now=T0 + 1)
    assert (state.phase, state.gateway) == (Phase.CONNECTING, GW2)
    state, _ = run(state, ev.TunnelUp(GW2, 5, remote=GW1), now=T0 + 2)
    assert (state.phase, state.gateway, state.ike_id, state.peer) == (Phase.UP, GW2, 5, GW1)


def test_a_switch_into_an_ike_sa_redirected_elsewhere_is_up_where_that_one_goes() -> None:
    state, _ = run(up_on(GW1), ev.Switch(GW3), now=T0 + 1)
    state, _ = run(state, ev.TunnelUp(GW3, 5, remote=GW2), now=T0 + 2)
    assert (state.phase, state.gateway, state.peer) == (Phase.UP, GW3, GW2)


def test_a_tunnel_up_at_its_own_gateway_or_without_a_remote_is_where_the_clone_points() -> None:
    state, _ = run(up_on(GW1), ev.TunnelDown(GW1, 4, "child-down"), now=T0 + 1)
    for remote in (GW2, None):
        up, _ = run(state, ev.TunnelUp(GW2, 5, remote=remote), now=T0 + 2)
        assert (up.phase, up.peer) == (Phase.UP, GW2)


def test_an_ipv6_gateway_written_otherwise_is_the_same_host() -> None:
    state = initial_state("home", ("fd99:0001::2", "fd99:2::2"), FailoverPolicy(max_cycles=0))
    state, _ = run(state, ev.Adopt("fd99:0001::2", 4, remote="fd99:1::2"))
    assert state.peer == "fd99:0001::2"
    state, _ = run(state, ev.TunnelDown("fd99:0001::2", 4, "child-down"), now=T0 + 1)
    state, _ = run(state, ev.TunnelUp("fd99:2::2", 5, remote="fd99:2:0::2"), now=T0 + 2)
    assert (state.phase, state.peer) == (Phase.UP, "fd99:2::2")
