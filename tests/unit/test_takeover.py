"""Takeover: an as-written copy of a managed connection (loaded by `swanctl --load-all`,
strongswan.service or an older extsock) is replaced make-before-break, then unloaded."""

from __future__ import annotations

import logging

import pytest

from extsock_py.domain import events as ev
from extsock_py.domain.failover import Phase
from extsock_py.domain.policy import FailoverPolicy
from extsock_py.domain.profile import ConnectionProfile
from extsock_py.usecases.failover_manager import FailoverManager
from extsock_py.usecases.resync import resync
from extsock_py.usecases.takeover import Takeover
from tests.fakes.ports import FakeCharonPort, FakeClock, RecordingPublisher

GW1, GW2 = "10.0.0.1", "10.0.0.2"
AS_WRITTEN = {"remote_addrs": [GW1, GW2], "children": {"net": {"start_action": "start"}}}


def world() -> tuple[FakeCharonPort, FailoverManager, FakeClock, Takeover]:
    charon = FakeCharonPort()
    clock = FakeClock()
    manager = FailoverManager(charon, clock, RecordingPublisher())
    body = {"remote_addrs": [GW1, GW2], "children": {"net": {}}}
    manager.manage(ConnectionProfile("home", (GW1, GW2), body, FailoverPolicy()))
    return charon, manager, clock, Takeover(charon, manager, clock, grace=30.0)


def clone_up(charon: FakeCharonPort, manager: FailoverManager, gateway: str = GW1) -> None:
    (ike_id,) = [i for i, sa in charon.sas.items() if sa.name == f"home@{gateway}"]
    charon.establish(ike_id)
    manager.handle("home", ev.TunnelUp(gateway, ike_id))


def test_a_live_as_written_tunnel_is_replaced_make_before_break(
    caplog: pytest.LogCaptureFixture,
) -> None:
    charon, manager, _clock, takeover = world()
    charon.conns["home"] = dict(AS_WRITTEN)
    old = charon.add_sa("home")
    resync(charon, manager, ["home"])  # starts the clone beside the live as-written tunnel
    takeover.scan(["home"])
    takeover.tick()
    # not broken before made: the as-written tunnel stays while the clone connects
    assert "home" in charon.conns and old.unique_id in charon.sas
    with caplog.at_level(logging.INFO, logger="extsock.takeover"):
        clone_up(charon, manager)
        takeover.tick()
    assert "home" not in charon.conns and old.unique_id not in charon.sas
    assert charon.sa_names() == [f"home@{GW1}"]
    lines = [r.getMessage() for r in caplog.records if r.name == "extsock.takeover"]
    assert len(lines) == 1, lines
    assert "home: took over the as-written connection" in lines[0]
    assert f"#{old.unique_id}" in lines[0] and f"extsock's tunnel is up on {GW1}" in lines[0]
    assert takeover.next_wake() is None


def test_an_as_written_config_without_a_tunnel_is_unloaded_at_once() -> None:
    charon, manager, _clock, takeover = world()
    charon.conns["home"] = dict(AS_WRITTEN)
    half_open = charon.add_sa("home", state="CONNECTING", children=())  # towards a dead gw1
    resync(charon, manager, ["home"])
    takeover.scan(["home"])
    assert "home" not in charon.conns and half_open.unique_id not in charon.sas
    assert takeover.next_wake() is None


def test_an_as_written_copy_appearing_while_extsock_is_up_goes_at_once() -> None:
    """charon restarted and strongswan.service loaded everything again after extsock."""
    charon, manager, _clock, takeover = world()
    resync(charon, manager, ["home"])
    clone_up(charon, manager)
    charon.conns["home"] = dict(AS_WRITTEN)
    charon.add_sa("home")
    takeover.noticed("home")
    assert "home" not in charon.conns
    assert charon.sa_names() == [f"home@{GW1}"]
    assert manager.get("home") is not None
    managed = manager.get("home")
    assert managed is not None and managed.state.phase is Phase.UP


def test_the_copy_goes_after_the_grace_even_when_the_clone_never_comes_up() -> None:
    charon, manager, clock, takeover = world()
    charon.conns["home"] = dict(AS_WRITTEN)
    old = charon.add_sa("home")
    resync(charon, manager, ["home"])
    takeover.scan(["home"])
    assert takeover.next_wake() == clock.monotonic() + 30.0
    clock.advance(29.0)
    takeover.tick()
    assert "home" in charon.conns
    clock.advance(1.0)
    takeover.tick()
    assert "home" not in charon.conns and old.unique_id not in charon.sas


def test_unmanaged_names_are_left_alone() -> None:
    charon, _manager, _clock, takeover = world()
    charon.conns["plain"] = {}
    plain = charon.add_sa("plain")
    takeover.scan(["home", "plain"])
    takeover.noticed("plain")
    takeover.tick()
    assert "plain" in charon.conns and plain.unique_id in charon.sas
    assert not charon.commands("unload_conn", "terminate")


def test_nothing_to_take_over_sends_no_command() -> None:
    charon, manager, _clock, takeover = world()
    resync(charon, manager, ["home"])
    before = len(charon.commands("unload_conn", "terminate"))
    takeover.scan(["home"])
    assert len(charon.commands("unload_conn", "terminate")) == before
    assert takeover.done == []


def test_a_scan_given_charon_s_sas_reads_them_instead_of_asking_again() -> None:
    charon, manager, _clock, takeover = world()
    charon.conns["home"] = dict(AS_WRITTEN)
    old = charon.add_sa("home")
    resync(charon, manager, ["home"])
    sas = charon.list_sas()
    asked = len(charon.commands("list_sas"))
    takeover.scan(["home"], sas)
    assert len(charon.commands("list_sas")) == asked  # the answer given was read
    takeover.tick()
    clone_up(charon, manager)
    takeover.tick()
    assert "home" not in charon.conns and old.unique_id not in charon.sas
