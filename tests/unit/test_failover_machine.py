"""The pure failover machine: `step(state, event, now) -> (state, actions)`.

Table-driven in the spirit of h11's state tests: each row is a setup (reached by
replaying events, never by building states by hand unless a row says so), one event,
and the phase, gateway and actions expected.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from extsock_py.domain.failover import ConnState, Kept, Phase, initial_state, step, wake_at
from extsock_py.domain.notices import NoticeKind
from extsock_py.domain.policy import BackoffPolicy, FailbackPolicy, FailoverPolicy, backoff_delay

GW1, GW2, GW3 = "10.0.0.1", "10.0.0.2", "10.0.0.3"
V6 = ("2001:db8::1", "2001:db8::2", "2001:db8::3")
T0 = 100.0


def policy(**overrides: object) -> FailoverPolicy:
    return replace(FailoverPolicy(), **overrides)  # type: ignore[arg-type]


def fresh(gateways: Sequence[str] = (GW1, GW2), **overrides: object) -> ConnState:
    return initial_state("home", tuple(gateways), policy(**overrides))


def run(state: ConnState, *events: ev.Event, now: float = T0) -> tuple[ConnState, list[Action]]:
    """Apply events at the same instant; return the last state and all actions."""
    actions: list[Action] = []
    for event in events:
        state, more = step(state, event, now)
        actions += more
    return state, actions


def last(state: ConnState, *events: ev.Event, now: float = T0) -> ConnState:
    return run(state, *events, now=now)[0]


# --- setups: states reached by replaying events ----------------------------------------------


def s_idle() -> ConnState:
    return fresh()


def s_connecting_gw1() -> ConnState:
    return last(fresh(), ev.Start(), ev.IkeConnecting(GW1, 1))


def s_up_gw1() -> ConnState:
    return last(s_connecting_gw1(), ev.TunnelUp(GW1, 1))


def s_connecting_gw2() -> ConnState:
    return last(s_up_gw1(), ev.TunnelDown(GW1, 1), ev.IkeConnecting(GW2, 2))


def s_up_gw2() -> ConnState:
    return last(s_connecting_gw2(), ev.TunnelUp(GW2, 2))


def s_backoff() -> ConnState:
    return last(s_connecting_gw1(), ev.InitiateFailed(GW1, "x"), ev.InitiateFailed(GW2, "x"))


def s_gave_up() -> ConnState:
    state = last(fresh(max_cycles=1), ev.Start())
    return last(state, ev.InitiateFailed(GW1, "x"), ev.InitiateFailed(GW2, "x"))


def s_stopped() -> ConnState:
    return last(s_up_gw1(), ev.Stop())


def s_held_up() -> ConnState:
    return last(s_up_gw1(), ev.Hold())


def s_held_down() -> ConnState:
    return last(s_held_up(), ev.TunnelDown(GW1, 1))


SETUPS: dict[str, Callable[[], ConnState]] = {
    "idle": s_idle,
    "connecting-gw1": s_connecting_gw1,
    "up-gw1": s_up_gw1,
    "connecting-gw2": s_connecting_gw2,
    "up-gw2": s_up_gw2,
    "backoff": s_backoff,
    "gave-up": s_gave_up,
    "stopped": s_stopped,
    "held-up": s_held_up,
    "held-down": s_held_down,
}


def test_setups_reach_their_phases() -> None:
    expected = {
        "idle": (Phase.IDLE, None),
        "connecting-gw1": (Phase.CONNECTING, GW1),
        "up-gw1": (Phase.UP, GW1),
        "connecting-gw2": (Phase.CONNECTING, GW2),
        "up-gw2": (Phase.UP, GW2),
        "backoff": (Phase.BACKOFF, GW2),
        "gave-up": (Phase.GAVE_UP, GW2),
        "stopped": (Phase.STOPPED, GW1),
        "held-up": (Phase.UP, GW1),
        "held-down": (Phase.DOWN, GW1),
    }
    for name, setup in SETUPS.items():
        state = setup()
        assert (state.phase, state.gateway) == expected[name], name


def started(gw: str, frm: str, reason: str) -> Notify:
    return Notify(NoticeKind.FAILOVER_STARTED, gateway=gw, from_gateway=frm, reason=reason)


ROWS: list[tuple[str, ev.Event, Phase, str | None, list[Action]]] = [
    # starting
    ("idle", ev.Start(), Phase.CONNECTING, GW1, [LoadClone(GW1), Initiate(GW1)]),
    ("up-gw1", ev.Start(), Phase.UP, GW1, []),
    ("connecting-gw1", ev.Start(), Phase.CONNECTING, GW1, []),
    ("stopped", ev.Start(), Phase.CONNECTING, GW1, [LoadClone(GW1), Initiate(GW1)]),
    ("gave-up", ev.Start(), Phase.CONNECTING, GW1, [LoadClone(GW1), Initiate(GW1)]),
    # the tunnel comes up
    (
        "connecting-gw1",
        ev.TunnelUp(GW1, 1),
        Phase.UP,
        GW1,
        [Notify(NoticeKind.TUNNEL_UP, gateway=GW1)],
    ),
    ("idle", ev.TunnelUp(GW1, 1), Phase.IDLE, None, []),
    # an ike-down needs no terminate: the SA is gone already
    (
        "up-gw1",
        ev.TunnelDown(GW1, 1),
        Phase.CONNECTING,
        GW2,
        [
            Notify(NoticeKind.TUNNEL_DOWN, gateway=GW1, reason="ike-down"),
            started(GW2, GW1, "ike-down"),
            LoadClone(GW2),
            Initiate(GW2),
            UnloadClone(GW1),
        ],
    ),
    # a child-down leaves an IKE_SA behind: it is terminated
    (
        "up-gw1",
        ev.TunnelDown(GW1, 1, "child-down"),
        Phase.CONNECTING,
        GW2,
        [
            Terminate(GW1, 1, child_only=True),
            Notify(NoticeKind.TUNNEL_DOWN, gateway=GW1, reason="child-down"),
            started(GW2, GW1, "child-down"),
            LoadClone(GW2),
            Initiate(GW2),
            UnloadClone(GW1),
        ],
    ),
    # no route left (MOBIKE deferred): the stale IKE_SA lingers in charon, so it is terminated
    (
        "up-gw1",
        ev.TunnelDown(GW1, 1, "no-route"),
        Phase.CONNECTING,
        GW2,
        [
            Terminate(GW1, 1),
            Notify(NoticeKind.TUNNEL_DOWN, gateway=GW1, reason="no-route"),
            started(GW2, GW1, "no-route"),
            LoadClone(GW2),
            Initiate(GW2),
            UnloadClone(GW1),
        ],
    ),
    (
        "up-gw1",
        ev.RetransmitSeen(GW1, 1),
        Phase.CONNECTING,
        GW2,
        [
            Terminate(GW1, 1),
            Notify(NoticeKind.TUNNEL_DOWN, gateway=GW1, reason="retransmit"),
            started(GW2, GW1, "retransmit"),
            LoadClone(GW2),
            Initiate(GW2),
            UnloadClone(GW1),
        ],
    ),
    (
        "up-gw1",
        ev.MonitorDead(GW1),
        Phase.CONNECTING,
        GW2,
        [
            Terminate(GW1, 1, child_only=True),
            Notify(NoticeKind.TUNNEL_DOWN, gateway=GW1, reason="monitor"),
            started(GW2, GW1, "monitor"),
            LoadClone(GW2),
            Initiate(GW2),
            UnloadClone(GW1),
        ],
    ),
    (
        "connecting-gw1",
        ev.InitiateFailed(GW1, "refused", 1),
        Phase.CONNECTING,
        GW2,
        [
            Terminate(GW1, 1),
            started(GW2, GW1, "initiate-failed"),
            LoadClone(GW2),
            Initiate(GW2),
            UnloadClone(GW1),
        ],
    ),
    (
        "connecting-gw2",
        ev.InitiateFailed(GW2, "refused", 2),
        Phase.BACKOFF,
        GW2,
        [Terminate(GW2, 2)],
    ),
    # stale events: another gateway, another IKE_SA, the wrong phase
    ("up-gw1", ev.TunnelDown(GW2, 1), Phase.UP, GW1, []),
    ("up-gw1", ev.TunnelDown(GW1, 99), Phase.UP, GW1, []),
    ("up-gw1", ev.RetransmitSeen(GW2, 1), Phase.UP, GW1, []),
    ("up-gw1", ev.RetransmitSeen(GW1, 99), Phase.UP, GW1, []),
    ("up-gw1", ev.MonitorDead(GW2), Phase.UP, GW1, []),
    ("up-gw1", ev.InitiateFailed(GW1, "late", 1), Phase.UP, GW1, []),
    ("up-gw1", ev.TunnelUp(GW2, 7), Phase.UP, GW1, []),
    ("up-gw2", ev.TunnelDown(GW1, 1), Phase.UP, GW2, []),
    ("connecting-gw1", ev.InitiateFailed(GW2, "x"), Phase.CONNECTING, GW1, []),
    ("connecting-gw1", ev.InitiateFailed(GW1, "x", 99), Phase.CONNECTING, GW1, []),
    ("connecting-gw1", ev.TunnelUp(GW1, 99), Phase.CONNECTING, GW1, []),
    ("connecting-gw2", ev.TunnelDown(GW1, 1), Phase.CONNECTING, GW2, []),
    ("backoff", ev.TunnelDown(GW2, 2), Phase.BACKOFF, GW2, []),
    ("stopped", ev.TunnelDown(GW1, 1), Phase.STOPPED, GW1, []),
    ("gave-up", ev.InitiateFailed(GW2, "x"), Phase.GAVE_UP, GW2, []),
    ("up-gw1", ev.PeerAnswered(GW1, 1), Phase.UP, GW1, []),
    ("up-gw1", ev.IkeRekeyed(GW1, 1, 5), Phase.UP, GW1, []),
    ("up-gw1", ev.ProbeUp(GW1, 3), Phase.UP, GW1, []),
    ("up-gw1", ev.ProbeFailed(GW1), Phase.UP, GW1, []),
    ("connecting-gw1", ev.Tick(), Phase.CONNECTING, GW1, []),
    ("up-gw1", ev.Tick(), Phase.UP, GW1, []),
    # the operator: stop
    (
        "up-gw1",
        ev.Stop(),
        Phase.STOPPED,
        GW1,
        [
            Terminate(GW1, 1, child_only=True),
            UnloadClone(GW1),
            Notify(NoticeKind.TUNNEL_DOWN, gateway=GW1, reason="operator"),
        ],
    ),
    (
        "connecting-gw1",
        ev.Stop(),
        Phase.STOPPED,
        GW1,
        [Terminate(GW1, 1, child_only=True), UnloadClone(GW1)],
    ),
    ("backoff", ev.Stop(), Phase.STOPPED, GW2, [UnloadClone(GW2)]),
    ("held-down", ev.Stop(), Phase.STOPPED, GW1, [UnloadClone(GW1)]),
    ("gave-up", ev.Stop(), Phase.STOPPED, GW2, []),
    ("stopped", ev.Stop(), Phase.STOPPED, GW1, []),
    ("idle", ev.Stop(), Phase.STOPPED, None, []),
    # the operator: retry
    ("gave-up", ev.Retry(), Phase.CONNECTING, GW1, [LoadClone(GW1), Initiate(GW1)]),
    ("stopped", ev.Retry(), Phase.CONNECTING, GW1, [LoadClone(GW1), Initiate(GW1)]),
    (
        "backoff",
        ev.Retry(),
        Phase.CONNECTING,
        GW1,
        [LoadClone(GW1), Initiate(GW1), UnloadClone(GW2)],
    ),
    ("up-gw1", ev.Retry(), Phase.UP, GW1, []),
    ("connecting-gw1", ev.Retry(), Phase.CONNECTING, GW1, []),
    # the operator: switch. While up: make-before-break (the old clone stays).
    ("up-gw1", ev.Switch(GW2), Phase.UP, GW1, [LoadClone(GW2), Initiate(GW2)]),
    ("up-gw1", ev.Switch(), Phase.UP, GW1, [LoadClone(GW2), Initiate(GW2)]),
    ("up-gw1", ev.Switch(GW1), Phase.UP, GW1, []),
    ("up-gw1", ev.Switch("10.9.9.9"), Phase.UP, GW1, []),
    ("backoff", ev.Switch("10.9.9.9"), Phase.BACKOFF, GW2, []),
    # otherwise break-before-make
    (
        "connecting-gw1",
        ev.Switch(GW2),
        Phase.CONNECTING,
        GW2,
        [Terminate(GW1, 1, child_only=True), LoadClone(GW2), Initiate(GW2), UnloadClone(GW1)],
    ),
    (
        "backoff",
        ev.Switch(GW1),
        Phase.CONNECTING,
        GW1,
        [LoadClone(GW1), Initiate(GW1), UnloadClone(GW2)],
    ),
    ("gave-up", ev.Switch(GW2), Phase.CONNECTING, GW2, [LoadClone(GW2), Initiate(GW2)]),
    ("stopped", ev.Switch(GW2), Phase.CONNECTING, GW2, [LoadClone(GW2), Initiate(GW2)]),
    ("idle", ev.Switch(), Phase.CONNECTING, GW1, [LoadClone(GW1), Initiate(GW1)]),
    # the operator: hold and release
    ("up-gw1", ev.Hold(), Phase.UP, GW1, [Notify(NoticeKind.HELD, gateway=GW1)]),
    ("held-up", ev.Hold(), Phase.UP, GW1, []),
    ("backoff", ev.Hold(), Phase.DOWN, GW2, [Notify(NoticeKind.HELD, gateway=GW2)]),
    (
        "held-up",
        ev.TunnelDown(GW1, 1),
        Phase.DOWN,
        GW1,
        [Notify(NoticeKind.TUNNEL_DOWN, gateway=GW1, reason="ike-down")],
    ),
    ("held-up", ev.Release(), Phase.UP, GW1, [Notify(NoticeKind.RELEASED, gateway=GW1)]),
    ("up-gw1", ev.Release(), Phase.UP, GW1, []),
    (
        "held-down",
        ev.Release(),
        Phase.CONNECTING,
        GW2,
        [Notify(NoticeKind.RELEASED, gateway=GW1), LoadClone(GW2), Initiate(GW2), UnloadClone(GW1)],
    ),
    ("held-down", ev.Tick(), Phase.DOWN, GW1, []),
    ("held-down", ev.TunnelDown(GW1, 1), Phase.DOWN, GW1, []),
    # adopt
    (
        "idle",
        ev.Adopt(GW2, 7),
        Phase.UP,
        GW2,
        [Notify(NoticeKind.TUNNEL_UP, gateway=GW2, reason="adopted")],
    ),
    ("idle", ev.Adopt("10.9.9.9", 7), Phase.IDLE, None, []),
]


@pytest.mark.parametrize(
    ("setup", "event", "phase", "gateway", "actions"),
    ROWS,
    ids=[f"{r[0]}-{type(r[1]).__name__}-{i}" for i, r in enumerate(ROWS)],
)
def test_transition_table(
    setup: str, event: ev.Event, phase: Phase, gateway: str | None, actions: list[Action]
) -> None:
    before = SETUPS[setup]()
    after, done = step(before, event, T0)
    assert done == actions
    assert after.phase is phase
    assert after.gateway == gateway


@pytest.mark.parametrize(
    ("setup", "event"),
    [
        ("up-gw1", ev.TunnelDown(GW2, 1)),
        ("up-gw1", ev.TunnelDown(GW1, 99)),
        ("up-gw1", ev.RetransmitSeen(GW1, 99)),
        ("up-gw1", ev.PeerAnswered(GW2, 1)),
        ("up-gw1", ev.IkeRekeyed(GW2, 1, 5)),
        ("up-gw1", ev.IkeRekeyed(GW1, 99, 5)),
        ("up-gw2", ev.TunnelUp(GW1, 1)),
        ("connecting-gw2", ev.IkeConnecting(GW1, 8)),
        ("backoff", ev.IkeConnecting(GW2, 8)),
        ("stopped", ev.TunnelUp(GW1, 1)),
        ("gave-up", ev.RetransmitSeen(GW2, 2)),
        ("up-gw1", ev.ProbeUp(GW2, 3)),
    ],
)
def test_stale_events_change_nothing(setup: str, event: ev.Event) -> None:
    before = SETUPS[setup]()
    assert step(before, event, T0 + 1) == (before, [])


# --- the failover story, with time -------------------------------------------------------------


def test_failover_notices_carry_the_outage_duration() -> None:
    state = last(s_up_gw1(), ev.TunnelDown(GW1, 1), now=200.0)
    assert state.outage is not None and state.outage.since == 200.0
    state, actions = run(state, ev.IkeConnecting(GW2, 2), ev.TunnelUp(GW2, 2), now=201.5)
    assert actions == [
        Notify(NoticeKind.FAILOVER, gateway=GW2, from_gateway=GW1, reason="ike-down", duration=1.5),
        Notify(NoticeKind.TUNNEL_UP, gateway=GW2),
    ]
    assert (state.phase, state.gateway, state.ike_id) == (Phase.UP, GW2, 2)
    assert state.outage is None and state.attempt.failed_in_cycle == 0
    assert state.kept.failures_total == 1


def test_outage_spans_several_gateways() -> None:
    state = last(fresh((GW1, GW2, GW3)), ev.Start(), ev.IkeConnecting(GW1, 1), ev.TunnelUp(GW1, 1))
    state = last(state, ev.TunnelDown(GW1, 1), now=10.0)
    state, actions = run(state, ev.InitiateFailed(GW2, "x"), now=12.0)
    assert started(GW3, GW2, "initiate-failed") in actions
    state, actions = run(state, ev.TunnelUp(GW3, 4), now=13.0)
    assert actions[0] == Notify(
        NoticeKind.FAILOVER, gateway=GW3, from_gateway=GW1, reason="ike-down", duration=3.0
    )


@pytest.mark.parametrize(
    "gateways", [(GW1, GW2), (GW1, GW2, GW3), V6[:2], V6, ("gw1.example.net", "2001:db8::9")]
)
def test_cyclic_order_over_cycles(gateways: tuple[str, ...]) -> None:
    """Attempts go through the list in order; a failed cycle backs off, then starts over."""
    state, actions = run(fresh(gateways, max_cycles=0), ev.Start())
    attempted = [a.gateway for a in actions if isinstance(a, Initiate)]
    now = T0
    for _ in range(3 * len(gateways) - 1):
        assert state.gateway is not None
        state, actions = run(state, ev.InitiateFailed(state.gateway, "x"), now=now)
        if state.phase is Phase.BACKOFF:
            assert state.attempt.deadline is not None
            now = state.attempt.deadline
            state, actions = run(state, ev.Tick(), now=now)
        attempted += [a.gateway for a in actions if isinstance(a, Initiate)]
    assert attempted == list(gateways) * 3
    assert state.attempt.cycles_failed == 2


def test_a_gateway_missing_from_the_list_goes_on_with_the_primary() -> None:
    # e.g. a reload removed the address the connection was on
    s = s_backoff()
    state = replace(s, attempt=replace(s.attempt, gateway="10.9.9.9"))
    assert state.attempt.deadline is not None
    state, actions = run(state, ev.Tick(), now=state.attempt.deadline)
    assert actions == [LoadClone(GW1), Initiate(GW1), UnloadClone("10.9.9.9")]


def test_connect_timeout_fires_at_the_deadline_not_before() -> None:
    state = last(fresh(connect_timeout=5.0), ev.Start(), now=T0)
    assert state.attempt.deadline == T0 + 5.0 == wake_at(state)
    assert step(state, ev.Tick(), T0 + 4.999) == (state, [])
    state, actions = run(state, ev.Tick(), now=T0 + 5.0)
    assert actions == [
        Terminate(GW1, None),
        started(GW2, GW1, "connect-timeout"),
        LoadClone(GW2),
        Initiate(GW2),
        UnloadClone(GW1),
    ]
    assert state.attempt.deadline == T0 + 10.0


def test_ike_connecting_records_the_ike_id_used_by_the_timeout() -> None:
    state = last(fresh(), ev.Start(), ev.IkeConnecting(GW1, 42))
    assert state.ike_id == 42
    _, actions = run(state, ev.Tick(), now=T0 + 5)
    assert actions[0] == Terminate(GW1, 42)


@pytest.mark.parametrize(
    ("limit", "retransmits", "fails"),
    [(1, 1, True), (2, 1, False), (2, 2, True), (0, 1, False), (0, 20, False), (3, 2, False)],
)
def test_retransmit_counting(limit: int, retransmits: int, fails: bool) -> None:
    state = replace(s_up_gw1(), policy=policy(dead_after_retransmits=limit))
    state, actions = run(state, *[ev.RetransmitSeen(GW1, 1)] * retransmits)
    assert (state.gateway == GW2) is fails
    assert (Terminate(GW1, 1) in actions) is fails
    if not fails:
        assert state.attempt.retransmits == retransmits and actions == []


@pytest.mark.parametrize("retransmits", [1, 5])
def test_a_connect_is_left_to_its_timeout_whatever_it_retransmits(retransmits: int) -> None:
    """A gateway that answers a storm of connects late is slow, not dead: while connecting,
    retransmits change nothing; the connect timeout decides."""
    state = replace(SETUPS["connecting-gw1"](), policy=policy(dead_after_retransmits=1))
    state, actions = run(state, *[ev.RetransmitSeen(GW1, 1)] * retransmits)
    assert (state.phase, state.gateway, state.ike_id, actions) == (Phase.CONNECTING, GW1, 1, [])
    assert state.attempt.deadline is not None
    _, actions = run(state, ev.Tick(), now=state.attempt.deadline)
    assert actions[0] == Terminate(GW1, 1)
    assert LoadClone(GW2) in actions


def test_peer_answered_resets_the_retransmit_count() -> None:
    state = replace(s_up_gw1(), policy=policy(dead_after_retransmits=2))
    state = last(state, ev.RetransmitSeen(GW1, 1), ev.PeerAnswered(GW1, 1))
    assert state.attempt.retransmits == 0
    state = last(state, ev.RetransmitSeen(GW1, 1))
    assert (state.phase, state.gateway) == (Phase.UP, GW1)
    state = last(state, ev.RetransmitSeen(GW1, 1))
    assert (state.phase, state.gateway) == (Phase.CONNECTING, GW2)


def test_attempts_per_gateway_retries_the_same_gateway_without_reloading() -> None:
    state = last(fresh(attempts_per_gateway=3), ev.Start(), ev.IkeConnecting(GW1, 1))
    state, actions = run(state, ev.Tick(), now=T0 + 5)
    assert actions == [Terminate(GW1, 1), Initiate(GW1)]
    assert (state.phase, state.gateway, state.ike_id) == (Phase.CONNECTING, GW1, None)
    assert state.attempt.tries == 1
    state, actions = run(state, ev.InitiateFailed(GW1, "x"), now=T0 + 6)
    assert actions == [Terminate(GW1, None), Initiate(GW1)]
    state, actions = run(state, ev.InitiateFailed(GW1, "x"), now=T0 + 7)
    assert actions == [
        Terminate(GW1, None),
        started(GW2, GW1, "initiate-failed"),
        LoadClone(GW2),
        Initiate(GW2),
        UnloadClone(GW1),
    ]
    assert state.attempt.tries == 0 and state.attempt.failed_in_cycle == 1


# --- backoff and giving up --------------------------------------------------------------------


def fail_cycle(state: ConnState, now: float) -> tuple[ConnState, list[Action]]:
    """Fail every gateway of a cycle at `now` (after expiring a backoff if one is pending)."""
    actions: list[Action] = []
    if state.phase is Phase.BACKOFF:
        state, actions = run(state, ev.Tick(), now=now)
    for _ in state.gateways:
        assert state.gateway is not None
        state, more = run(state, ev.InitiateFailed(state.gateway, "x"), now=now)
        actions += more
    return state, actions


BACKOFF = BackoffPolicy(initial=1.0, maximum=60.0, multiplier=2.0, jitter=0.2)
# cycle n: (initial * multiplier**(n-1), capped)
BACKOFF_ROWS = [(n, min(60.0, 2.0 ** (n - 1))) for n in range(1, 11)]


@pytest.mark.parametrize(("cycle", "base"), BACKOFF_ROWS)
def test_backoff_delay_grows_and_is_capped(cycle: int, base: float) -> None:
    state, _ = run(fresh(max_cycles=0, backoff=BACKOFF), ev.Start())
    now = T0
    for _ in range(cycle):
        state, _ = fail_cycle(state, now)
        assert state.phase is Phase.BACKOFF and state.attempt.deadline is not None
        delay = state.attempt.deadline - now
        now = state.attempt.deadline
    assert state.attempt.cycles_failed == cycle
    assert base <= delay <= base * (1 + BACKOFF.jitter)
    assert delay == pytest.approx(backoff_delay(BACKOFF, cycle, "home"))


def test_backoff_expiry_attempts_the_next_gateway() -> None:
    state = s_backoff()
    assert state.attempt.deadline is not None and wake_at(state) == state.attempt.deadline
    assert step(state, ev.Tick(), state.attempt.deadline - 0.001) == (state, [])
    state, actions = run(state, ev.Tick(), now=state.attempt.deadline)
    assert actions == [LoadClone(GW1), Initiate(GW1), UnloadClone(GW2)]
    assert state.phase is Phase.CONNECTING and state.attempt.cycles_failed == 1


def test_max_cycles_gives_up_then_retry_starts_from_the_primary() -> None:
    state, _ = run(fresh(max_cycles=2), ev.Start())
    state, actions = fail_cycle(state, T0)
    assert state.phase is Phase.BACKOFF
    assert state.attempt.deadline is not None
    state, actions = fail_cycle(state, state.attempt.deadline)
    assert state.phase is Phase.GAVE_UP
    assert actions[-2:] == [
        UnloadClone(GW2),
        Notify(NoticeKind.GAVE_UP, gateway=GW2, reason="initiate-failed"),
    ]
    assert wake_at(state) is None
    assert step(state, ev.Tick(), 10_000.0) == (state, [])
    state, actions = run(state, ev.Retry(), now=10_000.0)
    assert actions == [LoadClone(GW1), Initiate(GW1)]
    assert state.attempt.cycles_failed == 0 and state.attempt.failed_in_cycle == 0


def test_max_cycles_zero_never_gives_up() -> None:
    state, _ = run(fresh((GW1, GW2, GW3), max_cycles=0), ev.Start())
    now = T0
    for cycle in range(1, 51):
        state, _ = fail_cycle(state, now)
        assert state.phase is Phase.BACKOFF, cycle
        assert state.attempt.deadline is not None
        now = state.attempt.deadline
    assert state.attempt.cycles_failed == 50


# --- hold ---------------------------------------------------------------------------------------


def test_held_failures_are_recorded_without_moving() -> None:
    state = last(s_connecting_gw1(), ev.Hold())
    assert state.attempt.deadline == T0 + 5.0  # the attempt under way still times out
    state, actions = run(state, ev.Tick(), now=T0 + 5)
    assert actions == [Terminate(GW1, 1)]
    assert (state.phase, state.gateway, state.kept.failures_total) == (Phase.DOWN, GW1, 1)
    assert wake_at(state) is None
    state, actions = run(state, ev.Release(), now=T0 + 50)
    assert actions == [
        Notify(NoticeKind.RELEASED, gateway=GW1),
        LoadClone(GW2),
        Initiate(GW2),
        UnloadClone(GW1),
    ]
    assert state.phase is Phase.CONNECTING and not state.kept.held


def test_release_gives_the_next_gateway_all_its_attempts() -> None:
    state = last(fresh(attempts_per_gateway=2), ev.Start(), ev.IkeConnecting(GW1, 1), ev.Hold())
    state = last(state, ev.InitiateFailed(GW1, "x"), ev.Release())
    assert (state.phase, state.gateway) == (Phase.CONNECTING, GW2)
    state, actions = run(state, ev.InitiateFailed(GW2, "x"))
    assert actions == [Terminate(GW2, None), Initiate(GW2)]  # GW2's second attempt


def test_hold_during_backoff_cancels_the_deadline() -> None:
    state = last(s_backoff(), ev.Hold())
    assert (state.phase, state.attempt.deadline, wake_at(state)) == (Phase.DOWN, None, None)


# --- stop --------------------------------------------------------------------------------------


def test_stop_is_not_a_failure_and_start_brings_it_back() -> None:
    state, actions = run(s_up_gw2(), ev.Stop())
    assert actions == [
        Terminate(GW2, 2, child_only=True),
        UnloadClone(GW2),
        Notify(NoticeKind.TUNNEL_DOWN, gateway=GW2, reason="operator"),
    ]
    failures = state.kept.failures_total
    for late in (ev.TunnelDown(GW2, 2), ev.TunnelDown(GW2, 2, "child-down"), ev.Tick()):
        state, actions = run(state, late, now=T0 + 100)
        assert actions == [] and state.phase is Phase.STOPPED
    assert state.kept.failures_total == failures
    state, actions = run(state, ev.Start(), now=T0 + 200)
    assert actions == [LoadClone(GW1), Initiate(GW1)]


# --- make-before-break ----------------------------------------------------------------------------


def test_operator_switch_while_up_is_make_before_break() -> None:
    state = last(s_up_gw1(), ev.Switch(GW2), now=200.0)
    assert state.switch is not None and state.switch.reason == "operator"
    assert (state.phase, state.gateway, state.ike_id) == (Phase.UP, GW1, 1)
    state = last(state, ev.IkeConnecting(GW2, 2), now=200.1)
    assert state.switch is not None and state.switch.ike_id == 2
    assert state.ike_id == 1
    assert step(state, ev.Switch(GW1), 200.2) == (state, [])  # one switch at a time
    state, actions = run(state, ev.TunnelUp(GW2, 2), now=200.5)
    # the old tunnel stays for the drain (switch_drain, 1 s by default)
    assert actions == [
        Notify(NoticeKind.FAILOVER, gateway=GW2, from_gateway=GW1, reason="operator", duration=0.5),
        Notify(NoticeKind.TUNNEL_UP, gateway=GW2),
    ]
    assert (state.phase, state.gateway, state.ike_id, state.switch) == (Phase.UP, GW2, 2, None)
    assert wake_at(state) == 201.5
    assert step(state, ev.Tick(), 201.4) == (state, [])
    state, actions = run(state, ev.Tick(), now=201.5)
    assert actions == [Terminate(GW1, 1, child_only=True), UnloadClone(GW1)]
    assert (state.drain, wake_at(state)) == (None, None)
    # the old SA going away afterwards is no failure
    assert step(state, ev.TunnelDown(GW1, 1), 201.6)[1] == []


def test_without_a_drain_the_old_tunnel_goes_at_once() -> None:
    """switch_drain = 0: the old tunnel goes as the new one is up (before issue 18)."""
    state = replace(s_up_gw1(), policy=policy(switch_drain=0.0))
    state = last(state, ev.Switch(GW2), ev.IkeConnecting(GW2, 2), now=200.0)
    state, actions = run(state, ev.TunnelUp(GW2, 2), now=200.5)
    assert actions == [
        Terminate(GW1, 1, child_only=True),
        UnloadClone(GW1),
        Notify(NoticeKind.FAILOVER, gateway=GW2, from_gateway=GW1, reason="operator", duration=0.5),
        Notify(NoticeKind.TUNNEL_UP, gateway=GW2),
    ]
    assert (state.drain, wake_at(state)) == (None, None)


def s_draining_gw1() -> ConnState:
    """Switched from GW1 to GW2 at T0; the tunnel through GW1 drains until T0 + 1."""
    state = last(s_up_gw1(), ev.Switch(GW2), ev.IkeConnecting(GW2, 2), ev.TunnelUp(GW2, 2))
    assert state.drain is not None and (state.drain.gateway, state.drain.ike_id) == (GW1, 1)
    return state


ENDS_DRAIN: list[Action] = [Terminate(GW1, 1, child_only=True), UnloadClone(GW1)]


@pytest.mark.parametrize(
    ("event", "first"),
    [
        # a failure of the new tunnel: the drained one goes with the failover
        (ev.TunnelDown(GW2, 2), ENDS_DRAIN),
        (ev.MonitorDead(GW2), ENDS_DRAIN),
        # another switch (back to the drained gateway too: unloaded before it is loaded)
        (ev.Switch(GW1), [*ENDS_DRAIN, LoadClone(GW1), Initiate(GW1)]),
        (ev.Switch(GW3), [*ENDS_DRAIN, LoadClone(GW3), Initiate(GW3)]),
        (ev.Stop(), ENDS_DRAIN),
    ],
)
def test_a_drain_ends_early_when_the_tunnel_moves_on(event: ev.Event, first: list[Action]) -> None:
    state = replace(s_draining_gw1(), gateways=(GW1, GW2, GW3))
    state, actions = run(state, event, now=T0 + 0.5)
    assert actions[: len(first)] == first
    assert actions.count(UnloadClone(GW1)) == 1
    assert state.drain is None


def test_the_drained_tunnel_dying_early_is_no_failure() -> None:
    state, actions = run(s_draining_gw1(), ev.TunnelDown(GW1, 1), now=T0 + 0.2)
    assert actions == [Terminate(GW1, 1, child_only=True), UnloadClone(GW1)]
    assert (state.phase, state.gateway, state.ike_id, state.drain) == (Phase.UP, GW2, 2, None)
    assert state.kept.failures_total == 0
    # its retransmits and the rest of its news are stale too
    assert step(state, ev.RetransmitSeen(GW1, 1), T0 + 0.3) == (state, [])


def test_news_of_a_drained_tunnel_does_not_touch_a_switch_back() -> None:
    """Switch back to GW1 while GW1's old tunnel drains: its late ike-down is not the
    new switch's failure."""
    state = last(s_draining_gw1(), ev.Switch(GW1), now=T0 + 0.5)
    assert state.switch is not None and state.switch.gateway == GW1
    assert step(state, ev.TunnelDown(GW1, 1), T0 + 0.6) == (state, [])
    state = last(state, ev.IkeConnecting(GW1, 3), ev.TunnelUp(GW1, 3), now=T0 + 0.7)
    assert (state.gateway, state.ike_id) == (GW1, 3)
    assert state.drain is not None and state.drain.gateway == GW2


