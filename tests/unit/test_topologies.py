"""Shared IKE_SAs, redirects and the per-IKE_SA state stream (issue 14), without a daemon:
the SA model, the failover machine, the event usecase and the manager wired as the daemon
wires them, fed with observations as charon 5.9.8 sends them (seen in the lab)."""

from __future__ import annotations

from typing import Any

from extsock_py.adapters.vici.dialects import choose
from extsock_py.domain import events as ev
from extsock_py.domain import observations as ob
from extsock_py.domain.actions import Action, Notify, Terminate
from extsock_py.domain.failover import ConnState, Outage, Phase, initial_state, step
from extsock_py.domain.notices import NoticeKind
from extsock_py.domain.policy import FailoverPolicy
from extsock_py.domain.profile import ConnectionProfile
from extsock_py.domain.sas import SaTable
from extsock_py.usecases.event_usecase import EventUsecase
from extsock_py.usecases.failover_manager import FailoverManager
from tests.fakes.ports import FakeCharonPort, FakeClock, RecordingPublisher

GW1, GW2, GW3 = "10.0.0.1", "10.0.0.2", "10.0.0.3"
T0 = 100.0


# --- the SA model ---------------------------------------------------------------------------


def test_sa_table_transitions_per_ike_sa_and_nothing_after_destroying() -> None:
    t = SaTable()
    assert [(x.old, x.new) for x in t.ike_state(1, "a@gw", "CONNECTING")] == [
        ("CREATED", "CONNECTING")
    ]
    assert t.ike_state(1, "a@gw", "CONNECTING") == []
    t.child_up(1, 11, "net", "a")
    t.child_up(1, 12, "net2", "b")
    assert t.connections_on(1) == ("a", "b")
    assert t.shared_with_others(1, "a") and t.children_of(1, "b") == (12,)
    [gone] = t.ike_gone(1)
    assert (gone.old, gone.new, gone.connections) == ("CONNECTING", "DESTROYING", ("a", "b"))
    assert t.ike_state(1, "a@gw", "ESTABLISHED") == [] and t.ike_gone(1) == []
    assert t.connections_on(1) == ("a", "b")  # news of its end may still come


def test_sa_table_sync_ends_what_list_sas_no_longer_has() -> None:
    t = SaTable()
    t.ike_state(1, "a@gw", "ESTABLISHED")
    t.ike_state(2, "a@gw", "ESTABLISHED")
    assert [(x.ike_id, x.new) for x in t.sync({2})] == [(1, "DESTROYING")]
    assert t.ids() == [2]


# --- the machine: redirects -----------------------------------------------------------------


def machine(gateways: tuple[str, ...] = (GW1, GW2)) -> ConnState:
    return initial_state("home", gateways, FailoverPolicy(connect_timeout=5.0))


def run(state: ConnState, *events: ev.Event, now: float = T0) -> tuple[ConnState, list[Action]]:
    actions: list[Action] = []
    for event in events:
        state, more = step(state, event, now)
        actions += more
    return state, actions


def test_a_redirect_of_an_established_sa_is_followed_without_a_failure() -> None:
    up, _ = run(machine(), ev.Start(), ev.IkeConnecting(GW1, 1), ev.TunnelUp(GW1, 1))
    s, actions = run(up, ev.Redirected(GW1, 1, GW3))
    assert actions == [] and s.phase is Phase.UP and s.redirects.pending is not None
    # charon sets the tunnel up at the target under a new IKE_SA, then deletes the old one.
    s, actions = run(s, ev.TunnelUp(GW1, 2), now=T0 + 0.5)
    assert actions == [
        Notify(
            NoticeKind.REDIRECTED, gateway=GW3, from_gateway=GW1, reason="redirect", duration=0.5
        )
    ]
    s, actions = run(s, ev.TunnelDown(GW1, 1, "child-down"), ev.TunnelDown(GW1, 1, "ike-down"))
    assert actions == [] and s.phase is Phase.UP
    assert (s.gateway, s.peer, s.ike_id, s.kept.failures_total) == (GW1, GW3, 2, 0)
    # The target dies later: the failover goes on with the configured list.
    s, actions = run(s, ev.RetransmitSeen(GW1, 2))
    assert Terminate(GW1, 2) in actions
    started = [a for a in actions if isinstance(a, Notify) and a.kind == "failover-started"]
    assert [(a.from_gateway, a.gateway) for a in started] == [(GW3, GW2)]
    assert s.peer == GW2 and s.redirects.remote is None


