"""ViciCharonPool: per-connection command lanes over several VICI sessions, against the fake
charon (real VICI framing). The test thread plays the daemon's main loop: what the pool
posts is queued here and run by `loop.run()`."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from functools import partial
from typing import Any

import pytest

from extsock_py.adapters.vici.pool import ViciCharonPool
from extsock_py.domain.errors import CharonError, CharonUnreachable
from extsock_py.interfaces.ports import CharonPort
from tests.fakes.fake_charon import FakeCharon

WAIT = 5.0  # bound of every wait; the tests finish in well under a second each


def _result(outcome: Future[None]) -> None:
    outcome.result()


def _ignore(outcome: Future[None]) -> None:
    pass


class Loop:
    """The main loop's inbox, as far as the pool sees it."""

    def __init__(self) -> None:
        self.inbox: queue.Queue[Callable[[], None]] = queue.Queue()

    def post(self, work: Callable[[], None]) -> None:
        self.inbox.put(work)

    def run(self, count: int) -> None:
        """Run `count` posted callables, each as the daemon does (exceptions propagate)."""
        for _ in range(count):
            self.inbox.get(timeout=WAIT)()


class Outcomes:
    """`done` callbacks that record what they saw, and on which thread they ran."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.threads: set[str] = set()

    def done(self, key: str) -> Callable[[Future[Any]], None]:
        def record(outcome: Future[Any]) -> None:
            self.threads.add(threading.current_thread().name)
            self.seen.append((key, outcome.result()))

        return record


@pytest.fixture
def fake() -> Iterator[FakeCharon]:
    with FakeCharon() as f:
        yield f


@pytest.fixture
def loop() -> Loop:
    return Loop()


@pytest.fixture
def pool(fake: FakeCharon, loop: Loop) -> Iterator[ViciCharonPool]:
    p = ViciCharonPool(fake.uri, lanes=3, post=loop.post, connect_timeout=0.5, command_timeout=2.0)
    p.connect()
    yield p
    p.close()
    p.stop()


def test_outcomes_come_back_on_the_main_loop(pool: ViciCharonPool, loop: Loop) -> None:
    outcomes = Outcomes()
    pool.submit("a", lambda charon: charon.version()["daemon"], outcomes.done("a"))
    loop.run(1)
    assert outcomes.seen == [("a", "charon")]
    assert outcomes.threads == {threading.current_thread().name}


def test_concurrency_is_bounded_by_the_pool_size(
    pool: ViciCharonPool, loop: Loop, fake: FakeCharon
) -> None:
    gate = threading.Event()
    lock = threading.Condition()
    running = [0, 0]  # now, most at once

    def work(charon: CharonPort) -> None:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
            lock.notify_all()
        gate.wait(WAIT)
        charon.version()
        with lock:
            running[0] -= 1

    outcomes = Outcomes()
    for k in range(12):
        pool.submit(f"conn{k}", work, outcomes.done(f"conn{k}"))
    with lock:
        assert lock.wait_for(lambda: running[0] == 3, WAIT)
    assert pool.lanes_open == 3
    gate.set()
    loop.run(12)
    assert running[1] == 3
    assert len(outcomes.seen) == 12
    assert fake.client_count == 1 + 3  # the main session and the three lanes


def test_a_connection_s_work_runs_in_order_while_others_pass(
    pool: ViciCharonPool, loop: Loop, fake: FakeCharon
) -> None:
    gate = threading.Event()
    order: list[str] = []

    def step(name: str, wait: bool = False) -> Callable[[CharonPort], None]:
        def work(charon: CharonPort) -> None:
            if wait:
                gate.wait(WAIT)
            charon.version()
            order.append(name)

        return work

    outcomes = Outcomes()
    pool.submit("a", step("a1", wait=True), outcomes.done("a"))
    pool.submit("a", step("a2"), outcomes.done("a"))
    pool.submit("b", step("b1"), outcomes.done("b"))
    loop.run(1)  # b is not held up behind a's first command
    assert order == ["b1"]
    gate.set()
    loop.run(2)
    assert order == ["b1", "a1", "a2"]


def test_load_before_initiate_and_terminate_before_unload_per_connection(
    pool: ViciCharonPool, loop: Loop, fake: FakeCharon
) -> None:
    body = {"remote_addrs": ["10.99.1.2"], "children": {"net": {"local_ts": ["10.1.0.0/24"]}}}
    names = [f"c{k}@10.99.1.2" for k in range(40)]

    def commands(n: str) -> list[Callable[[CharonPort], None]]:
        return [
            lambda c: c.load_conn(n, body),
            lambda c: c.initiate(n, "net"),
            lambda c: c.terminate(ike=n),
            lambda c: c.unload_conn(n),
        ]

    for name in names:
        for command in commands(name):
            pool.submit(name, command, _result)
    loop.run(4 * len(names))
    # a lane sends cleanups without waiting for their answers: the last may still be on its way
    assert fake.wait_for(lambda: len(fake.commands("unload-conn")) == len(names), WAIT)
    seen: dict[str, list[str]] = {}
    for received in fake.commands():
        message = received.message
        raw = message.get("ike") or message.get("name") or next(iter(message), None)
        conn = raw.decode() if isinstance(raw, bytes) else str(raw)
        if conn in names:
            seen.setdefault(conn, []).append(received.command)
    assert {n: seen.get(n) for n in names} == {
        n: ["load-conn", "initiate", "terminate", "unload-conn"] for n in names
    }


def test_a_refusal_is_the_outcome_of_that_command(
    pool: ViciCharonPool, loop: Loop, fake: FakeCharon
) -> None:
    fake.fail["initiate"] = "no config named x"
    errors: list[BaseException | None] = []
    pool.submit("x", lambda c: c.initiate("x", None), lambda f: errors.append(f.exception()))
    loop.run(1)
    assert isinstance(errors[0], CharonError)
    assert "no config named x" in str(errors[0])


def test_a_session_lost_mid_storm_reaches_the_loop_then_the_pool_starts_afresh(
    pool: ViciCharonPool, loop: Loop, fake: FakeCharon
) -> None:
    gate = threading.Event()

    def work(charon: CharonPort) -> None:
        gate.wait(WAIT)
        charon.version()

    for k in range(6):
        pool.submit(f"conn{k}", work, lambda f: f.result())
    assert fake.wait_for(lambda: fake.client_count == 4, WAIT)
    fake.close_clients()  # every session breaks while the storm's commands are under way
    gate.set()
    with pytest.raises(CharonUnreachable):
        loop.run(1)  # the daemon's loop: charon lost -> close(), then charon_back later
    pool.close()  # what the daemon does on CharonLost: the rest is dropped, not delivered
    with pytest.raises(queue.Empty):
        while True:  # stale outcomes, posted before close() was seen, are swallowed
            loop.inbox.get(timeout=0.3)()
    pool.connect()
    outcomes = Outcomes()
    pool.submit("after", lambda c: c.version()["daemon"], outcomes.done("after"))
    loop.run(1)
    assert outcomes.seen == [("after", "charon")]


def test_lanes_reconnect_after_a_charon_restart(
    pool: ViciCharonPool, loop: Loop, fake: FakeCharon
) -> None:
    outcomes = Outcomes()
    pool.submit("a", lambda c: c.version()["daemon"], outcomes.done("a"))
    loop.run(1)
    fake.restart()
    pool.close()  # the daemon: CharonLost, then charon_back
    pool.connect()
    for k in range(5):
        pool.submit(f"c{k}", lambda c: c.version()["daemon"], outcomes.done(f"c{k}"))
    loop.run(5)
    assert [v for _, v in outcomes.seen] == ["charon"] * 6
    assert fake.client_count <= 1 + 3


def test_work_queued_before_a_close_is_dropped_unless_the_daemon_stops(
    fake: FakeCharon, loop: Loop
) -> None:
    for stopping, expected in ((False, 0), (True, 4)):
        p = ViciCharonPool(fake.uri, lanes=2, post=loop.post, command_timeout=2.0)
        p.connect()
        gate = threading.Event()
        ran: list[int] = []

        def work(
            charon: CharonPort, k: int, gate: threading.Event = gate, ran: list[int] = ran
        ) -> None:
            gate.wait(WAIT)
            ran.append(k)

        for k in range(4):
            p.submit("one", partial(work, k=k), _ignore)
        if stopping:
            p.stopping()
            threading.Timer(0.05, gate.set).start()
            p.close()  # waits (bounded) for the queue: e.g. --down-on-exit's terminates
        else:
            p.close()  # charon lost: the first may be under way; the rest never runs
            gate.set()
        p.stop()
        assert len(ran) == expected or (not stopping and len(ran) <= 1)
        assert ran == sorted(ran)


def test_submit_needs_the_loop(fake: FakeCharon) -> None:
    p = ViciCharonPool(fake.uri, lanes=1)
    with pytest.raises(RuntimeError):
        p.submit("a", lambda c: None, lambda f: None)
    with pytest.raises(ValueError, match="1-64"):
        ViciCharonPool(fake.uri, lanes=0)


def test_a_lane_that_cannot_reconnect_at_once_tries_again(
    pool: ViciCharonPool, loop: Loop, fake: FakeCharon
) -> None:
    """A busy charon refuses new sessions for a moment (a full listen backlog): the lane
    tries again, bounded, instead of taking charon as lost at the first refusal."""
    pool.close()  # the lanes' sessions are gone; they open again on their next work
    fake.stop()
    outcomes = Outcomes()
    pool.submit("a", lambda c: c.version()["daemon"], outcomes.done("a"))
    threading.Timer(0.1, fake.start).start()
    loop.run(1)
    assert outcomes.seen == [("a", "charon")]


def test_connect_opens_every_lane_before_any_storm(fake: FakeCharon, loop: Loop) -> None:
    p = ViciCharonPool(fake.uri, lanes=4, post=loop.post)
    try:
        p.connect()
        assert p.lanes_open == 4
        assert fake.wait_for(lambda: fake.client_count == 5, WAIT)
    finally:
        p.close()
        p.stop()