def test_a_drained_ike_sa_rekeyed_is_ended_under_its_new_id() -> None:
    """An IKE rekey during the drain moves the drained tunnel into a new IKE_SA: the end of
    the drain terminates that one (it named the old id, gone, and the tunnel stayed)."""
    state = last(s_draining_gw1(), ev.IkeRekeyed(GW1, 1, 5), now=T0 + 0.5)
    assert state.drain is not None and state.drain.ike_id == 5
    assert (state.gateway, state.ike_id) == (GW2, 2)
    state, actions = run(state, ev.Tick(), now=T0 + 1.0)
    assert actions == [Terminate(GW1, 5, child_only=True), UnloadClone(GW1)]
    assert step(state, ev.TunnelDown(GW1, 5), T0 + 1.1) == (state, [])


def test_a_switch_back_takes_the_drained_ike_sa_when_its_child_sa_comes_up_there() -> None:
    """The drained IKE_SA lives on for another connection (reuse_ikesa) and charon puts the
    switch's CHILD_SA into it (issue 26): awaited there, it is the tunnel's IKE_SA again.
    Its news of going away meanwhile stays stale, and so does a CHILD_SA up in it that
    nothing awaits."""
    state = last(s_draining_gw1(), ev.Tick(), now=T0 + 1.0)  # the drain ended: #1 retired
    assert state.drain is None and 1 in state.redirects.retired
    assert step(state, ev.TunnelUp(GW1, 1), T0 + 1.5) == (state, [])  # nothing awaits it
    state = last(state, ev.Switch(GW1), now=T0 + 2.0)
    assert step(state, ev.TunnelDown(GW1, 1, "child-down"), T0 + 2.1) == (state, [])
    state, actions = run(state, ev.TunnelUp(GW1, 1), now=T0 + 2.2)
    assert (state.phase, state.gateway, state.ike_id, state.switch) == (Phase.UP, GW1, 1, None)
    assert Notify(NoticeKind.TUNNEL_UP, gateway=GW1) in actions
    assert 1 not in state.redirects.retired
    state, actions = run(state, ev.TunnelDown(GW1, 1, "child-down"), now=T0 + 3.0)
    assert state.phase is Phase.CONNECTING and Terminate(GW1, 1, child_only=True) in actions