def test_a_redirect_at_ike_sa_init_keeps_the_same_ike_sa_and_counts_nothing() -> None:
    s, _ = run(machine(), ev.Start(), ev.IkeConnecting(GW1, 1))
    s, actions = run(s, ev.Redirected(GW1, 1, GW3), now=T0 + 1)
    assert actions == [] and s.phase is Phase.CONNECTING and s.attempt.deadline == T0 + 6
    s, _ = run(s, ev.IkeConnecting(GW1, 1), now=T0 + 1)  # charon starts it again there
    s, actions = run(s, ev.TunnelUp(GW1, 1), now=T0 + 1.1)
    kinds = [a.kind for a in actions if isinstance(a, Notify)]
    assert kinds == ["redirected", "tunnel-up"]
    assert (s.phase, s.peer, s.kept.failures_total) == (Phase.UP, GW3, 0)


def test_a_redirect_that_never_comes_up_fails_over_after_connect_timeout() -> None:
    up, _ = run(machine(), ev.Start(), ev.IkeConnecting(GW1, 1), ev.TunnelUp(GW1, 1))
    s, _ = run(up, ev.Redirected(GW1, 1, GW3))
    s, actions = run(s, ev.Tick(), now=T0 + 5.0)
    assert s.phase is Phase.CONNECTING and s.gateway == GW2
    assert Terminate(GW1, None) in actions  # both the old and the half-open new SA
    assert s.outage is not None and s.outage.reason == "redirect-failed"


def test_a_failover_a_redirect_completes_carries_the_outage() -> None:
    """The monitor declares segw1 dead after 1.5 s of silence; segw2 redirects the attempt
    to segw3, where the tunnel comes up: the FAILOVER notice counts the outage from the
    last sign of life, as it does when the attempt itself succeeds."""
    up, _ = run(machine(), ev.Start(), ev.IkeConnecting(GW1, 1), ev.TunnelUp(GW1, 1))
    s, _ = run(up, ev.MonitorDead(GW1, silence=1.5), now=T0 + 10.0)
    assert (s.phase, s.gateway) == (Phase.CONNECTING, GW2)
    s, _ = run(s, ev.IkeConnecting(GW2, 2), ev.Redirected(GW2, 2, GW3), now=T0 + 10.25)
    s, _ = run(s, ev.IkeConnecting(GW2, 2), now=T0 + 10.25)  # charon starts it again there
    s, actions = run(s, ev.TunnelUp(GW2, 2), now=T0 + 10.5)
    assert actions == [
        Notify(
            NoticeKind.REDIRECTED, gateway=GW3, from_gateway=GW2, reason="redirect", duration=0.25
        ),
        Notify(
            NoticeKind.FAILOVER,
            gateway=GW3,
            from_gateway=GW1,
            reason="monitor",
            duration=0.5,
            outage=2.0,
        ),
        Notify(NoticeKind.TUNNEL_UP, gateway=GW3, reason="redirect"),
    ]
    assert (s.phase, s.peer, s.outage) == (Phase.UP, GW3, None)


