"""The main loop's own behaviour: it wakes at once when asked to stop, and drives a service
it knows only through the LoopService protocol."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from extsock_py import mainloop as daemon_module
from extsock_py.domain.errors import CharonUnreachable
from extsock_py.mainloop import MainLoop
from tests.unit.test_control_support import running_daemon


def test_request_stop_wakes_the_loop_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # With a poll this long, a loop that only noticed the flag at its next poll would
    # still be asleep when the join below gives up (no deadline of the harness is sooner).
    monkeypatch.setattr(daemon_module, "_POLL", 60.0)
    with running_daemon() as harness:
        harness.on_loop(lambda: None)  # the loop is in its sleep now, or about to be
        started = time.monotonic()
        harness.daemon.request_stop()
        assert harness.thread is not None
        harness.thread.join(timeout=2.5)
        assert not harness.thread.is_alive()
        assert time.monotonic() - started < 2.5


# --- the loop on a fake service: what it does, knowing the service only by its protocol -----


class FakeService:
    """A LoopService that records what the loop asked of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.handled: list[object] = []
        self.lost: list[str] = []
        self.fail_next_tick: Exception | None = None

    def open(self, post: Callable[[object], None]) -> None:
        self.calls.append("open")

    def start(self) -> None:
        self.calls.append("start")

    def wants(self, item: Any) -> bool:
        return bool(item != "unwanted")

    def handle(self, item: object) -> None:
        self.handled.append(item)

    def reload(self) -> object:
        self.calls.append("reload")
        return None

    def before_wait(self) -> None:
        pass

    def next_wake(self) -> float | None:
        return None

    def due_work(self) -> list[Callable[[], object]]:
        failure, self.fail_next_tick = self.fail_next_tick, None
        if failure is None:
            return []

        def fail() -> object:
            raise failure

        return [fail, lambda: self.calls.append("after the failure")]

    def charon_lost(self, reason: str) -> None:
        self.lost.append(reason)

    def stop(self) -> None:
        self.calls.append("stop")


@contextmanager
def running(service: FakeService) -> Iterator[MainLoop[FakeService]]:
    loop = MainLoop(service, time.monotonic)
    thread = threading.Thread(target=loop.run, name="loop-under-test", daemon=True)
    thread.start()
    assert loop.ready.wait(5.0)
    try:
        yield loop
    finally:
        loop.request_stop()
        thread.join(5.0)
        assert not thread.is_alive()


def test_the_loop_drives_its_service_through_the_protocol() -> None:
    service = FakeService()
    reloads: list[bool] = []
    with running(service) as loop:
        loop.on_reload.append(reloads.append)
        loop.post("wanted")
        loop.post("unwanted")  # dropped before the inbox
        assert loop.submit(lambda: 42).result(5.0) == 42
        assert service.handled == ["wanted"]
        loop.request_reload()
        loop.submit(lambda: None).result(5.0)  # an iteration later the flag was seen
        loop.submit(lambda: None).result(5.0)
    assert service.calls == ["open", "start", "reload", "stop"]
    assert reloads == [False, True]


def test_charon_unreachable_anywhere_is_reported_to_the_service_once() -> None:
    service = FakeService()
    with running(service) as loop:
        future = loop.submit(lambda: (_ for _ in ()).throw(CharonUnreachable("gone")))
        with pytest.raises(CharonUnreachable):
            future.result(5.0)
        service.fail_next_tick = CharonUnreachable("gone again")
        loop.submit(lambda: None).result(5.0)
        loop.submit(lambda: None).result(5.0)
        assert service.lost == ["gone", "gone again"]
        # each due item is guarded on its own: the one after a failure still runs
        assert "after the failure" in service.calls


def test_a_failing_open_stops_before_the_loop_and_without_stop() -> None:
    class Refusing(FakeService):
        def open(self, post: Callable[[object], None]) -> None:
            raise ValueError("bad config")

    service = Refusing()
    loop = MainLoop(service, time.monotonic)
    with pytest.raises(ValueError, match="bad config"):
        loop.run()
    assert service.calls == []
    assert not loop.ready.is_set()


def _wait(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_reload_and_signals_wake_the_loop_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop sleeps up to _POLL when nothing is due: a reload asked for, SIGHUP and
    SIGTERM must not wait for it (here an hour)."""
    import os
    import signal

    monkeypatch.setattr(daemon_module, "_POLL", 3600.0)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    service = FakeService()
    loop = MainLoop(service, time.monotonic)
    loop.install_signal_handlers()  # this test runs on the main thread, as the daemon does
    thread = threading.Thread(target=loop.run, name="loop-under-test", daemon=True)
    try:
        thread.start()
        assert loop.ready.wait(5.0)
        loop.submit(lambda: None).result(5.0)  # the loop is in its sleep now, or about to be
        loop.request_reload()
        assert _wait(lambda: service.calls.count("reload") == 1)
        os.kill(os.getpid(), signal.SIGHUP)
        assert _wait(lambda: service.calls.count("reload") == 2)
        os.kill(os.getpid(), signal.SIGTERM)
        thread.join(2.0)
        assert not thread.is_alive()
        assert service.calls[-1] == "stop"
    finally:
        loop.request_stop()
        thread.join(5.0)
        for sig, handler in saved.items():
            signal.signal(sig, handler)