def test_a_failover_takes_the_drained_ike_sa_when_its_child_sa_comes_up_there() -> None:
    state = last(s_draining_gw1(), ev.Tick(), now=T0 + 1.0)
    state = last(state, ev.TunnelDown(GW2, 2), now=T0 + 2.0)  # GW2 dies: back to GW1
    assert (state.phase, state.gateway, state.ike_id) == (Phase.CONNECTING, GW1, None)
    state = last(state, ev.TunnelUp(GW1, 1), now=T0 + 2.1)
    assert (state.phase, state.gateway, state.ike_id) == (Phase.UP, GW1, 1)


@pytest.mark.parametrize(
    ("event", "terminates"),
    [
        (ev.TunnelDown(GW2, 2), False),
        # the switch target's IKE_SA outlives these: it must not be left behind in charon
        (ev.TunnelDown(GW2, 2, "child-down"), True),
        (ev.TunnelDown(GW2, 2, "no-route"), True),
        (ev.InitiateFailed(GW2, "x", 2), True),
    ],
)
def test_a_failing_switch_is_aborted_and_the_tunnel_kept(event: ev.Event, terminates: bool) -> None:
    state = last(s_up_gw1(), ev.Switch(GW2), ev.IkeConnecting(GW2, 2))
    state, actions = run(state, event)
    expected: list[Action] = [Terminate(GW2, 2)] if terminates else []
    expected += [
        UnloadClone(GW2),
        Notify(NoticeKind.SWITCH_FAILED, gateway=GW2, from_gateway=GW1, reason="operator"),
    ]
    assert actions == expected
    assert (state.phase, state.gateway, state.ike_id, state.switch) == (Phase.UP, GW1, 1, None)