def test_the_outage_of_a_redirect_that_failed() -> None:
    """A redirect of the established tunnel that never comes up fails (redirect-failed):
    the outage runs from then to the tunnel up on the next gateway; nothing saw the
    traffic stop, so its `outage` (last sign of life to up) is unknown."""
    up, _ = run(machine(), ev.Start(), ev.IkeConnecting(GW1, 1), ev.TunnelUp(GW1, 1))
    s, _ = run(up, ev.Redirected(GW1, 1, GW3), now=T0 + 1.0)
    s, _ = run(s, ev.Tick(), now=T0 + 6.0)
    assert s.outage == Outage(since=T0 + 6.0, reason="redirect-failed", from_gateway=GW1)
    s, actions = run(s, ev.IkeConnecting(GW2, 3), ev.TunnelUp(GW2, 3), now=T0 + 6.75)
    assert actions[0] == Notify(
        NoticeKind.FAILOVER,
        gateway=GW2,
        from_gateway=GW1,
        reason="redirect-failed",
        duration=0.75,
        outage=None,
    )
    assert (s.phase, s.gateway, s.outage) == (Phase.UP, GW2, None)


def test_a_retransmit_of_the_redirects_new_ike_sa_is_no_failure() -> None:
    """Seen in the lab under load: charon sends the IKE_SA_INIT of the IKE_SA that follows
    a redirect before it can take the answer, which comes again on the retransmit 4 s
    later. That retransmit belongs to a connect, judged by the redirect's deadline; it says
    nothing about the established tunnel (dead_after_retransmits counts those)."""
    up, _ = run(machine(), ev.Start(), ev.IkeConnecting(GW1, 1), ev.TunnelUp(GW1, 1))
    s, _ = run(up, ev.Redirected(GW1, 1, GW3), now=T0 + 1.0)
    s, actions = run(s, ev.RetransmitSeen(GW1, 2), now=T0 + 5.0)
    assert actions == [] and s.phase is Phase.UP and s.redirects.pending is not None
    s, actions = run(s, ev.TunnelUp(GW1, 2), now=T0 + 5.01)
    assert [a.kind for a in actions if isinstance(a, Notify)] == ["redirected"]
    assert (s.phase, s.peer, s.ike_id, s.kept.failures_total) == (Phase.UP, GW3, 2, 0)
    # The old IKE_SA's news stays stale; the new one's retransmits count again once up.
    assert run(s, ev.RetransmitSeen(GW1, 1))[1] == []
    s, actions = run(s, ev.RetransmitSeen(GW1, 2))
    assert s.gateway == GW2 and Terminate(GW1, 2) in actions


def test_a_redirect_whose_target_stays_silent_fails_at_its_deadline() -> None:
    up, _ = run(machine(), ev.Start(), ev.IkeConnecting(GW1, 1), ev.TunnelUp(GW1, 1))
    s, _ = run(up, ev.Redirected(GW1, 1, GW3), now=T0 + 1.0)
    s, actions = run(s, ev.RetransmitSeen(GW1, 2), ev.Tick(), now=T0 + 5.9)
    assert actions == [] and s.phase is Phase.UP
    s, actions = run(s, ev.Tick(), now=T0 + 6.0)
    assert (s.phase, s.gateway) == (Phase.CONNECTING, GW2)
    assert s.outage is not None and s.outage.reason == "redirect-failed"


def test_a_redirect_charon_refuses_to_follow_leaves_the_tunnel_where_it_is() -> None:
    # charon logs "redirected to" and then, e.g. past 5 redirects in 300 s, stays.
    up, _ = run(machine(), ev.Start(), ev.IkeConnecting(GW1, 1), ev.TunnelUp(GW1, 1))
    s, _ = run(up, ev.Redirected(GW1, 1, GW3), ev.RedirectRefused(GW1, 1))
    assert s.redirects.pending is None and (s.phase, s.peer, s.ike_id) == (Phase.UP, GW1, 1)
    s, actions = run(s, ev.Tick(), now=T0 + 10.0)
    assert actions == [] and s.phase is Phase.UP
    s, actions = run(s, ev.RetransmitSeen(GW1, 1))  # its news counts again
    assert s.gateway == GW2


