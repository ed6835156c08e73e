"""Hostile clients against the main loop (issue 24, findings 3 and 4): no client can stall it.

The daemon is the one `build_app` builds, on the fake charon over the real VICI wire, with a
real SQLite store and the real control socket; only the DNS resolver is a fake, one that
blocks. While 32 readers loop `history` over 10,000 rows and a pushed connection's 16 names
resolve slowly, a gateway dies: the failover takes no longer than the same failover alone
plus 0.5 s, and the watchdog's pings (sent by the loop itself, to a notify socket of the
test's own) never miss their interval. The loop's budget itself is checked on a fake timer.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from extsock_py.adapters.control.client import ControlClient, ControlError
from extsock_py.adapters.resolver import BackgroundResolver
from extsock_py.adapters.state_store import SqliteStateStore
from extsock_py.adapters.worker import BoundedWorker
from extsock_py.app import App, AppSettings, build_app
from extsock_py.mainloop import MainLoop
from tests.fakes import charon_messages as cm
from tests.fakes.fake_charon import FakeCharon
from tests.unit.test_control_support import short_dir, wait_until
from tests.unit.test_daemon_resilience import CONF, GW1, GW2

ROWS = 10_000
READERS = 32
NAMES = tuple(f"gw{n}.slow.test" for n in range(16))
WATCHDOG = 1.0  # WatchdogSec of the test's "unit": the loop pings every half of it
SLACK = 0.5  # what the storm may add to a failover


class SlowNames:
    """A resolver whose every answer waits until the test lets it go (at most 20 s)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.asked: list[str] = []
        self._lock = threading.Lock()

    def resolve(self, name: str) -> tuple[str, ...]:
        with self._lock:
            self.asked.append(name)
        self.release.wait(20.0)
        return ("192.0.2.77",)