@pytest.mark.parametrize("limit", [0, 1, 3])
def test_a_switch_is_judged_by_its_deadline_not_by_retransmits(limit: int) -> None:
    state = last(s_up_gw1(), ev.Switch(GW2), ev.IkeConnecting(GW2, 2))
    state = replace(state, policy=policy(dead_after_retransmits=limit))
    assert step(state, ev.RetransmitSeen(GW2, 2), T0) == (state, [])
    # the late answer still completes the switch
    assert last(state, ev.RetransmitSeen(GW2, 2), ev.TunnelUp(GW2, 2)).gateway == GW2
    # and the deadline still ends a switch whose gateway never answers
    assert state.switch is not None
    late, actions = step(state, ev.Tick(), state.switch.deadline + 0.01)
    assert late.switch is None and (late.gateway, late.phase) == (GW1, Phase.UP)
    assert any(isinstance(a, Notify) and a.kind is NoticeKind.SWITCH_FAILED for a in actions)


def test_rekeyed_switch_target_keeps_being_tracked() -> None:
    state = last(s_up_gw1(), ev.Switch(GW2), ev.IkeConnecting(GW2, 2), ev.IkeRekeyed(GW2, 2, 3))
    assert state.switch is not None and state.switch.ike_id == 3
    assert step(state, ev.TunnelUp(GW2, 2), T0)[0].switch is not None  # old id: stale
    assert last(state, ev.TunnelUp(GW2, 3)).gateway == GW2