def test_a_child_failure_asks_for_the_child_only() -> None:
    up, _ = run(machine(), ev.Start(), ev.IkeConnecting(GW1, 1), ev.TunnelUp(GW1, 1))
    _, actions = run(up, ev.TunnelDown(GW1, 1, "child-down"))
    assert Terminate(GW1, 1, child_only=True) in actions
    _, actions = run(up, ev.RetransmitSeen(GW1, 1))
    assert Terminate(GW1, 1, child_only=False) in actions


# --- wired as the daemon wires them ---------------------------------------------------------


def body(child: str, gateways: tuple[str, ...]) -> dict[str, Any]:
    return {
        "remote_addrs": list(gateways),
        "local-1": {"auth": "psk"},
        "remote-1": {"auth": "psk"},
        "children": {child: {"local_ts": ["10.1.0.0/24"]}},
    }


class Wired:
    def __init__(self) -> None:
        self.charon = FakeCharonPort()
        self.clock = FakeClock()
        self.publisher = RecordingPublisher()
        self.manager = FailoverManager(self.charon, self.clock, self.publisher)
        self.events = EventUsecase(
            self.manager.is_managed,
            self.manager.handle,
            self.publisher,
            connections=self.manager,
            sas=self.manager.sas,
        )
        self.reader = choose("5.9.8").dialect.reader(alerts=False)
        for name, child in (("home", "net"), ("upb", "net2")):
            profile = ConnectionProfile(name, (GW1, GW2), body(child, (GW1, GW2)), FailoverPolicy())
            self.manager.manage(profile)
        self.manager.start_all()

    def observe(self, obs: ob.Observation) -> None:
        translated = self.reader.translate(obs)
        if translated is not None and EventUsecase.wants(translated):
            self.events.observe(translated)

    def state(self, name: str) -> ConnState:
        managed = self.manager.get(name)
        assert managed is not None
        return managed.state

    def shared_up(self) -> None:
        """As seen in the lab: home's IKE_SA #1 carries both CHILD_SAs (reuse_ikesa)."""
        sa = ob.IkeSaInfo("home@" + GW1, 1, "ESTABLISHED", remote_host=GW1)
        self.observe(ob.LogLine("IKE", 0, f"initiating IKE_SA home@{GW1}[1] to {GW1}", sa.name, 1))
        self.observe(ob.IkeUpdown(sa, True))
        self.observe(ob.ChildUpdown(sa, ob.ChildSaInfo("net", 1, "INSTALLED"), True))
        self.observe(ob.ChildUpdown(sa, ob.ChildSaInfo("net2", 2, "INSTALLED"), True))


def test_a_child_in_another_connections_ike_sa_brings_its_own_connection_up() -> None:
    w = Wired()
    w.shared_up()
    assert w.state("home").phase is Phase.UP and w.state("upb").phase is Phase.UP
    assert w.state("upb").ike_id == 1
    w.clock.advance(10.0)
    w.manager.tick()
    assert w.state("upb").phase is Phase.UP and w.state("upb").kept.failures_total == 0


def test_a_dead_gateway_moves_every_connection_in_its_ike_sa() -> None:
    w = Wired()
    w.shared_up()
    w.observe(ob.LogLine("IKE", 1, "retransmit 1 of request with message ID 7", f"home@{GW1}", 1))
    assert w.state("home").gateway == GW2 and w.state("upb").gateway == GW2
    assert w.state("home").phase is Phase.CONNECTING
    assert w.state("upb").phase is Phase.CONNECTING


def test_moving_one_connection_ends_its_child_not_the_shared_ike_sa() -> None:
    w = Wired()
    w.shared_up()
    w.manager.handle("upb", ev.Switch(GW2))
    w.observe(ob.ChildUpdown(ob.IkeSaInfo(f"upb@{GW2}", 5, "ESTABLISHED"),
                             ob.ChildSaInfo("net2", 6, "INSTALLED"), True))  # fmt: skip
    assert w.state("upb").gateway == GW2 and w.state("upb").phase is Phase.UP
    assert ("terminate-child", 2) not in w.charon.calls  # its old tunnel drains first
    w.clock.advance(w.state("upb").policy.switch_drain)
    w.manager.tick()
    assert ("terminate-child", 2) in w.charon.calls
    assert not [c for c in w.charon.calls if c[0] == "terminate" and c[2] == 1]
    # charon reports upb's old child gone from the shared IKE_SA: home stays up.
    shared = ob.IkeSaInfo(f"home@{GW1}", 1, "ESTABLISHED")
    w.observe(ob.ChildUpdown(shared, ob.ChildSaInfo("net2", 2, "DELETING"), False))
    assert w.state("home").phase is Phase.UP and w.state("home").ike_id == 1