class Pings:
    """The notify socket systemd would hold: the time of each WATCHDOG=1."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.times: list[float] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._read, name="test-notify", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if b"WATCHDOG=1" in data.split(b"\n"):
                self.times.append(time.monotonic())

    def since(self, began: float) -> list[float]:
        return [t for t in self.times if t > began]

    def worst_gap(self, since: float, until: float) -> float:
        """The longest time without a ping between `since` and `until`."""
        marks = [since, *(t for t in self.times if since < t < until), until]
        return max(b - a for a, b in pairwise(marks))

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2.0)
        self.sock.close()


@dataclass
class World:
    app: App
    fake: FakeCharon
    socket: Path
    names: SlowNames
    pings: Pings
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        row = self.app.operator.status("home").connections[0]
        return {"phase": row.phase, "active_gateway": row.active_gateway}

    def kill(self, gateway: str) -> float:
        """The tunnel's IKE_SA on `gateway` dies; returns how long until it is up on the
        other gateway."""
        other = GW2 if gateway == GW1 else GW1
        wait_until(lambda: self.status() == {"phase": "up", "active_gateway": gateway}, 10.0)
        uid, sa = next(
            (uid, sa) for uid, (name, sa) in self.fake.sas.items() if name == f"home@{gateway}"
        )
        del self.fake.sas[uid]
        began = time.monotonic()
        self.fake.emit("ike-updown", cm.ike_updown(f"home@{gateway}", sa, up=False))
        wait_until(lambda: self.status()["active_gateway"] == other, 10.0)
        return time.monotonic() - began


def _history_rows(state: Path) -> None:
    with SqliteStateStore(state):  # its schema
        pass
    db = sqlite3.connect(state / "state.db")
    rows = [
        (1_700_000_000.0 + n, f"conn{n % 50}", "192.0.2.1", "192.0.2.2", "dpd", "up", 1.5, 2.0)
        for n in range(ROWS)
    ]
    with db:
        db.executemany(
            "INSERT INTO history (time, connection, from_gw, to_gw, reason, result, duration,"
            " outage) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.close()


@contextmanager
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with short_dir() as d:
        monkeypatch.setenv("NOTIFY_SOCKET", str(d / "notify"))
        monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG * 1_000_000)))
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        pings = Pings(d / "notify")
        conf = tmp_path / "swanctl.conf"
        conf.write_text(CONF)
        _history_rows(tmp_path / "state")
        fake = FakeCharon()
        fake._dir = str(d / "charon")
        Path(fake._dir).mkdir()
        fake.start()
        names = SlowNames()
        settings = AppSettings(
            uri=fake.uri,
            config_file=conf,
            state_dir=tmp_path / "state",
            control_socket=d / "control",
        )
        app = build_app(settings, resolver=names)
        world = World(app, fake, d / "control", names, pings, threading.Thread())

        def run() -> None:
            try:
                app.run()
            except BaseException as exc:  # the test fails on any
                world.errors.append(exc)

        world.thread = threading.Thread(target=run, name="daemon-under-test", daemon=True)
        world.thread.start()
        try:
            assert app.loop.ready.wait(10.0), world.errors
            wait_until(lambda: world.socket.exists(), 5.0)
            yield world
        finally:
            names.release.set()
            app.loop.request_stop()
            world.thread.join(10.0)
            fake.stop()
            pings.close()
        assert not world.thread.is_alive()
        assert not world.errors, world.errors


def _reader(path: Path, stop: threading.Event, tally: dict[str, int], lock: threading.Lock) -> None:
    with ControlClient(path, timeout=30) as client:
        for _ in range(500):  # bounded; the test stops them long before
            if stop.is_set():
                return
            try:
                got = len(client.request("history", limit=ROWS)["records"])
                outcome = "read" if got == ROWS else f"short {got}"
            except ControlError as exc:  # refused (Busy), or not read in time: come back later
                outcome = "later" if "try again later" in str(exc) else str(exc)
            with lock:
                tally[outcome] = tally.get(outcome, 0) + 1


APP_BODY = {
    "remote_addrs": ", ".join(NAMES),
    "local": {"auth": "psk", "id": "app.slow.test"},
    "remote": {"auth": "psk"},
    "children": {"app-net": {"local_ts": ["10.50.0.0/16"], "remote_ts": ["10.9.0.0/16"]}},
}


def test_readers_and_slow_names_stall_neither_a_failover_nor_the_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with daemon(tmp_path, monkeypatch) as world:
        alone = world.kill(GW1)  # the usual time of this failover, on this machine, now
        stop, lock = threading.Event(), threading.Lock()
        tally: dict[str, int] = {}
        readers = [
            threading.Thread(target=_reader, args=(world.socket, stop, tally, lock), daemon=True)
            for _ in range(READERS)
        ]
        storm_began = time.monotonic()
        try:
            for reader in readers:
                reader.start()
            with ControlClient(world.socket, timeout=10) as root:  # 16 names, all slow
                root.request("load", conn="app", body=APP_BODY)
            wait_until(lambda: sum(tally.values()) >= READERS, 20.0)
            assert len(set(world.names.asked)) >= 4  # the resolver's threads are all stuck
            stormy = world.kill(GW2)
            # The storm goes on for a few of the watchdog's intervals.
            wait_until(lambda: len(world.pings.since(storm_began)) >= 5, 10.0)
            storm_ended = time.monotonic()
        finally:
            stop.set()
            for reader in readers:
                reader.join(30.0)
        assert stormy <= alone + SLACK, (alone, stormy, tally)
        assert tally.get("read", 0) >= 1, tally  # readers are served ...
        assert set(tally) <= {"read", "later"}, tally  # ... or told to come back later
        gap = world.pings.worst_gap(storm_began, storm_ended)
        assert gap < WATCHDOG, (gap, tally)
        assert world.app.operator.status("app").connections[0].gateways[0] in NAMES


# --- the loop's budget, on a fake timer ----------------------------------------------------


class Timer:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class BusyService:
    """A service whose every inbox item takes 10 ms of the fake timer; notes when the
    deadlines (due_work) run, by the number of items handled so far."""

    def __init__(self, timer: Timer) -> None:
        self.timer = timer
        self.handled = 0
        self.deadlines_at: list[float] = []

    def open(self, post: Callable[[object], None]) -> None:
        pass

    def start(self) -> None:
        pass

    def wants(self, item: Any) -> bool:
        return True

    def handle(self, item: object) -> None:
        self.timer.now += 0.010
        self.handled += 1

    def reload(self) -> object:
        return None

    def before_wait(self) -> None:
        pass

    def next_wake(self) -> float | None:
        return None

    def due_work(self) -> list[Callable[[], object]]:
        return [lambda: self.deadlines_at.append(self.timer.now)]

    def charon_lost(self, reason: str) -> None:
        pass

    def stop(self) -> None:
        pass


def test_deadlines_and_the_watchdog_run_every_100ms_whatever_the_inbox_holds() -> None:
    """1,000 items of 10 ms each wait in the inbox: the deadlines (and each iteration's
    callbacks: the watchdog's ping) run after every 100 ms of them, not after all."""
    timer = Timer()
    service = BusyService(timer)
    loop = MainLoop(service, time.monotonic, timer=timer)
    pinged_at: list[float] = []
    loop.on_iteration.append(lambda: pinged_at.append(timer.now))
    for n in range(1000):
        loop.post(n)
    while service.handled < 1000:
        loop._iterate()
    times = [0.0, *service.deadlines_at]
    gaps = [b - a for a, b in pairwise(times)]
    assert max(gaps) < 0.100 + 0.010 + 1e-9, gaps  # the budget, and the item under way
    assert len(gaps) >= 90
    assert pinged_at == service.deadlines_at


# --- the bounded workers ------------------------------------------------------------------


def test_a_full_history_worker_refuses_with_a_reason_and_the_loop_never_waits() -> None:
    """History beside the loop: with the worker's threads and queue full, the next reader
    is refused at once (Busy, 'try again later'), and nothing ever ran on the loop."""
    from extsock_py.usecases.operator import Busy, OperatorUsecase

    gate = threading.Event()
    on_loop: list[str] = []

    class Loop:
        def submit(self, work: Callable[[], Any]) -> Future[Any]:
            on_loop.append("work")
            future: Future[Any] = Future()
            future.set_result(work())
            return future

    entered = threading.Event()

    class Store:
        def history(self, **_: Any) -> list[Any]:
            entered.set()
            gate.wait(10.0)
            return []

    worker = BoundedWorker("history-test", threads=1, capacity=2)
    operator = OperatorUsecase(Loop(), None, Store(), background=worker)  # type: ignore[arg-type]
    try:
        results: list[Any] = []
        threads = [
            threading.Thread(target=lambda: results.append(operator.history()), daemon=True)
            for _ in range(3)  # one running, two queued
        ]
        threads[0].start()
        assert entered.wait(5.0)
        for t in threads[1:]:
            t.start()
        wait_until(lambda: worker.waiting == 2)
        with pytest.raises(Busy, match="try again later"):
            operator.history()
        gate.set()
        for t in threads:
            t.join(5.0)
        assert results == [[], [], []]
        assert on_loop == []
    finally:
        gate.set()
        worker.close()


def test_slow_names_cost_the_loop_its_dns_budget_and_come_back_through_its_inbox() -> None:
    """Each name is asked beside the loop, one question per name at a time; the loop waits
    for a fast answer at most FAST_WAIT, and for all the slow ones together at most its
    budget; the answers arrive later as work posted to the loop."""
    from extsock_py.adapters import resolver as r

    names = SlowNames()
    posted: list[Callable[[], object]] = []
    worker = BoundedWorker("dns-test", threads=2, capacity=4)
    resolver = BackgroundResolver(names, worker, posted.append)
    changed: list[str] = []
    resolver.on_change.append(changed.append)
    try:
        for _ in range(3):
            assert resolver.resolve(NAMES[0]) == ()  # asked once, waited for once
        wait_until(lambda: len(names.asked) == 1)
        assert resolver.resolve(NAMES[1]) == ()
        wait_until(lambda: len(names.asked) == 2)  # both threads wait for the resolver
        for name in NAMES[2:]:
            assert resolver.resolve(name) == ()  # four are queued, the rest not asked
        assert r.FAST_WAIT * 0.9 <= resolver.waited < r.WAIT_BURST + 0.05, resolver.waited
        assert names.asked == [NAMES[0], NAMES[1]]
        assert resolver.refused == len(NAMES) - 2 - 4
        names.release.set()
        wait_until(lambda: len(posted) == 6)
        for work in posted:  # the loop runs what came back
            work()
        assert resolver.known(NAMES[0]) == ("192.0.2.77",)
        assert len(changed) == 6
    finally:
        names.release.set()
        worker.close()


def test_a_history_read_under_way_never_holds_the_loops_writes(tmp_path: Path) -> None:
    """History is read on a connection of its own: while a read holds it (however long),
    the loop's writes go through at once."""
    from extsock_py.domain.persisted import SavedConnection

    _history_rows(tmp_path)
    with SqliteStateStore(tmp_path) as store:
        assert len(store.history(limit=ROWS)) == ROWS
        written = threading.Event()

        def write() -> None:
            store.save_connection("home", SavedConnection(phase="up"))
            written.set()

        with store._read_lock:  # a history read under way
            writer = threading.Thread(target=write, daemon=True)
            writer.start()
            assert written.wait(5.0)
        writer.join(5.0)
        assert store.load_connections()["home"].phase == "up"