# --- failback -------------------------------------------------------------------------------

FAILBACK = FailbackPolicy(enabled=True, probe_interval=10.0, probe_timeout=5.0, hold_down=30.0)


def up_on_backup(now: float = T0) -> ConnState:
    state = last(fresh(failback=FAILBACK), ev.Start(), ev.IkeConnecting(GW1, 1), now=now)
    state = last(state, ev.InitiateFailed(GW1, "x"), ev.IkeConnecting(GW2, 2), now=now)
    return last(state, ev.TunnelUp(GW2, 2), now=now)


def test_no_failback_probe_on_the_primary_or_when_disabled() -> None:
    assert (
        last(fresh(failback=FAILBACK), ev.Start(), ev.TunnelUp(GW1, 1)).failback.next_probe_at
        is None
    )
    assert s_up_gw2().failback.next_probe_at is None
    assert wake_at(s_up_gw2()) is None


def test_failback_probes_then_switches_back_after_hold_down() -> None:
    state = up_on_backup()
    assert state.failback.next_probe_at == T0 + 10 == wake_at(state)
    assert step(state, ev.Tick(), T0 + 9.9) == (state, [])
    state, actions = run(state, ev.Tick(), now=T0 + 10)
    assert actions == [StartProbe(GW1)]
    assert state.failback.probe is not None and state.failback.probe.deadline == T0 + 15
    assert wake_at(state) == T0 + 15
    state, actions = run(state, ev.ProbeUp(GW1, 9), now=T0 + 11)
    assert actions == [StopProbe(GW1, 9)]
    assert state.failback.healthy_since == T0 + 11 and state.failback.probe is None
    assert state.failback.next_probe_at == T0 + 21
    now = T0 + 11
    while True:
        assert state.failback.next_probe_at is not None
        now = state.failback.next_probe_at
        state, actions = run(state, ev.Tick(), now=now)
        assert actions == [StartProbe(GW1)]
        state, actions = run(state, ev.ProbeUp(GW1, 9), now=now + 1)
        if state.switch is not None:
            break
        assert actions == [StopProbe(GW1, 9)]
    assert now + 1 - (T0 + 11) >= 30
    assert actions == [StopProbe(GW1, 9), LoadClone(GW1), Initiate(GW1)]
    assert state.switch.reason == "failback"
    assert (state.phase, state.gateway) == (Phase.UP, GW2)
    state, actions = run(state, ev.TunnelUp(GW1, 20), now=now + 2)
    assert actions == [
        Notify(NoticeKind.FAILOVER, gateway=GW1, from_gateway=GW2, reason="failback", duration=1.0),
        Notify(NoticeKind.TUNNEL_UP, gateway=GW1),
    ]
    assert (state.gateway, state.failback.next_probe_at, state.failback.healthy_since) == (
        GW1,
        None,
        None,
    )
    assert wake_at(state) == now + 3  # the end of the drain, then nothing
    state, actions = run(state, ev.Tick(), now=now + 3)
    assert actions == [Terminate(GW2, 2, child_only=True), UnloadClone(GW2)]
    assert wake_at(state) is None