def test_a_redirect_log_line_reaches_every_connection_in_the_ike_sa() -> None:
    w = Wired()
    w.shared_up()
    w.observe(ob.LogLine("IKE", 1, f"redirected to {GW3}", f"home@{GW1}", 1))
    assert (
        w.state("home").redirects.pending is not None
        and w.state("upb").redirects.pending is not None
    )
    new = ob.IkeSaInfo(f"home@{GW1}", 2, "ESTABLISHED", remote_host=GW3)
    w.observe(ob.ChildUpdown(new, ob.ChildSaInfo("net", 3, "INSTALLED"), True))
    w.observe(ob.ChildUpdown(new, ob.ChildSaInfo("net2", 4, "INSTALLED"), True))
    w.observe(ob.IkeUpdown(ob.IkeSaInfo(f"home@{GW1}", 1, "DELETING", remote_host=GW1), False))
    for name in ("home", "upb"):
        s = w.state(name)
        assert (s.phase, s.peer, s.ike_id, s.kept.failures_total) == (Phase.UP, GW3, 2, 0)
    assert [e["connection"] for e in w.publisher.of("redirected")] == ["home", "upb"]
    assert not w.publisher.of("tunnel-down")
    ends = [(e["ike_id"], e["new"]) for e in w.publisher.of("ike-state")]
    assert ends[-1] == (1, "DESTROYING")


def test_the_5_9_dialect_reads_redirects_and_silent_destruction() -> None:
    reader = choose("5.9.8").dialect.reader(alerts=False)

    def read(message: str) -> ob.Observation | None:
        return reader.translate(ob.LogLine("IKE", 1, message, f"home@{GW1}", 3))

    assert read(f"redirected to {GW3}") == ob.IkeSignal(
        ob.Signal.REDIRECTED, f"home@{GW1}", 3, f"redirected to {GW3}", GW3
    )
    refused = read("only 5 redirects are allowed within 300 seconds")
    assert isinstance(refused, ob.IkeSignal) and refused.signal is ob.Signal.REDIRECT_REFUSED
    gone = read("destroying IKE_SA in state CONNECTING without notification")
    assert isinstance(gone, ob.IkeSignal) and gone.signal is ob.Signal.DESTROYED
    assert "redirected to " in reader.log_prefixes


def test_resync_adopts_a_connection_whose_child_rides_in_another_ones_ike_sa() -> None:
    from extsock_py.usecases.resync import resync

    charon = FakeCharonPort()
    manager = FailoverManager(charon, FakeClock(), RecordingPublisher())
    for name, child in (("home", "net"), ("upb", "net2")):
        manager.manage(
            ConnectionProfile(name, (GW1, GW2), body(child, (GW1, GW2)), FailoverPolicy())
        )
    kids = (ob.ChildSaInfo("net", 1, "INSTALLED"), ob.ChildSaInfo("net2", 2, "INSTALLED"))
    charon.sas[1] = ob.IkeSaInfo(f"home@{GW1}", 1, "ESTABLISHED", children=kids)
    report = resync(charon, manager, ["home", "upb"])
    assert report.adopted == {"home": GW1, "upb": GW1}
    assert not [c for c in charon.calls if c[0] in ("terminate", "initiate")]
    upb = manager.get("upb")
    assert upb is not None and (upb.state.phase, upb.state.ike_id) == (Phase.UP, 1)
