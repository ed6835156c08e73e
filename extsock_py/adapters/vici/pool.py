"""ViciCharonPool: the command session plus a small pool of VICI sessions ("lanes") that run
per-connection work off the main loop.

charon works through one session's requests in order, one job at a time (vici_socket.c):
in a storm of a thousand failovers, one session makes every attempt wait for the answer to
the one before, while charon's worker threads are busy with the handshakes already started.
Spread over a few sessions, the attempts are queued in charon as fast as a client with
several sessions queues them (the bench's baseline uses four).

Rules kept:
- a key's (a connection's) work runs in the order it was submitted: the key stays on one
  lane while it has work queued or running there; an idle key goes to the least busy lane;
- `size` lanes, each one session and one thread, opened with the main session (or when
  first needed, without it); a lane whose session broke opens it again (bounded tries);
- results come back through `post` (the daemon's inbox), so the main loop stays the only
  writer of state; work submitted before `close()` (charon lost or restarted) is dropped,
  and so are its results: what charon_back does afterwards replaces it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import vici

from extsock_py.adapters.vici.commands import SessionFactory, ViciCharon, terminate_message
from extsock_py.adapters.vici.transport import DEFAULT_URI
from extsock_py.domain.errors import CharonUnreachable
from extsock_py.interfaces.ports import CharonPort

log = logging.getLogger("extsock.vici.pool")

T = TypeVar("T")
Post = Callable[[Callable[[], None]], object]

DEFAULT_LANES = 8
"""Sessions that run connections' commands (besides the main command session)."""
MAX_LANES = 64
RECONNECT_FIRST = 0.02
RECONNECT_WITHIN = 3.0
"""How long a lane tries to open its session again before charon counts as lost."""
DRAIN_TIMEOUT = 5.0
"""How long close() at exit waits for queued work (e.g. `--down-on-exit`'s terminates)."""


@dataclass
class _Item:
    generation: int
    key: str
    work: Callable[[CharonPort], Any]
    done: Callable[[Future[Any]], None]


class LaneCharon(ViciCharon):
    """A lane's session: cleanups (terminate, unload-conn) are sent without waiting for
    their answers, which are read before the next command's. Lanes only run the failover
    manager's commands, whose cleanups are quiet anyway (a refusal changes nothing)."""

    def unload_conn(self, name: str) -> None:
        self.send_quietly("unload-conn", {"name": name})

    def terminate(
        self, ike: str | None = None, ike_id: int | None = None, child_id: int | None = None
    ) -> None:
        self.send_quietly("terminate", terminate_message(ike, ike_id, child_id))


class _Lane:
    """One VICI session and the thread that works through its queue in order."""

    def __init__(self, index: int, charon: ViciCharon, pool: ViciCharonPool) -> None:
        self.index = index
        self.charon = charon
        self.pending = 0  # items queued or running (under the pool's lock)
        self._pool = pool
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"vici-lane-{index}", daemon=True)
        self._thread.start()

    def put(self, item: _Item | None) -> None:
        self._queue.put(item)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if item.generation != self._pool.generation:  # charon lost meanwhile: dropped
                self._pool._finished(self, item, None)
                continue
            future: Future[Any] = Future()
            future.set_running_or_notify_cancel()
            try:
                if not self.charon.connected:
                    self._reconnect()
                future.set_result(item.work(self.charon))
            except BaseException as exc:  # handed to the main loop, which decides
                future.set_exception(exc)
            self._pool._finished(self, item, future)

    def _reconnect(self) -> None:
        """Open the session again (it broke, or close() dropped it). A busy charon accepts
        slowly and a full listen backlog refuses at once (EAGAIN): a few tries, bounded,
        before the loss goes to the main loop (which then takes charon as lost)."""
        pause = RECONNECT_FIRST
        deadline = time.monotonic() + RECONNECT_WITHIN
        while True:
            try:
                self.charon.connect()
                return
            except CharonUnreachable:
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