@pytest.mark.parametrize("how", ["probe-failed", "probe-deadline"])
def test_a_failed_probe_resets_the_hold_down(how: str) -> None:
    state = last(up_on_backup(), ev.Tick(), now=T0 + 10)
    state = last(state, ev.ProbeUp(GW1, 9), now=T0 + 11)
    state = last(state, ev.Tick(), now=T0 + 21)
    if how == "probe-failed":
        state, actions = run(state, ev.ProbeFailed(GW1, 10), now=T0 + 22)
        assert state.failback.next_probe_at == T0 + 32
    else:
        assert step(state, ev.Tick(), T0 + 25.9)[1] == []
        state, actions = run(state, ev.Tick(), now=T0 + 26)
        assert state.failback.next_probe_at == T0 + 36
    assert actions == [StopProbe(GW1, None)]
    assert (state.failback.probe, state.failback.healthy_since) == (None, None)


def test_switch_timeout_aborts_and_stays_on_the_backup() -> None:
    state = replace(up_on_backup(), policy=policy(failback=replace(FAILBACK, hold_down=0.0)))
    state = last(state, ev.Tick(), now=T0 + 10)
    state, actions = run(state, ev.ProbeUp(GW1, 9), now=T0 + 11)
    assert state.switch is not None and state.switch.deadline == T0 + 16
    assert wake_at(state) == T0 + 16
    state, actions = run(state, ev.Tick(), now=T0 + 16)
    assert actions == [
        Terminate(GW1, None),
        UnloadClone(GW1),
        Notify(NoticeKind.SWITCH_FAILED, gateway=GW1, from_gateway=GW2, reason="failback"),
    ]
    assert (state.phase, state.gateway, state.ike_id, state.switch) == (Phase.UP, GW2, 2, None)
    assert state.failback.next_probe_at == T0 + 26


