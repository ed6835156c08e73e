"""The daemon's main loop: one thread owns every decision; others only post work to it.

The event listener thread posts charon's observations, the control socket posts
operator requests (as callables with a future), and signal handlers only set flags and
wake it (ExaBGP's rule): the loop acts on all of them between iterations, giving its inbox at
most BUDGET seconds a turn, then lets its service deliver due deadlines. Nothing slow runs
here: history reads and DNS run beside the loop, in bounded workers, and their results come
back through the inbox. What the daemon does lives in the service
(`usecases/daemon_service.py`); this module knows it only through `LoopService`.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import FrameType
from typing import Any, Generic, Protocol, TypeVar

from extsock_py.domain.errors import CharonUnreachable

log = logging.getLogger("extsock.daemon")

T = TypeVar("T")
# Time one iteration may spend on its inbox before it runs the deadlines and the callbacks
# of each iteration (the watchdog's ping among them), whatever the inbox still holds: no
# flood of requests or events keeps a deadline or the watchdog waiting longer than this,
# plus the one item under way. Real time (`timer`), not the service's clock.
BUDGET = 0.1
# Longest sleep of the loop. Nothing waits for it: work, stop and reload requests and
# signals all wake the loop through its inbox, and deadlines come from `next_wake` and the
# wakers. Each idle wake-up costs on a busy machine (200 tunnels idle: 5 a second were
# ~0.06 % of a core), so it is long.
_POLL = 1.0
_WAKE = object()  # put in the inbox to wake the loop at once (it then sees its flags)


class LoopService(Protocol):
    """What the main loop drives. Every call runs on the loop's thread."""

    def open(self, post: Callable[[object], None]) -> None:
        """Read the config (a ConfigError stops the daemon here, before charon is touched),
        reach charon, start the event listener, which delivers to `post`."""

    def start(self) -> None:
        """Bring the connections up (`stop` follows, whatever happens)."""

    def wants(self, item: Any) -> bool:
        """Whether an observation posted from another thread is worth the inbox."""

    def handle(self, item: object) -> None:
        """One observation from the inbox."""

    def reload(self) -> object:
        """The config file, read again (SIGHUP)."""

    def before_wait(self) -> None:
        """Each iteration before the loop sleeps (e.g. reconnect to charon when due)."""

    def next_wake(self) -> float | None:
        """The monotonic time of the service's next deadline (None: none)."""

    def due_work(self) -> list[Callable[[], object]]:
        """Each iteration after the inbox: the work now due (deadlines), each run and
        guarded on its own."""

    def charon_lost(self, reason: str) -> None:
        """Some work raised CharonUnreachable."""

    def stop(self) -> None:
        """The loop ended: bring down what the options ask, close the sessions."""


S = TypeVar("S", bound=LoopService)


class MainLoop(Generic[S]):
    """Runs `service` on one thread until asked to stop; safe to post to from any thread."""

    def __init__(
        self,
        service: S,
        monotonic: Callable[[], float],
        *,
        budget: float = BUDGET,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self._monotonic = monotonic
        self._budget = budget
        self._timer = timer
        # SimpleQueue: its put() may be called from a signal handler (reentrant), which
        # queue.Queue's lock forbids.
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Work that must not wait behind the inbox (the tunnel monitor's verdicts): run as
        # soon as the loop is between two pieces of work, before anything else waiting.
        self._urgent: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.ready = threading.Event()
        self.on_ready: list[Callable[[], None]] = []
        self.on_iteration: list[Callable[[], None]] = []
        self.wakers: list[Callable[[], float | None]] = []  # more deadlines the loop wakes for
        self.on_reload: list[Callable[[bool], None]] = []  # False before, True after
        self.on_stopping: list[Callable[[], None]] = []

    # --- what other threads may call ------------------------------------------------------

    def submit(self, work: Callable[[], T]) -> Future[T]:
        """Run `work` on the main loop; the future holds its result or exception."""
        future: Future[T] = Future()
        self._inbox.put((work, future))
        return future

    def submit_urgent(self, work: Callable[[], object]) -> None:
        """Run `work` on the main loop before anything else waiting there (between two
        items of its inbox at the latest); its result is dropped, its errors logged."""
        self._urgent.put(work)
        self._inbox.put(_WAKE)

    def post(self, item: object) -> None:
        if self.service.wants(item):
            self._inbox.put(item)

    def request_stop(self) -> None:
        """Stop the loop (from another thread): it wakes at once rather than at its next poll.
        Signal handlers set the flag and wake the loop the same way."""
        self._stop.set()
        self._inbox.put(_WAKE)

    def request_reload(self) -> None:
        self._reload.set()
        self._inbox.put(_WAKE)

    def install_signal_handlers(self) -> None:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            self._stop.set()
            self._inbox.put(_WAKE)  # SimpleQueue.put is reentrant: safe in a handler

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self._reload.set()
            self._inbox.put(_WAKE)

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> None:
        """Start the service (a ConfigError stops here, before charon is touched), then loop."""
        self.service.open(self.post)
        try:
            self.service.start()
            self.ready.set()
            for callback in self.on_ready:
                callback()
            while not self._stop.is_set():
                self._iterate()
        finally:
            self._shutdown()

    def _iterate(self) -> None:
        if self._reload.is_set():
            self._reload.clear()
            for notify in self.on_reload:
                notify(False)
            self._guarded(self.service.reload)
            for notify in self.on_reload:
                notify(True)
        self._guarded(self.service.before_wait)
        wakes = [self.service.next_wake(), *(waker() for waker in self.wakers)]
        due = [t for t in wakes if t is not None]
        timeout = _POLL
        if due:
            timeout = min(_POLL, max(0.0, min(due) - self._monotonic()))
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            item = None
        # Bound the inbox's share of the iteration so deadlines, flags and the watchdog's
        # ping stay timely; what is left waits for the next iteration, in order.
        ends = self._timer() + self._budget
        while item is not None:
            self._run_urgent()
            if item is not _WAKE:
                self._guarded(self._dispatch, item)
            if self._timer() >= ends:  # checked before taking the next item, which would be lost
                break
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                item = None
        self._run_urgent()
        for work in self.service.due_work():
            self._run_urgent()
            self._guarded(work)
        for callback in self.on_iteration:
            self._run_urgent()
            callback()

    def _run_urgent(self) -> None:
        if self._urgent.empty():  # the common case, without raising queue.Empty
            return
        for _ in range(1000):  # bounded: at most one verdict per tunnel comes at a time
            try:
                work = self._urgent.get_nowait()
            except queue.Empty:
                return
            self._guarded(work)

    def _guarded(self, work: Callable[..., object], *args: Any) -> None:
        try:
            work(*args)
        except CharonUnreachable as exc:
            self.service.charon_lost(str(exc))
        except Exception:
            log.exception("unexpected error; the daemon keeps running")

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
        self.service.handle(item)

    def _shutdown(self) -> None:
        for callback in self.on_stopping:
            callback()
        self.service.stop()
