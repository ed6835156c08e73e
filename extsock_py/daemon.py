"""The daemon's main loop: one thread owns every decision; others only post work to it.

The event listener thread posts charon's observations, the control socket posts
operator requests (as callables with a future), and signal handlers only set flags
(ExaBGP's rule): the loop acts on all of them between iterations, then delivers due
deadlines to the failover manager.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar

from extsock_py.domain import events as ev
from extsock_py.domain import observations as ob
from extsock_py.domain.config import DesiredConfig
from extsock_py.domain.errors import CharonError, CharonUnreachable, ConfigError
from extsock_py.domain.notices import NoticeKind
from extsock_py.interfaces.ports import Clock, EventPublisher, SyncedCharon
from extsock_py.usecases.config_usecase import ConfigUsecase, ReloadReport
from extsock_py.usecases.event_usecase import EventUsecase
from extsock_py.usecases.failover_manager import FailoverManager
from extsock_py.usecases.resync import reconcile, resync
from extsock_py.usecases.takeover import Takeover

log = logging.getLogger("extsock.daemon")

T = TypeVar("T")
_BATCH = 1000  # items handled per loop iteration at most
_POLL = 0.2  # longest sleep of the loop: bounds how late a signal flag is seen
_RECONNECT_FIRST = 0.05  # first pause before the command session is opened again
_RECONNECT_MAX = 1.0  # longest pause between attempts while charon is away
_RECONCILE_EVERY = 30.0  # seconds between checks that tunnels believed up are in charon
_WAKE = object()  # put in the inbox to wake the loop at once (it then sees the stop flag)


class ManagedCharon(SyncedCharon, Protocol):
    def connect(self) -> None: ...

    def close(self) -> None: ...


class Listener(Protocol):
    def start(self) -> None: ...

    def wait_ready(self, timeout: float) -> bool: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class DaemonOptions:
    config_file: Path
    down_on_exit: bool = False


class Daemon:
    """Wires the usecases to charon and runs them until asked to stop."""

    def __init__(
        self,
        options: DaemonOptions,
        charon: ManagedCharon,
        make_listener: Callable[[Callable[[ob.Observation], None]], Listener],
        read_config: Callable[[Path], DesiredConfig],
        clock: Clock,
        publisher: EventPublisher,
        manager: FailoverManager,
    ) -> None:
        self.options = options
        self.charon = charon
        self.clock = clock
        self.publisher = publisher
        self.manager = manager
        self.config = ConfigUsecase(charon, manager)
        self.events = EventUsecase(
            manager.is_managed, manager.handle, publisher, connections=manager, sas=manager.sas
        )
        self.takeover = Takeover(charon, manager, clock)
        self._read_config = read_config
        self._make_listener = make_listener
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.charon_reachable = False
        self.charon_release: ob.CharonRelease | None = None  # as the event session last read it
        self._listener: Listener | None = None
        self._reconnect_at: float | None = None  # when to open the command session again
        self._reconnect_pause = _RECONNECT_FIRST
        self._restore_pending = False  # the persisted state waits for charon's first answer
        self._reconcile_at = clock.monotonic() + _RECONCILE_EVERY
        self.ready = threading.Event()
        self.on_ready: list[Callable[[], None]] = []
        self.on_iteration: list[Callable[[], None]] = []
        self.wakers: list[Callable[[], float | None]] = []  # more deadlines the loop wakes for
        self.on_reload: list[Callable[[bool], None]] = []  # False before, True after
        self.on_stopping: list[Callable[[], None]] = []
        # Applied to every config read (start, reload): e.g. connections pushed by clients.
        self.config_overlays: list[Callable[[DesiredConfig], DesiredConfig]] = []

    # --- what other threads may call ------------------------------------------------------

    def submit(self, work: Callable[[], T]) -> Future[T]:
        """Run `work` on the main loop; the future holds its result or exception."""
        future: Future[T] = Future()
        self._inbox.put((work, future))
        return future

    def post(self, observation: ob.Observation) -> None:
        if self.events.wants(observation):
            self._inbox.put(observation)

    def request_stop(self) -> None:
        """Stop the loop (from another thread): it wakes at once rather than at its next poll.
        Signal handlers only set the flag: a queue's lock is no place for them."""
        self._stop.set()
        self._inbox.put(_WAKE)

    def request_reload(self) -> None:
        self._reload.set()

    def read_config(self) -> DesiredConfig:
        """The config file, with every overlay applied; raises ConfigError."""
        desired = self._read_config(self.options.config_file)
        for overlay in self.config_overlays:
            desired = overlay(desired)
        return desired

    def install_signal_handlers(self) -> None:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            self._stop.set()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self._reload.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """Read the config (a ConfigError stops here, before charon is touched), then loop."""
        desired = self.read_config()
        listener = self._make_listener(self.post)
        self._listener = listener
        try:
            self.charon.connect()
            self.charon_reachable = True
        except CharonUnreachable as exc:  # started before charon (boot): wait for it
            log.warning("charon not reachable yet: %s; waiting for it", exc)
            self.publisher.publish(NoticeKind.CHARON_LOST, {"reason": str(exc)})
            self.config.current = desired
            self._restore_pending = True
            self._reconnect_at = self.clock.monotonic()
        listener.start()
        if self.charon_reachable and not listener.wait_ready(5.0):
            log.warning("the event stream is not subscribed yet; going on")
        try:
            if self.charon_reachable:
                self._bring_up(desired, restore=True)
            self.ready.set()
            for callback in self.on_ready:
                callback()
            while not self._stop.is_set():
                self._iterate()
        finally:
            self._shutdown(listener)

    def _bring_up(self, desired: DesiredConfig, restore: bool = False) -> None:
        report = self.config.apply(desired, start=False)
        if restore:  # extsock (re)started: what the last run persisted comes back first
            restored = self.manager.restore_persisted(report.managed)
            if restored:
                log.info("restored the persisted state of %s", ", ".join(restored))
        outcome = resync(self.charon, self.manager, report.managed)
        for sa in outcome.adopted_sas.values():  # operators see charon's state at once
            self.events.track(sa)
        log.info(
            "loaded %d managed and %d plain connections from %s; adopted %d, started %d",
            len(report.managed),
            len(report.plain),
            desired.source,
            len(outcome.adopted),
            len(outcome.started),
        )
        self.takeover.scan(report.managed)

    def _iterate(self) -> None:
        if self._reload.is_set():
            self._reload.clear()
            for notify in self.on_reload:
                notify(False)
            self._guarded(self._reload_quietly)
            for notify in self.on_reload:
                notify(True)
        if not self.charon_reachable:
            self._guarded(self._try_reconnect)
        timeout = _POLL
        now = self.clock.monotonic()
        if self.charon_reachable:
            wakes = [
                self.manager.next_wake(),
                self.takeover.next_wake(),
                *(waker() for waker in self.wakers),
            ]
            due = [t for t in wakes if t is not None]
            if due:
                timeout = min(_POLL, max(0.0, min(due) - now))
        elif self._reconnect_at is not None:
            timeout = min(_POLL, max(0.01, self._reconnect_at - now))
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            item = None
        budget = _BATCH  # bound the work per iteration so deadlines and flags stay timely
        while item is not None:
            if item is not _WAKE:
                self._guarded(self._dispatch, item)
            budget -= 1
            if budget == 0:  # checked before taking the next item, which would be lost
                break
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                item = None
        if self.charon_reachable:  # deadlines wait while charon is away: no command could run
            self._guarded(self.manager.tick)
            self._guarded(self.takeover.tick)
            if now >= self._reconcile_at:
                self._reconcile_at = now + _RECONCILE_EVERY
                self._guarded(reconcile, self.charon, self.manager, self.events.sync)
                # e.g. `swanctl --load-all` of a connection that starts nothing by itself
                self._guarded(self.takeover.scan, self.manager.names())
        for callback in self.on_iteration:
            callback()

    def _guarded(self, work: Callable[..., object], *args: Any) -> None:
        try:
            work(*args)
        except CharonUnreachable as exc:
            self._charon_lost(str(exc))
        except Exception:
            log.exception("unexpected error; the daemon keeps running")

    def _reload_quietly(self) -> None:
        self.reload()

    def _dispatch(self, item: Any) -> None:
        if isinstance(item, tuple):
            work, future = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(work())
                except BaseException as exc:
                    future.set_exception(exc)
                    if isinstance(exc, CharonUnreachable):
                        raise
            return
        match item:
            case ob.CharonLost(reason):
                self._charon_lost(reason)
            case ob.CharonBack():
                if not self.charon_reachable:  # else the loop reconnected first: done already
                    self._charon_back()
            case ob.CharonRelease():
                self.charon_release = item
            case ob.IkeUpdown(sa, True) | ob.ChildUpdown(sa, _, True) if self.manager.is_managed(
                sa.name
            ):
                self.takeover.noticed(sa.name)  # named as written: loaded outside extsock
            case _:
                self._observe(item)

    def _observe(self, item: Any) -> None:
        """One of charon's events; whatever is wrong with it is logged and skipped."""
        try:
            self.events.observe(item)
        except CharonUnreachable:
            raise
        except Exception:
            self.events.skipped += 1
            log.exception("skipped an event that could not be handled: %.200r", item)

    # --- charon going and coming back -------------------------------------------------------

    def _charon_lost(self, reason: str) -> None:
        if self.charon_reachable:
            log.warning("charon unreachable: %s; waiting for it to come back", reason)
            self.publisher.publish(NoticeKind.CHARON_LOST, {"reason": reason})
            self._reconnect_pause = _RECONNECT_FIRST
            self._reconnect_at = self.clock.monotonic() + self._reconnect_pause
        self.charon_reachable = False
        self.charon.close()  # a broken session is of no use; the next attempt opens a new one

    def _try_reconnect(self) -> None:
        """While charon is away: open the command session again once the events flow.

        The event listener reconnects on its own and posts CharonBack; this covers the
        command session breaking alone (the event stream never noticed) and a CharonBack
        whose reconnect failed. Nothing is initiated before the listener is subscribed
        again, or the outcome's events would be missed.
        """
        now = self.clock.monotonic()
        if self._reconnect_at is None or now < self._reconnect_at:
            return  # None: no loss was seen (nothing to redo), or not yet time
        self._reconnect_pause = min(_RECONNECT_MAX, self._reconnect_pause * 2)
        self._reconnect_at = now + self._reconnect_pause
        if self._listener is not None and not self._listener.wait_ready(0):
            return
        self._charon_back()

    def _charon_back(self) -> None:
        self.charon.close()
        self.charon.connect()  # CharonUnreachable: still away, the loop tries again
        log.info("charon is back: reloading connections and credentials")
        self._reconnect_at = None
        self.publisher.publish(NoticeKind.CHARON_BACK, {})
        self.charon_reachable = True
        self.manager.charon_restarted()
        if self.config.current is not None:
            restore, self._restore_pending = self._restore_pending, False
            self._bring_up(self.config.current, restore=restore)

    # --- reload and shutdown ----------------------------------------------------------------

    def reload(self) -> ReloadReport:
        """Re-read the config file; a bad file is reported and the running config kept."""
        try:
            desired = self.read_config()
        except ConfigError as exc:
            log.error("reload refused, running config kept: %s", exc)
            self.publisher.publish(NoticeKind.RELOAD_FAILED, {"error": str(exc)})
            return ReloadReport(error=str(exc))
        if not self.charon_reachable:  # applied when charon is back
            log.warning("charon unreachable: %s is applied once it is back", desired.source)
            self.config.current = desired
            return ReloadReport(deferred=True)
        try:
            report = self.config.apply(desired, start=True)
        except CharonUnreachable:
            self.config.current = desired  # charon went away meanwhile: applied when back
            raise
        log.info(
            "reloaded %s: %d managed, %d plain, %d removed",
            desired.source,
            len(report.managed),
            len(report.plain),
            len(report.removed),
        )
        self.takeover.scan(report.managed)
        self.publisher.publish(NoticeKind.RELOADED, {"managed": report.managed})
        return ReloadReport(applied=report)

    def _shutdown(self, listener: Listener) -> None:
        for callback in self.on_stopping:
            callback()
        if self.options.down_on_exit and self.charon_reachable:
            for name in self.manager.names():
                try:
                    self.manager.handle(name, ev.Stop())
                except CharonError as exc:
                    log.warning("%s: could not bring down: %s", name, exc)
        listener.stop()
        self.charon.close()
        log.info(
            "stopped%s",
            "; tunnels brought down" if self.options.down_on_exit else "; tunnels left up",
        )
