"""The failover manager with in-memory fakes: actions become charon commands."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import pytest

import extsock_py
from extsock_py.adapters.state_store import connection_fields, saved_connection
from extsock_py.domain import events as ev
from extsock_py.domain.actions import Action, Initiate, LoadClone
from extsock_py.domain.errors import CharonError, CharonUnreachable
from extsock_py.domain.failover import Phase, wake_at
from extsock_py.domain.persisted import SavedConnection
from extsock_py.domain.policy import FailbackPolicy, FailoverPolicy
from extsock_py.domain.profile import ConnectionProfile
from extsock_py.domain.reports import ConnectionStatus, HistoryRecord
from extsock_py.usecases import failover_manager
from extsock_py.usecases.failover_manager import FailoverManager
from tests.fakes.ports import FakeCharonPort, FakeClock, MemoryStateStore, RecordingPublisher

GW1, GW2, GW3 = "10.0.0.1", "10.0.0.2", "10.0.0.3"


def psk_body(*gateways: str) -> dict[str, Any]:
    return {
        "version": "2",
        "remote_addrs": list(gateways),
        "proposals": ["aes256-sha256-modp2048"],
        "local-1": {"auth": "psk", "id": "home"},
        "remote-1": {"auth": "psk", "id": "gw"},
        "children": {
            "net": {
                "remote_ts": ["10.2.0.0/16"],
                "start_action": "start",
                "dpd_action": "restart",
                "close_action": "restart",
            },
            "other": {"remote_ts": ["10.3.0.0/16"]},
        },
    }


def cert_body(*gateways: str) -> dict[str, Any]:
    return {
        "remote_addrs": list(gateways),
        "local-1": {"auth": "pubkey", "certs": [b"\x30\x82-der"], "id": "CN=home"},
        "remote-1": {"auth": "pubkey", "id": "CN=gw"},
        "children": {"net": {"remote_ts": ["0.0.0.0/0"], "start_action": "trap"}},
    }


def make_profile(
    gateways: tuple[str, ...] = (GW1, GW2),
    body: dict[str, Any] | None = None,
    name: str = "home",
    **policy: Any,
) -> ConnectionProfile:
    return ConnectionProfile(name, gateways, body or psk_body(*gateways), FailoverPolicy(**policy))


class World:
    def __init__(self, *profiles: ConnectionProfile) -> None:
        self.charon = FakeCharonPort()
        self.clock = FakeClock()
        self.publisher = RecordingPublisher()
        self.store = MemoryStateStore()
        self.manager = FailoverManager(self.charon, self.clock, self.publisher, self.store)
        self.seen: list[tuple[str, Action]] = []
        self.manager.observers.append(lambda name, action: self.seen.append((name, action)))
        for profile in profiles or (make_profile(),):
            assert self.manager.manage(profile)

    def phase(self, name: str = "home") -> Phase:
        managed = self.manager.get(name)
        assert managed is not None
        return managed.state.phase

    def gateway(self, name: str = "home") -> str | None:
        managed = self.manager.get(name)
        assert managed is not None
        return managed.state.gateway


def test_start_loads_the_clone_and_initiates_the_first_child() -> None:
    w = World()
    w.manager.start_all()
    assert [c[:2] for c in w.charon.calls] == [
        ("load_conn", "home@10.0.0.1"),
        ("initiate", "home@10.0.0.1"),
    ]
    assert w.charon.calls[1] == ("initiate", "home@10.0.0.1", "net")
    assert list(w.charon.conns) == ["home@10.0.0.1"]
    assert w.seen == [("home", LoadClone(GW1)), ("home", Initiate(GW1))]


@pytest.mark.parametrize("make", [psk_body, cert_body])
def test_failover_loads_the_clone_of_the_next_gateway(make: Any) -> None:
    w = World(make_profile(body=make(GW1, GW2)))
    w.manager.start_all()
    (sa,) = w.charon.sas.values()
    w.manager.handle("home", ev.TunnelUp(GW1, sa.unique_id))
    w.charon.sas.clear()  # charon deleted the IKE_SA
    w.charon.calls.clear()
    w.clock.advance(1.0)
    w.manager.handle("home", ev.TunnelDown(GW1, sa.unique_id))
    assert [c[:2] for c in w.charon.calls] == [
        ("load_conn", "home@10.0.0.2"),
        ("initiate", "home@10.0.0.2"),
        ("unload_conn", "home@10.0.0.1"),
    ]  # an ike-down needs no terminate; the old clone goes once the new one is on its way
    body = w.charon.conns["home@10.0.0.2"]
    original = make(GW1, GW2)
    assert body["remote_addrs"] == [GW2]
    assert body["keyingtries"] == "1"
    for child in body["children"].values():
        assert (child["start_action"], child["dpd_action"], child["close_action"]) == (
            "none",
            "clear",
            "none",
        )
    for key in ("local-1", "remote-1"):
        assert body[key] == original[key]
    assert list(w.charon.conns) == ["home@10.0.0.2"]
    assert w.publisher.kinds() == ["tunnel-up", "tunnel-down", "failover-started"]
    (new_sa,) = w.charon.sas.values()
    w.clock.advance(2.5)
    w.manager.handle("home", ev.TunnelUp(GW2, new_sa.unique_id))
    failover = w.publisher.of("failover")
    assert failover == [
        {
            "connection": "home",
            "gateway": GW2,
            "from_gateway": GW1,
            "reason": "ike-down",
            "duration": 2.5,
        }
    ]
    assert w.store.history("home") == [
        HistoryRecord(
            time=w.clock.wall(),
            connection="home",
            from_gateway=GW1,
            to_gateway=GW2,
            reason="ike-down",
            result="up",
            duration=2.5,
            outage=None,  # no monitor: nothing saw the traffic stop
        )
    ]
    assert w.store.connections["home"].gateway == GW2
    assert w.store.connections["home"].phase == "up"


def test_refused_initiate_is_fed_back_as_initiate_failed() -> None:
    w = World(make_profile((GW1, GW2, GW3)))
    w.charon.fail("initiate", name="home@10.0.0.1")
    w.manager.start_all()
    assert (w.phase(), w.gateway()) == (Phase.CONNECTING, GW2)
    assert list(w.charon.conns) == ["home@10.0.0.2"]
    assert w.publisher.of("failover-started")[0]["reason"] == "initiate-failed"


def test_refused_load_is_fed_back_too() -> None:
    w = World()
    w.charon.fail("load_conn", name="home@10.0.0.1")
    w.manager.start_all()
    assert (w.phase(), w.gateway()) == (Phase.CONNECTING, GW2)
    assert list(w.charon.conns) == ["home@10.0.0.2"]


def test_charon_refusing_everything_ends_in_backoff_not_a_loop() -> None:
    w = World(make_profile((GW1, GW2, GW3)))
    w.charon.fail("initiate")
    w.manager.start_all()
    assert w.phase() is Phase.BACKOFF
    assert len(w.charon.commands("initiate")) == 3
    due = w.manager.next_wake()
    assert due is not None and due > w.clock.now
    w.manager.tick()  # not yet due
    assert len(w.charon.commands("initiate")) == 3
    w.clock.advance(due - w.clock.now)
    w.manager.tick()
    assert len(w.charon.commands("initiate")) == 6
    assert w.phase() is Phase.BACKOFF


def test_charon_refusing_everything_with_attempts_and_no_limit_stays_bounded() -> None:
    w = World(make_profile((GW1, GW2), attempts_per_gateway=40, max_cycles=0))
    w.charon.fail("initiate")
    w.manager.start_all()  # 80 failures in a row: the cascade stops at its bound
    assert len(w.charon.commands("initiate")) <= 64


def test_unload_and_terminate_errors_are_ignored() -> None:
    w = World()
    w.manager.start_all()
    w.charon.fail("unload_conn")
    w.charon.fail("terminate")
    w.manager.handle("home", ev.InitiateFailed(GW1, "x"))
    assert (w.phase(), w.gateway()) == (Phase.CONNECTING, GW2)
    assert w.charon.commands("terminate") == [("terminate", "home@10.0.0.1", None)]
    assert w.charon.commands("unload_conn") == [("unload_conn", "home@10.0.0.1")]
    assert w.charon.commands("initiate")[-1] == ("initiate", "home@10.0.0.2", "net")


def test_charon_unreachable_propagates() -> None:
    w = World()
    w.charon.fail("load_conn", CharonUnreachable("socket gone"))
    with pytest.raises(CharonUnreachable):
        w.manager.start_all()


def test_terminate_uses_the_ike_id_when_known() -> None:
    w = World()
    w.manager.start_all()
    (sa,) = w.charon.sas.values()
    w.manager.handle("home", ev.IkeConnecting(GW1, sa.unique_id))
    w.clock.advance(5.0)
    w.manager.tick()
    assert w.charon.commands("terminate") == [("terminate", None, sa.unique_id)]
    assert sa.unique_id not in w.charon.sas


def test_stop_then_late_down_then_start() -> None:
    w = World()
    w.manager.start_all()
    (sa,) = w.charon.sas.values()
    w.manager.handle("home", ev.TunnelUp(GW1, sa.unique_id))
    w.manager.handle("home", ev.Stop())
    assert w.charon.conns == {} and w.charon.sas == {}
    w.manager.handle("home", ev.TunnelDown(GW1, sa.unique_id))
    assert w.phase() is Phase.STOPPED
    assert w.publisher.kinds() == ["tunnel-up", "tunnel-down"]
    assert w.publisher.of("tunnel-down")[0]["reason"] == "operator"
    w.manager.handle("home", ev.Start())
    assert list(w.charon.conns) == ["home@10.0.0.1"]


def test_make_before_break_switch_keeps_both_clones_until_up() -> None:
    w = World()
    w.manager.start_all()
    (sa1,) = w.charon.sas.values()
    w.manager.handle("home", ev.TunnelUp(GW1, sa1.unique_id))
    w.manager.handle("home", ev.Switch(GW2))
    assert sorted(w.charon.conns) == ["home@10.0.0.1", "home@10.0.0.2"]
    assert w.manager.status()[0].switch_gateway == GW2
    sa2 = max(w.charon.sas)
    w.clock.advance(0.25)
    w.manager.handle("home", ev.TunnelUp(GW2, sa2))
    # the old tunnel drains for switch_drain (1 s), then goes
    assert sorted(w.charon.sas) == [sa1.unique_id, sa2]
    assert w.manager.next_wake() == w.clock.monotonic() + 1.0
    w.clock.advance(1.0)
    w.manager.tick()
    assert list(w.charon.conns) == ["home@10.0.0.2"]
    assert list(w.charon.sas) == [sa2]
    assert w.store.history()[-1].reason == "operator"
    assert w.store.history()[-1].duration == 0.25


def test_failback_probe_uses_a_childless_probe_connection() -> None:
    fb = FailbackPolicy(enabled=True, probe_interval=10.0, probe_timeout=5.0, hold_down=0.0)
    w = World(make_profile(failback=fb))
    w.charon.fail("initiate", name="home@10.0.0.1", times=1)
    w.manager.start_all()
    sa2 = max(w.charon.sas)
    w.manager.handle("home", ev.TunnelUp(GW2, sa2))
    w.clock.advance(10.0)
    w.manager.tick()
    probe = w.charon.conns["home@10.0.0.1~probe"]
    assert "children" not in probe and probe["remote_addrs"] == [GW1]
    assert w.charon.commands("initiate")[-1] == ("initiate", "home@10.0.0.1~probe", None)
    w.manager.handle("home", ev.ProbeUp(GW1, max(w.charon.sas)))
    assert "home@10.0.0.1~probe" not in w.charon.conns
    assert sorted(w.charon.conns) == ["home@10.0.0.1", "home@10.0.0.2"]
    assert w.manager.status()[0].next_action == f"switching to {GW1} (failback)"


def test_a_probe_charon_refuses_counts_as_failed() -> None:
    fb = FailbackPolicy(enabled=True, probe_interval=10.0)
    w = World(make_profile(failback=fb))
    w.manager.handle("home", ev.Adopt(GW2, 7))
    w.charon.fail("load_conn", name="home@10.0.0.1~probe")
    w.clock.advance(10.0)
    w.manager.tick()
    managed = w.manager.get("home")
    assert managed is not None and managed.state.failback.probe is None
    assert managed.state.failback.next_probe_at == w.clock.now + 10.0


def test_status_fields() -> None:
    w = World()
    w.manager.start_all()
    (row,) = w.manager.status()
    assert row == ConnectionStatus(
        connection="home",
        gateways=(GW1, GW2),
        active_gateway=None,
        target_gateway=GW1,
        phase="connecting",
        ike_id=None,
        held=False,
        failures_total=0,
        failures_in_cycle=0,
        cycles_failed=0,
        next_action=f"connect timeout on {GW1}",
        next_action_in=5.0,
        switch_gateway=None,
        redirected_to=None,
        virtual_ips=(),
    )
    w.clock.advance(1.5)
    assert w.manager.status("home")[0].next_action_in == 3.5
    assert w.manager.status("other") == []
    w.manager.handle("home", ev.TunnelUp(GW1, 1))
    row = w.manager.status()[0]
    assert (row.active_gateway, row.phase, row.ike_id, row.next_action) == (
        GW1,
        "up",
        1,
        None,
    )
    w.manager.handle("home", ev.Hold())
    assert w.manager.status()[0].next_action == "held by operator"


def test_gave_up_is_recorded_in_the_history() -> None:
    w = World(make_profile(max_cycles=1))
    w.charon.fail("initiate")
    w.manager.start_all()
    assert w.phase() is Phase.GAVE_UP
    assert w.charon.conns == {}
    assert w.store.history()[-1].result == "gave-up"
    assert w.manager.status()[0].next_action == "waiting for retry or reload"
    assert w.manager.next_wake() is None
    w.charon.heal()
    w.manager.handle("home", ev.Retry())
    assert list(w.charon.conns) == ["home@10.0.0.1"]


def test_each_connection_has_its_own_machine() -> None:
    w = World(make_profile(name="a"), make_profile(name="b", gateways=(GW2, GW3)))
    w.manager.start_all()
    assert sorted(w.charon.conns) == ["a@10.0.0.1", "b@10.0.0.2"]
    w.manager.handle("a", ev.InitiateFailed(GW1, "x"))
    assert sorted(w.charon.conns) == ["a@10.0.0.2", "b@10.0.0.2"]
    assert w.gateway("b") == GW2
    w.manager.handle("nobody", ev.Start())
    assert w.manager.names() == ["a", "b"]
    assert w.manager.is_managed("a") and not w.manager.is_managed("nobody")


def test_manage_updates_or_restarts() -> None:
    w = World()
    w.manager.start_all()
    same = make_profile(connect_timeout=9.0)
    assert w.manager.manage(same) is False
    managed = w.manager.get("home")
    assert managed is not None and managed.state.policy.connect_timeout == 9.0
    assert managed.state.phase is Phase.CONNECTING
    assert w.manager.manage(make_profile((GW3, GW2))) is True
    assert w.charon.conns == {}  # the old clone went
    assert w.phase() is Phase.IDLE
    w.manager.start_all(["home"])
    assert list(w.charon.conns) == ["home@10.0.0.3"]


def test_forget_unloads() -> None:
    w = World()
    w.manager.start_all()
    w.manager.forget("home")
    w.manager.forget("home")
    assert w.charon.conns == {} and w.manager.names() == []


def test_no_store_is_fine() -> None:
    charon = FakeCharonPort()
    manager = FailoverManager(charon, FakeClock(), RecordingPublisher())
    manager.manage(make_profile(max_cycles=1))
    charon.fail("initiate", CharonError("nope"))
    manager.start_all()
    managed = manager.get("home")
    assert managed is not None and managed.state.phase is Phase.GAVE_UP


def test_charon_restarted_starts_every_machine_over_through_step() -> None:
    w = World(make_profile(name="a"), make_profile(name="b"))
    w.manager.start_all()
    w.manager.handle("a", ev.Hold())
    w.manager.handle("b", ev.InitiateFailed(GW1, "x"))
    b = w.manager.get("b")
    assert b is not None and b.state.kept.failures_total == 1
    revision, saved = w.manager.revision, dict(w.store.connections)
    w.manager.charon_restarted()
    assert (w.phase("a"), w.gateway("a"), w.phase("b"), w.gateway("b")) == (
        Phase.IDLE,
        None,
        Phase.IDLE,
        None,
    )
    a = w.manager.get("a")
    assert a is not None and a.state.kept.held and b.state.kept.failures_total == 1
    assert w.manager.revision > revision  # the loop and the monitor see the change
    assert w.manager.next_wake() is None
    assert w.store.connections == saved  # as before: charon's resync decides what is saved
    w.manager.start_all(["b"])
    assert w.phase("b") is Phase.CONNECTING


def test_restore_persisted_goes_through_the_machine() -> None:
    w = World()
    w.store.save_connection("home", SavedConnection(held=True, failures_total=5, phase="up"))
    assert w.manager.restore_persisted(["home", "nobody"]) == ["home"]
    managed = w.manager.get("home")
    assert managed is not None
    assert (managed.state.kept.held, managed.state.kept.failures_total) == (True, 5)


def test_the_state_of_a_managed_connection_is_read_only_outside_the_manager() -> None:
    w = World()
    managed = w.manager.get("home")
    assert managed is not None
    with pytest.raises(AttributeError):
        managed.state = managed.state  # type: ignore[misc]


def test_only_the_failover_manager_writes_a_machines_state() -> None:
    """`step` decides; the manager stores what it returned; nothing else writes it."""
    root = Path(extsock_py.__file__).parent
    writers = sorted(
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "_set_state(" in path.read_text(encoding="utf-8")
    )
    assert writers == ["usecases/failover_manager.py"]


# What a connection's row in the state store holds, as every release so far wrote it: the
# machine's records are grouped now, the persisted row stays flat (old state files load).
PERSISTED_KEYS = {
    "last_up",
    "gateway",
    "phase",
    "held",
    "failures_total",
    "cycles_failed",
    "attempts_on_gateway",
}


def test_the_persisted_row_keeps_its_flat_keys() -> None:
    w = World()
    w.manager.start_all()
    w.manager.handle("home", ev.InitiateFailed(GW1, "refused"))
    row = connection_fields(w.store.connections["home"])
    assert set(row) == PERSISTED_KEYS
    assert (row["gateway"], row["phase"], row["held"], row["failures_total"]) == (
        GW2,
        "connecting",
        False,
        1,
    )


def test_a_row_written_before_the_records_were_grouped_is_restored() -> None:
    w = World()
    old = {
        "last_up": GW2,
        "gateway": GW2,
        "phase": "up",
        "held": True,
        "failures_total": 9,
        "cycles_failed": 1,
        "attempts_on_gateway": 0,
    }
    w.store.save_connection("home", saved_connection(old))
    assert w.manager.restore_persisted(["home"]) == ["home"]
    managed = w.manager.get("home")
    assert managed is not None
    assert (managed.state.kept.held, managed.state.kept.failures_total) == (True, 9)


def _earliest(manager: FailoverManager) -> float | None:
    times = [wake_at(m.state) for name in manager.names() if (m := manager.get(name))]
    pending = [t for t in times if t is not None]
    return min(pending) if pending else None


def test_next_wake_follows_every_change_without_a_recount_per_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The earliest deadline stays exact through a random run of starts, failures, ups and
    downs over 30 connections with different timeouts, and a change that does not move the
    earliest deadline later costs no recount over every connection (a storm's O(n^2))."""
    names = [f"c{i}" for i in range(30)]
    w = World(*(make_profile(name=n, connect_timeout=5.0 + i) for i, n in enumerate(names)))
    w.manager.start_all()
    rng = random.Random(18)
    for step_no in range(400):
        name = rng.choice(names)
        managed = w.manager.get(name)
        assert managed is not None
        gateway = managed.state.gateway or GW1
        ike_id = managed.state.ike_id or step_no
        choices: list[ev.Event] = [
            ev.Start(),
            ev.InitiateFailed(gateway, "x"),
            ev.TunnelUp(gateway, step_no),
            ev.TunnelDown(gateway, ike_id),
            ev.Tick(),
        ]
        event = rng.choice(choices)
        w.clock.advance(rng.choice([0.0, 0.5, 3.0]))
        w.manager.handle(name, event)
        assert w.manager.next_wake() == _earliest(w.manager), (step_no, name, event)

    calls = 0
    real = wake_at

    def counting(state: Any) -> float | None:
        nonlocal calls
        calls += 1
        return real(state)

    w = World(*(make_profile(name=n, connect_timeout=5.0 + i) for i, n in enumerate(names)))
    w.manager.start_all()
    for i, name in enumerate(names):
        w.manager.handle(name, ev.TunnelUp(GW1, i))
    assert w.manager.next_wake() is None
    w.manager.handle(names[0], ev.TunnelDown(GW1, 0))  # the earliest deadline from now on
    assert w.manager.next_wake() == _earliest(w.manager) is not None
    monkeypatch.setattr(failover_manager, "wake_at", counting)
    for i, name in enumerate(names[10:20], start=10):  # later deadlines: no recount
        w.clock.advance(0.1)
        w.manager.handle(name, ev.TunnelDown(GW1, i))
        assert w.phase(name) is Phase.CONNECTING
        assert w.manager.next_wake() == _earliest(w.manager)
    assert calls <= 4 * 10, calls


