"""Resync: adopt tunnels charon already has up, clear stale clones and SAs, start the rest."""

from __future__ import annotations

from dataclasses import replace

from extsock_py.domain.errors import CharonError
from extsock_py.domain.failover import Phase
from extsock_py.domain.policy import FailoverPolicy
from extsock_py.domain.profile import ConnectionProfile
from extsock_py.usecases.failover_manager import FailoverManager
from extsock_py.usecases.resync import reconcile, resync
from tests.fakes.ports import FakeCharonPort, FakeClock, RecordingPublisher

GW1, GW2, GW3 = "10.0.0.1", "10.0.0.2", "10.0.0.3"


def world(*names: str) -> tuple[FakeCharonPort, FailoverManager, RecordingPublisher]:
    charon = FakeCharonPort()
    publisher = RecordingPublisher()
    manager = FailoverManager(charon, FakeClock(), publisher)
    for name in names:
        body = {"remote_addrs": [GW1, GW2, GW3], "children": {"net": {}}}
        manager.manage(ConnectionProfile(name, (GW1, GW2, GW3), body, FailoverPolicy()))
    return charon, manager, publisher


def phase_gateway(manager: FailoverManager, name: str) -> tuple[Phase, str | None]:
    managed = manager.get(name)
    assert managed is not None
    return managed.state.phase, managed.state.gateway


def test_adopts_an_up_clone_clears_stale_ones_and_starts_the_rest() -> None:
    charon, manager, publisher = world("home", "office")
    for name in ("home@10.0.0.1", "home@10.0.0.2", "home@10.0.0.2~probe", "plain", "other@1.2.3.4"):
        charon.conns[name] = {}
    half_open = charon.add_sa("home@10.0.0.1", state="CONNECTING", children=())
    up = charon.add_sa("home@10.0.0.2")
    probe = charon.add_sa("home@10.0.0.2~probe", children=())
    plain = charon.add_sa("plain")
    foreign = charon.add_sa("other@1.2.3.4")
    report = resync(charon, manager, ["home", "office"])
    assert report.adopted == {"home": GW2}
    assert report.started == ["office"]
    assert sorted(report.unloaded) == ["home@10.0.0.1", "home@10.0.0.2~probe"]
    assert phase_gateway(manager, "home") == (Phase.UP, GW2)
    managed = manager.get("home")
    assert managed is not None and managed.state.ike_id == up.unique_id
    assert phase_gateway(manager, "office") == (Phase.CONNECTING, GW1)
    # what charon has left: the adopted clone, the unmanaged ones, office's new clone
    assert sorted(charon.conns) == ["home@10.0.0.2", "office@10.0.0.1", "other@1.2.3.4", "plain"]
    assert half_open.unique_id not in charon.sas and probe.unique_id not in charon.sas
    assert {up.unique_id, plain.unique_id, foreign.unique_id} <= set(charon.sas)
    assert publisher.of("tunnel-up") == [
        {"connection": "home", "gateway": GW2, "reason": "adopted"}
    ]


def test_a_clone_without_an_installed_child_is_not_adopted() -> None:
    charon, manager, _ = world("home")
    charon.conns["home@10.0.0.2"] = {}
    charon.add_sa("home@10.0.0.2", children=(("net", "REKEYING"),))
    report = resync(charon, manager, ["home"])
    assert report.adopted == {} and report.started == ["home"]
    assert list(charon.conns) == ["home@10.0.0.1"]
    assert [sa.name for sa in charon.sas.values()] == ["home@10.0.0.1"]


def test_duplicate_up_clones_keep_the_newest() -> None:
    """As extsock stopped during a switch's drain leaves them: the newer tunnel is the one
    charon sends through; the older one goes."""
    charon, manager, _ = world("home")
    charon.conns["home@10.0.0.1"] = {}
    charon.conns["home@10.0.0.3"] = {}
    first = charon.add_sa("home@10.0.0.3")
    second = charon.add_sa("home@10.0.0.1")
    report = resync(charon, manager, ["home"])
    assert report.adopted == {"home": GW1}
    assert list(charon.sas) == [second.unique_id]
    assert first.unique_id not in charon.sas
    assert list(charon.conns) == ["home@10.0.0.1"]


def test_a_clone_towards_a_gateway_no_longer_listed_is_not_adopted() -> None:
    """The gateway list changed while extsock was down: the old clone must not strand it."""
    charon, manager, _ = world("home")
    charon.conns["home@10.9.9.9"] = {}
    old = charon.add_sa("home@10.9.9.9")
    report = resync(charon, manager, ["home"])
    assert report.adopted == {} and report.started == ["home"]
    assert phase_gateway(manager, "home") == (Phase.CONNECTING, GW1)
    assert old.unique_id not in charon.sas
    assert "home@10.9.9.9" not in charon.conns


def test_errors_clearing_stale_state_do_not_stop_the_resync() -> None:
    charon, manager, _ = world("home", "office")
    charon.conns["home@10.0.0.1"] = {}
    charon.add_sa("home@10.0.0.1", state="CONNECTING", children=())
    charon.fail("unload_conn", times=1)
    charon.fail("terminate", CharonError("no matching SAs to terminate found"), times=1)
    report = resync(charon, manager, ["home", "office"])
    assert report.started == ["home", "office"]
    assert phase_gateway(manager, "office") == (Phase.CONNECTING, GW1)


def test_names_outside_the_list_are_left_alone() -> None:
    charon, manager, _ = world("home", "office")
    charon.conns["office@10.0.0.2"] = {}
    sa = charon.add_sa("office@10.0.0.2")
    report = resync(charon, manager, ["home"])
    assert report.started == ["home"] and report.unloaded == []
    assert sa.unique_id in charon.sas and "office@10.0.0.2" in charon.conns
    assert phase_gateway(manager, "office") == (Phase.IDLE, None)


def test_reconcile_fails_over_a_tunnel_charon_lost_without_telling() -> None:
    charon, manager, publisher = world("home", "office")
    home = charon.add_sa("home@10.0.0.1")
    office = charon.add_sa("office@10.0.0.2")
    charon.conns.update({"home@10.0.0.1": {}, "office@10.0.0.2": {}})
    resync(charon, manager, ["home", "office"])
    assert reconcile(charon, manager) == []  # both there: nothing to do
    del charon.sas[office.unique_id]  # its down event was lost
    assert reconcile(charon, manager) == ["office"]
    assert phase_gateway(manager, "office") == (Phase.CONNECTING, GW3)
    assert phase_gateway(manager, "home") == (Phase.UP, GW1)
    assert publisher.of("tunnel-down")[-1]["reason"] == "lost"
    assert home.unique_id in charon.sas


def test_reconcile_counts_an_sa_being_rekeyed_as_there() -> None:
    charon, manager, _ = world("home")
    charon.conns["home@10.0.0.1"] = {}
    sa = charon.add_sa("home@10.0.0.1")
    resync(charon, manager, ["home"])
    charon.sas[sa.unique_id] = replace(sa, state="REKEYING")
    assert reconcile(charon, manager) == []