class ViciCharonPool(ViciCharon):
    """charon's commands: the main session (a ViciCharon), and `lanes` more sessions that run
    per-connection work handed to `submit`. `post` runs a callable on the main loop; it is
    set once the loop exists (before any `submit`)."""

    def __init__(
        self,
        uri: str = DEFAULT_URI,
        *,
        lanes: int = DEFAULT_LANES,
        post: Post | None = None,
        connect_timeout: float = 2.0,
        command_timeout: float | None = 30.0,
        session_factory: SessionFactory = vici.Session,
    ) -> None:
        if not 1 <= lanes <= MAX_LANES:
            raise ValueError(f"command sessions: {lanes} is not a number in 1-{MAX_LANES}")
        super().__init__(
            uri,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            session_factory=session_factory,
        )
        self.size = lanes
        self.post = post
        self.generation = 0  # written on the main loop (close); read by lanes
        self._lanes: list[_Lane] = []
        # Keys with work queued or running: their lane, and how many items they have there.
        self._pins: dict[str, tuple[_Lane, int]] = {}
        self._pool_lock = threading.Condition()
        self._drain_on_close = False

    @property
    def lanes_open(self) -> int:
        """Lanes created so far (each one session and one thread)."""
        return len(self._lanes)

    def submit(
        self, key: str, work: Callable[[CharonPort], T], done: Callable[[Future[T]], None]
    ) -> None:
        """Run `work` on a lane's session after every earlier work of `key`; then `done`
        with its outcome, on the main loop (through `post`)."""
        if self.post is None:
            raise RuntimeError("ViciCharonPool.submit before post was set")
        item = _Item(self.generation, key, work, done)
        with self._pool_lock:
            lane, count = self._pins.get(key) or (self._pick(), 0)
            self._pins[key] = (lane, count + 1)
            lane.pending += 1
        lane.put(item)

    def connect(self) -> None:
        """Open the main session and every lane's, before any storm: while charon is busy
        with a thousand handshakes, new sessions wait in its accept queue or are refused."""
        super().connect()
        try:
            with self._pool_lock:
                while len(self._lanes) < self.size:
                    self._lanes.append(_Lane(len(self._lanes), self._lane_charon(), self))
            for lane in self._lanes:
                lane.charon.connect()
        except CharonUnreachable:
            self.close()
            raise

    def _pick(self) -> _Lane:
        """An idle lane, a new one while under `size`, else the least busy (lock held)."""
        idle = [lane for lane in self._lanes if lane.pending == 0]
        if idle:
            return idle[0]
        if len(self._lanes) < self.size:
            lane = _Lane(len(self._lanes), self._lane_charon(), self)
            self._lanes.append(lane)
            return lane
        return min(self._lanes, key=lambda lane: lane.pending)

    def _lane_charon(self) -> ViciCharon:
        return LaneCharon(
            self.uri,
            connect_timeout=self._connect_timeout,
            command_timeout=self._command_timeout,
            session_factory=self._session_factory,
        )

    def _finished(self, lane: _Lane, item: _Item, future: Future[Any] | None) -> None:
        """Called by `lane`'s thread once `item` ran (future) or was dropped (None)."""
        with self._pool_lock:
            lane.pending -= 1
            _, count = self._pins[item.key]
            if count > 1:
                self._pins[item.key] = (lane, count - 1)
            else:
                del self._pins[item.key]
            self._pool_lock.notify_all()
        if future is None or self.post is None:
            return
        generation = item.generation

        def deliver() -> None:  # on the main loop
            if generation != self.generation:
                return
            try:
                item.done(future)
            except CharonUnreachable:
                raise  # the loop's to handle: charon lost
            except Exception:  # nobody reads the loop's future of a posted callable
                log.exception("%s: handling the outcome of a command failed", item.key)

        self.post(deliver)

    # -- lifecycle: the daemon closes the command session when charon is lost or restarted ---

    def stopping(self) -> None:
        """The daemon stops: close() lets queued work finish first (bounded), e.g. the
        terminates of `--down-on-exit`. Otherwise close() means charon is lost or restarted,
        and what is queued is dropped: charon_back's resync replaces it."""
        self._drain_on_close = True

    def close(self) -> None:
        """Drop the lanes' queued work (see `stopping`) and close every session."""
        with self._pool_lock:
            if self._drain_on_close:
                self._pool_lock.wait_for(
                    lambda: all(lane.pending == 0 for lane in self._lanes), DRAIN_TIMEOUT
                )
            self.generation += 1
        for lane in self._lanes:
            lane.charon.abort()
            lane.charon.close()
        super().close()

    def reconnect(self) -> None:
        self.close()
        self.connect()

    def stop(self) -> None:
        """End the lanes' threads (at exit, after close)."""
        lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.put(None)
        for lane in lanes:
            with contextlib.suppress(RuntimeError):
                lane.join(1.0)
