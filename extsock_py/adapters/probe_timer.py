"""The tunnel monitor's timer: a thread of its own that runs the probe side on schedule.

The probes of a 30 ms monitor must leave within a few ms of their time, and a verdict must
not wait for whatever the main loop is doing (a flood of charon events, a slow list-sas, a
history read being answered). So the probe side (`TunnelMonitor.probe_pass`: drain the
sockets, tick the pure core, send) runs here, woken at `wake()` (the next probe or
dead-line) or at once by `poke()` (a tunnel started); the verdict it reaches is posted to
the main loop with priority. The thread only sleeps on an Event with a timeout: nothing it
does blocks (the sockets are non-blocking), and it never touches charon.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("extsock.monitor")
IDLE = 1.0  # longest sleep when nothing is due (no tunnel probed: woken by poke anyway)


class ProbeTimer:
    def __init__(
        self,
        run: Callable[[], None],
        wake: Callable[[], float | None],
        monotonic: Callable[[], float],
        name: str = "extsock-probes",
        wait: Callable[[float], object] | None = None,
    ) -> None:
        self._run = run
        self._wake = wake
        self._monotonic = monotonic
        self._name = name
        self._event = threading.Event()
        # How the thread sleeps (tests: a fake clock's advance); a poke ends it early.
        self._wait: Callable[[float], object] = wait or self._event.wait
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """The schedule changed: recompute the next wake-up now (any thread)."""
        self._event.set()

    def close(self) -> None:
        self._stop.set()
        self._event.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.once()

    def once(self) -> None:
        """One turn of the thread: sleep until the next wake-up (or a poke), then run the
        probe side if it is due (the thread's loop; tests call it on a fake clock)."""
        self._event.clear()  # a poke from now on ends the wait below
        due = self._wake()
        timeout = IDLE if due is None else min(IDLE, due - self._monotonic())
        if timeout > 0:
            self._wait(timeout)
        if self._stop.is_set():
            return
        if (due is not None and self._monotonic() >= due) or self._event.is_set():
            self.passes += 1
            try:
                self._run()
            except Exception:  # probe_pass guards itself; this is the last resort
                log.exception("probe timer: unexpected error; it keeps running")
