"""The tunnel monitor's probe timer and its verdicts (issue 28), on a fake clock.

The probe side runs on a timer of its own: its probes leave at their time whatever the main
loop does, and a verdict is posted to the loop with priority (run before the inbox)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from extsock_py.adapters.probe_timer import IDLE, ProbeTimer
from extsock_py.domain import events as ev
from extsock_py.domain.failover import Phase
from extsock_py.domain.policy import MonitorPolicy
from extsock_py.mainloop import MainLoop
from extsock_py.usecases.tunnel_monitor import FAST_LOOK_MIN, TunnelMonitor
from tests.unit.test_hostile_loop import BusyService, Timer
from tests.unit.test_tunnel_monitor import GW1, GW2, World

FAST = MonitorPolicy(enabled=True, local="10.1.0.1", remote="10.2.0.1", probe="icmp",
                     interval=0.03, misses=3)  # fmt: skip


class Scheduler:
    """The OS's side of a sleep on the fake clock: wakes `late` after the time asked."""

    def __init__(self, world: World, late: Callable[[int], float] = lambda n: 0.0) -> None:
        self.world = world
        self.late = late
        self.sleeps = 0

    def __call__(self, timeout: float) -> bool:
        self.world.clock.advance(timeout + self.late(self.sleeps))
        self.sleeps += 1
        return False


def timed_world(
    late: Callable[[int], float] = lambda n: 0.0,
) -> tuple[World, ProbeTimer, list[float]]:
    """A world at 30 ms x 3 whose probe side runs on a ProbeTimer over the fake clock; the
    times the probes left are recorded."""
    w = World(FAST)
    sent_at: list[float] = []
    w.up_on(GW1)
    w.monitor.run_once()  # the loop side starts the tunnel's monitor
    probe = w.probe
    send = probe.send

    def timed_send() -> int:
        sent_at.append(w.clock.monotonic())
        return send()

    probe.send = timed_send  # type: ignore[method-assign]
    timer = ProbeTimer(w.monitor.probe_pass, w.monitor.timer_wake, w.clock.monotonic,
                       wait=Scheduler(w, late))  # fmt: skip
    return w, timer, sent_at


def test_probes_leave_every_30ms_on_the_timer() -> None:
    w, timer, sent_at = timed_world()
    w.probe.answering = True
    start = w.clock.monotonic()
    while w.clock.monotonic() < start + 3.0:
        timer.once()
    gaps = [b - a for a, b in pairwise(sent_at)]
    assert 98 <= len(sent_at) <= 101
    assert max(abs(g - 0.03) for g in gaps) < 1e-9
    assert w.state().phase is Phase.UP and timer.passes == len(sent_at)


def test_a_timer_a_little_late_keeps_the_spread_within_the_lateness() -> None:
    """Woken up to 4 ms late (a loaded host): each probe leaves 0-4 ms after its time,
    the schedule does not drift, and the gateway stays (no stall: < half an interval)."""
    w, timer, sent_at = timed_world(late=lambda n: 0.004 * ((n * 7) % 5) / 4)
    w.probe.answering = True
    start = w.clock.monotonic()
    while w.clock.monotonic() < start + 3.0:
        timer.once()
    gaps = [b - a for a, b in pairwise(sent_at)]
    assert all(0.026 - 1e-9 <= g <= 0.034 + 1e-9 for g in gaps), gaps
    assert statistics.mean(gaps) < 0.0335
    assert w.state().phase is Phase.UP and w.monitor.status()["home"]["stalls"] == 0


def test_the_verdict_comes_from_the_timer_without_the_loop_side() -> None:
    """A silent gateway at 30 ms x 3: dead 90 ms after its last answer, reached by the
    timer's passes alone (the loop side never runs meanwhile)."""
    w, timer, sent_at = timed_world()
    w.probe.answering = True
    for _ in range(10):
        timer.once()
    w.probe.answering = False
    silent_from = sent_at[-1]  # the last probe answered
    while w.state().phase is Phase.UP and w.clock.monotonic() < silent_from + 1.0:
        timer.once()
    assert w.state().phase is Phase.CONNECTING and w.state().gateway == GW2
    dead = w.publisher.of("monitor-dead")
    assert dead and abs(dead[0]["silence"] - 0.09) < 1e-6
    assert abs(w.clock.monotonic() - (silent_from + 0.09)) < 1e-6


def test_the_timer_sleeps_idle_without_a_tunnel_and_wakes_on_a_poke() -> None:
    w = World(FAST)
    slept: list[float] = []
    poke_while_asleep = [False]

    def wait(timeout: float) -> None:
        slept.append(timeout)
        if poke_while_asleep[0]:
            timer.poke()  # a tunnel started while the timer slept

    timer = ProbeTimer(w.monitor.probe_pass, w.monitor.timer_wake, w.clock.monotonic, wait=wait)
    timer.once()
    assert slept == [IDLE] and timer.passes == 0  # nothing due, no poke: no pass
    poke_while_asleep[0] = True
    timer.once()
    assert slept == [IDLE, IDLE] and timer.passes == 1  # the poke: a pass at once


def test_looks_at_the_counters_are_rate_limited_at_30ms() -> None:
    """A list-sas before every 30 ms probe would cost more than the probes: at most one
    every FAST_LOOK_MIN seconds below 100 ms."""
    w = World(FAST)
    w.up_on(GW1)
    w.monitor.run_once()
    w.probe.answering = True
    w.run_for(3.0, step=0.005)
    looks = len(w.charon.commands("list_sas"))
    assert looks <= 3.0 / FAST_LOOK_MIN + 1 and w.probe.sent >= 95