def test_the_main_tunnel_failing_during_a_switch() -> None:
    state = replace(up_on_backup(), policy=policy(failback=replace(FAILBACK, hold_down=0.0)))
    state = last(state, ev.Tick(), now=T0 + 10)
    state = last(state, ev.ProbeUp(GW1, 9), ev.IkeConnecting(GW1, 10), now=T0 + 11)
    state, actions = run(state, ev.TunnelDown(GW2, 2), now=T0 + 12)
    assert actions == [
        Terminate(GW1, 10),
        UnloadClone(GW1),
        Notify(NoticeKind.SWITCH_FAILED, gateway=GW1, from_gateway=GW2, reason="failback"),
        Notify(NoticeKind.TUNNEL_DOWN, gateway=GW2, reason="ike-down"),
        started(GW1, GW2, "ike-down"),
        LoadClone(GW1),
        Initiate(GW1),
        UnloadClone(GW2),
    ]
    assert (state.phase, state.gateway, state.switch, state.failback.next_probe_at) == (
        Phase.CONNECTING,
        GW1,
        None,
        None,
    )


def test_operator_switch_stops_a_probe_in_flight() -> None:
    state = last(up_on_backup(), ev.Tick(), now=T0 + 10)
    assert state.failback.probe is not None
    state, actions = run(state, ev.Switch(GW1), now=T0 + 11)
    assert actions == [StopProbe(GW1, None), LoadClone(GW1), Initiate(GW1)]
    assert state.failback.probe is None


def test_a_probe_answering_during_a_switch_does_not_start_another_one() -> None:
    """3 gateways, up on GW2, probing GW1; the operator switches to GW3 meanwhile."""
    pol = policy(failback=replace(FAILBACK, hold_down=0.0))
    state = last(initial_state("home", (GW1, GW2, GW3), pol), ev.Adopt(GW2, 2))
    state = last(state, ev.Tick(), now=T0 + 10)
    assert state.failback.probe is not None
    state = last(state, ev.Switch(GW3), now=T0 + 11)
    state, actions = run(state, ev.ProbeUp(GW1, 9), now=T0 + 12)
    assert not any(isinstance(a, LoadClone) for a in actions)
    assert state.switch is not None and state.switch.gateway == GW3


def test_hold_stops_probing_and_release_resumes_it() -> None:
    state = last(up_on_backup(), ev.Tick(), now=T0 + 10)
    state, actions = run(state, ev.Hold(), now=T0 + 11)
    assert actions == [Notify(NoticeKind.HELD, gateway=GW2), StopProbe(GW1, None)]
    assert wake_at(state) is None
    state, actions = run(state, ev.Release(), now=T0 + 20)
    assert actions == [Notify(NoticeKind.RELEASED, gateway=GW2)]
    assert state.failback.next_probe_at == T0 + 30


def test_no_wakeups_while_held_on_a_backup() -> None:
    """A held connection that comes up on a backup must not schedule probes it won't send."""
    state = last(fresh(failback=FAILBACK), ev.Start(), ev.InitiateFailed(GW1, "x"), ev.Hold())
    state = last(state, ev.TunnelUp(GW2, 2), now=T0 + 1)
    assert (state.phase, state.gateway, state.kept.held) == (Phase.UP, GW2, True)
    assert wake_at(state) is None  # was: a probe time in the past that no Tick clears
    assert last(state, ev.Release(), now=T0 + 2).failback.next_probe_at == T0 + 12


# --- rekey, adopt, wake_at ---------------------------------------------------------------------


def test_ike_rekeyed_keeps_tracking_the_new_id() -> None:
    state = last(s_up_gw1(), ev.RetransmitSeen(GW1, 1))
    state = replace(s_up_gw1(), attempt=replace(s_up_gw1().attempt, retransmits=0))
    state = last(state, ev.IkeRekeyed(GW1, 1, 5))
    assert state.ike_id == 5
    assert step(state, ev.TunnelDown(GW1, 1), T0) == (state, [])
    state, actions = run(state, ev.TunnelDown(GW1, 5, "child-down"))
    assert actions[0] == Terminate(GW1, 5, child_only=True)
    assert state.gateway == GW2


def test_adopt_counts_as_up_and_schedules_failback() -> None:
    state, actions = run(fresh(failback=FAILBACK), ev.Adopt(GW2, 7))
    assert actions == [Notify(NoticeKind.TUNNEL_UP, gateway=GW2, reason="adopted")]
    assert (state.phase, state.ike_id, state.failback.next_probe_at) == (Phase.UP, 7, T0 + 10)
    state, actions = run(state, ev.TunnelDown(GW2, 7))
    assert state.gateway == GW1 and UnloadClone(GW2) in actions


def test_wake_at_is_the_earliest_pending_time() -> None:
    assert wake_at(fresh()) is None
    assert wake_at(s_up_gw1()) is None
    assert wake_at(s_connecting_gw1()) == T0 + 5
    assert wake_at(s_gave_up()) is None
    assert wake_at(s_stopped()) is None
    state = up_on_backup()
    state = replace(state, failback=replace(state.failback, next_probe_at=50.0))
    assert wake_at(state) == 50.0
    state = last(up_on_backup(), ev.Switch(GW1), now=T0 + 1)
    assert state.switch is not None
    assert wake_at(state) == T0 + 6  # the switch deadline; no probe while switching


def test_initial_state_needs_a_gateway() -> None:
    with pytest.raises(ValueError):
        initial_state("home", (), FailoverPolicy())


def test_unknown_events_are_ignored() -> None:
    state = s_up_gw1()
    assert step(state, "nonsense", T0) == (state, [])  # type: ignore[arg-type]


# --- invariants over random event sequences -------------------------------------------------------

GATEWAY_SETS = [(GW1, GW2), (GW1, GW2, GW3), V6[:2]]


