"""The failover manager with command lanes: every connection's charon commands are handed to
the lanes under the connection's name, and their failures come back later as events."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest

from extsock_py.domain import events as ev
from extsock_py.domain.errors import CharonUnreachable
from extsock_py.domain.failover import Phase
from extsock_py.interfaces.ports import CharonPort
from extsock_py.usecases.failover_manager import FailoverManager
from tests.fakes.ports import FakeCharonPort, FakeClock, MemoryStateStore, RecordingPublisher
from tests.unit.test_failover_manager import GW1, GW2, GW3, make_profile

T = TypeVar("T")


class HeldLanes:
    """Lanes that hold every command until `run()`: then each runs on the fake charon, and
    its outcome is handed to `done` as the daemon's loop would, in submission order."""

    def __init__(self, charon: FakeCharonPort) -> None:
        self.charon = charon
        self.held: list[tuple[str, Callable[[CharonPort], Any], Callable[[Future[Any]], None]]] = []

    def submit(
        self, key: str, work: Callable[[CharonPort], T], done: Callable[[Future[T]], None]
    ) -> None:
        self.held.append((key, work, done))

    def keys(self) -> list[str]:
        return [key for key, _, _ in self.held]

    def run(self) -> None:
        held, self.held = self.held, []
        for _, work, done in held:
            outcome: Future[Any] = Future()
            try:
                outcome.set_result(work(self.charon))
            except BaseException as exc:
                outcome.set_exception(exc)
            done(outcome)


class World:
    def __init__(self, *gateways: str) -> None:
        self.charon = FakeCharonPort()
        self.lanes = HeldLanes(self.charon)
        self.manager = FailoverManager(
            self.charon,
            FakeClock(),
            RecordingPublisher(),
            MemoryStateStore(),
            lanes=self.lanes,
        )
        for name in ("home", "work"):
            assert self.manager.manage(make_profile(gateways or (GW1, GW2), name=name))

    def state(self, name: str = "home") -> tuple[Phase, str | None]:
        managed = self.manager.get(name)
        assert managed is not None
        return managed.state.phase, managed.state.gateway


def test_commands_wait_for_the_lanes_and_go_under_the_connection_s_name() -> None:
    w = World()
    w.manager.start_all()
    assert w.charon.calls == []  # nothing on the loop's own session
    assert w.lanes.keys() == ["home", "work"]
    w.lanes.run()
    assert [c[:2] for c in w.charon.calls] == [
        ("load_conn", "home@10.0.0.1"),
        ("initiate", "home@10.0.0.1"),
        ("load_conn", "work@10.0.0.1"),
        ("initiate", "work@10.0.0.1"),
    ]


def test_a_refusal_comes_back_as_initiate_failed_and_the_machine_moves_on() -> None:
    w = World(GW1, GW2, GW3)
    w.charon.fail("initiate", name="home@10.0.0.1")
    w.manager.start_all()
    w.lanes.run()  # home's initiate refused: InitiateFailed, handled on the loop
    assert w.state("home") == (Phase.CONNECTING, GW2)
    assert w.state("work") == (Phase.CONNECTING, GW1)
    # the failed attempt's cleanup and the next attempt, all in home's lane
    assert set(w.lanes.keys()) == {"home"}
    before = len(w.charon.calls)
    w.lanes.run()
    after = [c[:2] for c in w.charon.calls[before:]]
    assert after.index(("load_conn", "home@10.0.0.2")) + 1 == after.index(
        ("initiate", "home@10.0.0.2")
    )
    assert ("unload_conn", "home@10.0.0.1") in after
    assert w.state("home") == (Phase.CONNECTING, GW2)


def test_a_storm_of_downs_submits_every_attempt_at_once() -> None:
    w = World()
    w.manager.start_all()
    w.lanes.run()
    downs: list[tuple[str, int]] = []
    for name in ("home", "work"):
        sa = next(s for s in w.charon.sas.values() if s.name == f"{name}@{GW1}")
        w.manager.handle(name, ev.TunnelUp(GW1, sa.unique_id))
        downs.append((name, sa.unique_id))
    w.charon.sas.clear()
    w.charon.calls.clear()
    for name, sa_id in downs:
        w.manager.handle(name, ev.TunnelDown(GW1, sa_id))
    assert w.state("home") == (Phase.CONNECTING, GW2)  # decided before any command ran
    assert w.charon.calls == []
    w.lanes.run()
    per_conn = {
        name: [c[:2] for c in w.charon.calls if c[1].startswith(name)] for name in ("home", "work")
    }
    assert per_conn["home"] == [
        ("load_conn", "home@10.0.0.2"),
        ("initiate", "home@10.0.0.2"),
        ("unload_conn", "home@10.0.0.1"),
    ]


def test_a_lost_charon_surfaces_on_the_loop() -> None:
    w = World()
    w.charon.fail("initiate", CharonUnreachable("initiate failed: lost charon"))
    w.manager.start_all()
    with pytest.raises(CharonUnreachable):
        w.lanes.run()