def test_the_verdict_is_posted_not_run_on_the_timers_thread() -> None:
    posted: list[Callable[[], None]] = []
    w = World(FAST)
    w.monitor = TunnelMonitor(
        w.manager, w.charon, w.clock, w.publisher, lambda p: _probe(w), posted.append
    )
    w.up_on(GW1)
    w.monitor.run_once()
    for _ in range(40):
        w.clock.advance(0.005)
        w.monitor.probe_pass()
    assert len(posted) == 1 and w.state().phase is Phase.UP  # not acted on yet
    posted[0]()  # the loop runs it
    outage = w.state().outage
    assert w.state().gateway == GW2 and outage is not None and outage.reason == "monitor"


def _probe(w: World) -> Any:
    from tests.unit.test_tunnel_monitor import FakeProbe

    w.probes.append(FakeProbe())
    return w.probes[-1]


def test_urgent_work_runs_before_the_inbox_and_between_its_items() -> None:
    """The loop's inbox holds 50 items of 10 ms each: a verdict posted with priority runs
    before the next of them, not after the loop's 100 ms budget or the whole inbox."""
    timer = Timer()
    service = BusyService(timer)
    loop = MainLoop(service, time.monotonic, timer=timer)
    for n in range(50):
        loop.post(n)
    ran: list[tuple[float, int]] = []
    loop.submit_urgent(lambda: ran.append((timer.now, service.handled)))
    loop._iterate()
    assert ran == [(0.0, 0)]  # before the first item the loop took
    ran.clear()

    def urgent_from_an_item() -> None:  # posted while an item is being handled
        loop.submit_urgent(lambda: ran.append((timer.now, service.handled)))

    handle = service.handle

    def handle_and_post(item: object) -> None:
        handle(item)
        if service.handled == 12:
            urgent_from_an_item()

    service.handle = handle_and_post  # type: ignore[method-assign]
    loop._iterate()
    assert ran and ran[0][1] == 12  # right after the item under way


def test_an_urgent_verdict_is_run_even_when_it_raises() -> None:
    timer = Timer()
    service = BusyService(timer)
    loop = MainLoop(service, time.monotonic, timer=timer)
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("x")

    loop.submit_urgent(boom)
    loop.submit_urgent(lambda: ran.append("next"))
    loop._iterate()
    assert ran == ["next"]


def test_a_started_tunnel_pokes_the_timer() -> None:
    w = World(FAST)
    pokes: list[int] = []
    w.monitor.schedule_changed = lambda: pokes.append(1)
    w.up_on(GW1)
    w.monitor.run_once()
    assert pokes == [1]
    w.manager.handle("home", ev.Stop())
    w.monitor.run_once()
    assert pokes == [1]


# --- a stall of the path through this host (charon waiting for a CPU) ----------------------


class Delays:
    """charon's summed run_delay, as the scheduler would report it."""

    def __init__(self) -> None:
        self.value = 5.0
        self.reads = 0

    def __call__(self) -> float | None:
        self.reads += 1
        return self.value


def host_world(delays: Delays) -> World:
    w = World(FAST)
    w.monitor = TunnelMonitor(
        w.manager, w.charon, w.clock, w.publisher, lambda p: _probe(w), run_delay=delays
    )
    w.up_on(GW1)
    w.monitor.run_once()
    w.probe.answering = True
    w.run_for(0.3, step=0.005)
    return w


def test_charon_starved_while_the_answers_were_due_is_no_verdict() -> None:
    delays = Delays()
    w = host_world(delays)
    assert delays.reads == 0  # answered on time: charon's delay is never read
    w.probe.answering = False  # the answers are late: charon waits on the run queue
    for _ in range(30):  # 150 ms; charon waits 10 ms of every 5 (two threads)
        w.run_for(0.005, step=0.005)
        delays.value += 0.01
    stalls = w.monitor.status()["home"]["stalls"]
    assert w.state().phase is Phase.UP and isinstance(stalls, int) and stalls >= 1
    assert delays.reads >= 2  # at the first miss, and when the verdict fell due
    w.probe.answering = True  # the answers come back: the tunnel stays
    w.run_for(1.0, step=0.005)
    assert w.state().phase is Phase.UP and w.state().gateway == GW1


def test_a_silent_gateway_with_charon_running_on_time_is_dead_in_90ms() -> None:
    delays = Delays()
    w = host_world(delays)
    w.probe.answering = False
    silent_from = w.clock.monotonic()
    while w.state().phase is Phase.UP and w.clock.monotonic() < silent_from + 1.0:
        w.run_for(0.005, step=0.005)
        delays.value += 0.0001  # a little wait, far below an interval
    assert w.state().gateway == GW2 and w.monitor.status()["home"]["stalls"] == 0
    assert w.clock.monotonic() - silent_from <= 0.09 + 0.005 + 1e-9


def test_a_silent_gateway_is_still_declared_after_a_stall_of_charon() -> None:
    """The stall discounts one window; the gateway stays silent while charon runs on time:
    the verdict falls misses x interval after the discounted one."""
    delays = Delays()
    w = host_world(delays)
    w.probe.answering = False
    silent_from = w.clock.monotonic()
    for _ in range(10):  # 50 ms with charon starved (after the first miss's reading)
        w.run_for(0.005, step=0.005)
        delays.value += 0.02
    while w.state().phase is Phase.UP and w.clock.monotonic() < silent_from + 1.0:
        w.run_for(0.005, step=0.005)
    took = w.clock.monotonic() - silent_from
    assert w.state().gateway == GW2 and 0.15 <= took <= 0.19, took
    dead = w.publisher.of("monitor-dead")
    assert dead and dead[0]["gateway"] == GW1