# One strategy per gateway set, built once: building ~20 strategies for every example was
# most of what an example cost; the same strategy draws the same events.
@functools.cache
def _events(gateways: tuple[str, ...]) -> st.SearchStrategy[ev.Event]:
    gw = st.sampled_from((*gateways, "192.0.2.99"))
    ike = st.integers(min_value=1, max_value=4)
    return st.one_of(
        st.just(ev.Start()),
        st.builds(ev.Adopt, gw, ike),
        st.builds(ev.IkeConnecting, gw, ike),
        st.builds(ev.TunnelUp, gw, ike),
        st.builds(ev.IkeRekeyed, gw, ike, ike),
        st.builds(ev.TunnelDown, gw, ike, st.sampled_from(["ike-down", "child-down"])),
        st.builds(ev.InitiateFailed, gw, st.just("x"), st.none() | ike),
        st.builds(ev.RetransmitSeen, gw, ike),
        st.builds(ev.PeerAnswered, gw, ike),
        st.builds(ev.MonitorDead, gw),
        st.builds(ev.ProbeUp, gw, ike),
        st.builds(ev.ProbeFailed, gw, st.none() | ike),
        st.just(ev.Tick()),
        st.builds(ev.Switch, st.none() | gw),
        st.just(ev.Hold()),
        st.just(ev.Release()),
        st.just(ev.Stop()),
        st.just(ev.Retry()),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ConnState, list[tuple[float | None, ev.Event]]]:
    gateways = draw(st.sampled_from(GATEWAY_SETS))
    pol = FailoverPolicy(
        connect_timeout=draw(st.sampled_from([1.0, 5.0])),
        dead_after_retransmits=draw(st.integers(0, 2)),
        attempts_per_gateway=draw(st.integers(1, 2)),
        max_cycles=draw(st.integers(0, 2)),
        switch_drain=draw(st.sampled_from([0.0, 1.0])),
        backoff=BackoffPolicy(initial=1.0, maximum=8.0),
        failback=FailbackPolicy(
            enabled=draw(st.booleans()),
            probe_interval=2.0,
            probe_timeout=1.0,
            hold_down=draw(st.sampled_from([0.0, 3.0])),
        ),
    )
    # None as the time: jump to the state's wake_at (and deliver a Tick)
    steps = draw(
        st.lists(
            st.tuples(st.none() | st.floats(0.0, 4.0, allow_nan=False), _events(gateways)),
            max_size=40,
        )
    )
    if draw(st.booleans()):  # start in a finished switch, its old tunnel draining
        prefix: list[ev.Event] = [
            ev.Adopt(gateways[1], 1),
            ev.Switch(gateways[0]),
            ev.IkeConnecting(gateways[0], 2),
            ev.TunnelUp(gateways[0], 2),
        ]
        steps = [(0.0, e) for e in prefix] + steps
    return initial_state("home", gateways, pol), steps


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_invariants_over_random_sequences(
    scenario: tuple[ConnState, list[tuple[float | None, ev.Event]]],
) -> None:
    state, steps = scenario
    now = 0.0
    loaded: set[str] = set()
    for dt, event in steps:
        if dt is None:
            due = wake_at(state)
            event = ev.Tick()
            now = max(now, due) if due is not None else now + 1.0
        else:
            now += dt
        if isinstance(event, ev.Adopt):
            if state.phase is not Phase.IDLE or event.gateway not in state.gateways:
                continue  # resync adopts only connections that were just loaded
            loaded.add(event.gateway)  # charon had the clone loaded already
        state, actions = step(state, event, now)
        for action in actions:
            match action:
                case LoadClone(g):
                    loaded.add(g)
                case UnloadClone(g):
                    assert g in loaded, (action, actions)
                    loaded.discard(g)
                case Initiate(g):
                    assert g in loaded, (action, actions)
        expected: set[str] = set()
        if state.phase in (Phase.CONNECTING, Phase.UP, Phase.BACKOFF, Phase.DOWN):
            assert state.gateway is not None
            expected.add(state.gateway)
        if state.switch is not None:
            assert state.phase is Phase.UP
            expected.add(state.switch.gateway)
            assert state.switch.gateway != state.gateway
        if state.drain is not None:  # the tunnel a switch left, only while up elsewhere
            assert state.phase is Phase.UP
            assert state.drain.gateway not in (
                state.gateway,
                getattr(state.switch, "gateway", None),
            )
            expected.add(state.drain.gateway)
        assert loaded == expected, (state, event, actions)
        assert len(loaded) <= 1 + (state.switch is not None) + (state.drain is not None)
        if state.phase in (Phase.GAVE_UP, Phase.STOPPED, Phase.IDLE):
            assert not loaded
        assert not (state.failback.probe is not None and state.switch is not None)
        if isinstance(event, ev.Tick):
            due = wake_at(state)
            assert due is None or due > now, (state, actions)  # a Tick makes progress


def test_outage_counts_from_the_monitors_last_sign_of_life_to_tunnel_up() -> None:
    state = last(s_up_gw1(), ev.MonitorDead(GW1, silence=1.5), now=T0)
    state, actions = run(state, ev.TunnelUp(GW2, 2), now=T0 + 0.25)
    (failover,) = [a for a in actions if isinstance(a, Notify) and a.kind == "failover"]
    assert failover.duration == 0.25 and failover.outage == 1.75
    assert state.outage is None  # reset for the next outage


def test_outage_is_unknown_when_nothing_saw_the_traffic_stop() -> None:
    state = last(s_up_gw1(), ev.RetransmitSeen(GW1, 1), now=T0)
    _, actions = run(state, ev.TunnelUp(GW2, 2), now=T0 + 0.25)
    (failover,) = [a for a in actions if isinstance(a, Notify) and a.kind == "failover"]
    assert failover.duration == 0.25 and failover.outage is None


# --- bookkeeping events: charon restarted, a policy changed, a restore -----------------------
# The machine is the only writer of its state: these three came in from outside `step` before.


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_charon_restarted_starts_over_keeping_hold_and_failures(setup: str) -> None:
    before = last(SETUPS[setup](), ev.TunnelDown(GW1, 1))  # some failures to keep, if up
    after, actions = step(before, ev.CharonRestarted((GW2, GW3)), T0 + 5)
    assert actions == []
    expected = replace(
        initial_state("home", (GW2, GW3), before.policy),
        kept=before.kept,
    )
    assert after == expected
    assert wake_at(after) is None


def test_charon_restarted_keeps_what_it_must() -> None:
    held = last(s_held_down(), ev.TunnelDown(GW1, 1))
    assert held.kept.failures_total == 1
    after = last(held, ev.CharonRestarted((GW1, GW2)))
    assert (after.phase, after.gateway, after.kept.held, after.kept.failures_total) == (
        Phase.IDLE,
        None,
        True,
        1,
    )
    assert last(after, ev.Start()).phase is Phase.CONNECTING


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_policy_changed_only_changes_the_policy(setup: str) -> None:
    before = SETUPS[setup]()
    new = policy(connect_timeout=99.0, attempts_per_gateway=3)
    after, actions = step(before, ev.PolicyChanged(new), T0 + 1)
    assert (after, actions) == (replace(before, policy=new), [])


def test_policy_changed_rules_the_next_attempt() -> None:
    state = last(s_up_gw1(), ev.PolicyChanged(policy(connect_timeout=42.0)))
    state = last(state, ev.TunnelDown(GW1, 1), now=T0 + 10)
    assert (state.phase, state.gateway) == (Phase.CONNECTING, GW2)
    assert state.attempt.deadline == T0 + 10 + 42.0


RESTORE_ROWS: list[tuple[str, bool]] = [(name, name == "idle") for name in sorted(SETUPS)]


@pytest.mark.parametrize(("setup", "applies"), RESTORE_ROWS)
def test_restored_applies_only_while_idle(setup: str, applies: bool) -> None:
    before = SETUPS[setup]()
    after, actions = step(before, ev.Restored(held=True, failures_total=7), T0)
    assert actions == []
    if applies:
        assert after == replace(before, kept=Kept(held=True, failures_total=7))
    else:
        assert after == before


def test_restored_hold_keeps_a_start_from_moving_on_failure() -> None:
    state = last(s_idle(), ev.Restored(held=True, failures_total=3), ev.Start())
    state = last(state, ev.InitiateFailed(GW1, "x"))
    assert (state.phase, state.kept.held, state.kept.failures_total) == (Phase.DOWN, True, 4)
