"""The tunnel monitor usecase with fakes: a fake clock, a fake charon, a scripted probe."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from extsock_py.domain import events as ev
from extsock_py.domain.failover import ConnState, Phase
from extsock_py.domain.policy import FailoverPolicy, MonitorPolicy
from extsock_py.domain.profile import ConnectionProfile
from extsock_py.interfaces.ports import ProbePort
from extsock_py.usecases.failover_manager import FailoverManager
from extsock_py.usecases.tunnel_monitor import TunnelMonitor
from tests.fakes.ports import FakeCharonPort, FakeClock, RecordingPublisher

GW1, GW2 = "10.0.0.1", "10.0.0.2"
MONITOR = MonitorPolicy(enabled=True, local="10.1.0.1", remote="10.2.0.1")


class FakeProbe:
    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.sent = 0
        self.answering = False
        self.pending = 0
        self.is_open = False

    def open(self) -> None:
        self.opened += 1
        self.is_open = True

    def send(self) -> int:
        assert self.is_open
        self.sent += 1
        if self.answering:
            self.pending += 1
        return 0

    def poll(self) -> int:
        answers, self.pending = self.pending, 0
        return answers

    def close(self) -> None:
        self.closed += 1
        self.is_open = False


class World:
    def __init__(self, monitor: MonitorPolicy = MONITOR) -> None:
        self.charon = FakeCharonPort()
        self.clock = FakeClock()
        self.publisher = RecordingPublisher()
        self.manager = FailoverManager(self.charon, self.clock, self.publisher)
        body: dict[str, Any] = {"remote_addrs": [GW1, GW2], "children": {"net": {}}}
        policy = FailoverPolicy(monitor=monitor)
        self.manager.manage(ConnectionProfile("home", (GW1, GW2), body, policy))
        self.probes: list[FakeProbe] = []

        def make(policy: MonitorPolicy) -> ProbePort:
            self.probes.append(FakeProbe())
            return self.probes[-1]

        self.monitor = TunnelMonitor(self.manager, self.charon, self.clock, self.publisher, make)

    @property
    def probe(self) -> FakeProbe:
        return self.probes[-1]

    def up_on(self, gateway: str) -> int:
        if self.manager.get("home") is not None and self.state().phase is Phase.IDLE:
            self.manager.handle("home", ev.Start())
        sa = self.charon.add_sa(f"home@{gateway}")
        self.manager.handle("home", ev.TunnelUp(gateway, sa.unique_id))
        assert self.state().phase is Phase.UP
        return sa.unique_id

    def state(self) -> ConnState:
        managed = self.manager.get("home")
        assert managed is not None
        return managed.state

    def run_for(self, seconds: float, step: float = 0.05) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            self.monitor.run_once()  # the main loop's side
            self.monitor.probe_pass()  # the probe timer's side

    def set_packets_in(self, ike_id: int, count: int) -> None:
        sa = self.charon.sas[ike_id]
        child = replace(sa.children[0], packets_in=count)
        self.charon.sas[ike_id] = replace(sa, children=(child,))


def test_disabled_means_no_socket_and_no_wake() -> None:
    w = World(MonitorPolicy())
    w.up_on(GW1)
    w.run_for(3.0)
    assert w.probes == [] and w.monitor.next_wake() is None
    assert w.charon.commands("list_sas") == []


def test_no_probe_while_the_tunnel_is_not_up() -> None:
    w = World()
    w.manager.handle("home", ev.Start())
    w.run_for(3.0)
    assert w.state().phase is Phase.CONNECTING
    assert all(p.opened == 0 for p in w.probes)


def test_answered_probes_keep_the_tunnel() -> None:
    w = World()
    w.up_on(GW1)
    w.monitor.run_once()
    w.probe.answering = True
    w.run_for(10.0)
    assert w.state().phase is Phase.UP and w.state().gateway == GW1
    assert 18 <= w.probe.sent <= 21
    assert w.monitor.status()["home"]["replies_total"] == w.probe.sent


def test_silence_fails_over_with_reason_monitor() -> None:
    w = World()
    w.up_on(GW1)
    w.monitor.run_once()
    first = w.probe
    w.run_for(1.45)
    assert w.state().gateway == GW1
    w.run_for(0.1)
    state = w.state()
    assert state.phase is Phase.CONNECTING and state.gateway == GW2
    assert state.outage is not None and state.outage.reason == "monitor"
    assert first.sent == 2 and not first.is_open
    dead = w.publisher.of("monitor-dead")
    assert dead and dead[0]["gateway"] == GW1 and dead[0]["unanswered"] == 2
    assert "failover-started" in w.publisher.kinds()


def test_a_new_tunnel_reopens_the_socket_and_resets() -> None:
    w = World()
    w.up_on(GW1)
    w.monitor.run_once()
    w.run_for(1.6)  # dead: failing over to GW2
    sa = w.charon.add_sa(f"home@{GW2}")
    w.manager.handle("home", ev.TunnelUp(GW2, sa.unique_id))
    w.monitor.run_once()
    assert w.probe.opened == 2 and w.probe.is_open
    status = w.monitor.status()["home"]
    assert status["running"] and status["gateway"] == GW2 and status["unanswered"] == 0
    w.probe.answering = True
    w.run_for(5.0)
    assert w.state().gateway == GW2


def test_inbound_traffic_is_life_and_holds_the_probes_back() -> None:
    w = World()
    ike_id = w.up_on(GW1)
    w.monitor.run_once()
    count = 0
    for _ in range(100):  # 10 s of traffic: the counter grows between looks
        count += 7
        w.set_packets_in(ike_id, count)
        w.run_for(0.1)
    assert w.state().phase is Phase.UP
    assert w.probe.sent <= 1  # at most the first look (baseline) lets one probe out
    w.run_for(2.1)  # traffic stops, nothing answers: silence counts from the last look
    assert w.state().gateway == GW2


def test_list_sas_failing_leaves_the_probes_in_charge() -> None:
    w = World()
    w.up_on(GW1)
    w.charon.fail("list_sas")
    w.monitor.run_once()
    w.probe.answering = True
    w.run_for(5.0)
    assert w.state().phase is Phase.UP and w.probe.sent >= 9


def test_a_socket_that_cannot_open_is_retried() -> None:
    w = World()

    class Refusing(FakeProbe):
        def open(self) -> None:
            self.opened += 1
            if self.opened < 3:
                raise OSError(101, "Network is unreachable")
            self.is_open = True

    def make(policy: MonitorPolicy) -> ProbePort:
        w.probes.append(Refusing())
        return w.probes[-1]

    w.monitor = TunnelMonitor(w.manager, w.charon, w.clock, w.publisher, make)
    w.up_on(GW1)
    w.run_for(1.2)
    assert w.probe.opened == 3 and w.probe.is_open
    assert w.state().phase is Phase.UP


def test_a_reload_that_disables_the_monitor_closes_the_socket() -> None:
    w = World()
    w.up_on(GW1)
    w.monitor.run_once()
    managed = w.manager.get("home")
    assert managed is not None
    managed.profile = replace(managed.profile, policy=FailoverPolicy())
    w.monitor.run_once()
    assert not w.probe.is_open and w.monitor.status() == {}
    assert w.monitor.next_wake() is None