def test_the_store_is_written_only_when_what_it_holds_changes() -> None:
    """A failover goes through several states (IKE_SA connecting, up, CHILD_SA up); only
    those that change the stored fields are written, and the store ends as the state."""
    w = World()
    w.manager.start_all()
    w.manager.handle("home", ev.IkeConnecting(GW1, 1))
    w.manager.handle("home", ev.IkeUp(GW1, 1))
    w.manager.handle("home", ev.TunnelUp(GW1, 1))
    w.manager.handle("home", ev.TunnelDown(GW1, 1))
    w.manager.handle("home", ev.IkeConnecting(GW2, 2))
    w.manager.handle("home", ev.IkeUp(GW2, 2))
    w.manager.handle("home", ev.TunnelUp(GW2, 2))
    assert w.phase() is Phase.UP and w.gateway() == GW2
    writes = [state for name, state in w.store.saves if name == "home"]
    assert all(a != b for a, b in itertools.pairwise(writes)), writes
    assert [(s.phase, s.gateway) for s in writes] == [
        ("connecting", GW1),
        ("up", GW1),
        ("connecting", GW2),
        ("up", GW2),
    ]
    assert w.store.connections["home"] == writes[-1]
    assert writes[-1].last_up == GW2 and writes[-1].failures_total == 1
