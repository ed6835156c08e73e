"""Continuous traffic through every connection's tunnel, as figure 7's stream: a datagram
every `period` s from the connection's own address in ini to the lab's echo behind every
gateway (10.200.0.1, which answers `<gateway> <payload>`); each answer is noted with the
gateway that sent it. One thread, bounded by `stop()` and a deadline."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Sequence

from extsock_py.adapters.monitor_prober import open_socket
from extsock_py.lab.chaos.observations import Answers
from extsock_py.lab.topology import ECHO_PORT, PROTECTED_ADDR


class Traffic:
    def __init__(
        self,
        namespace: str,
        sources: Sequence[tuple[str, str]],  # (connection, source address)
        t0: float,
        period: float = 0.005,
        max_seconds: float = 4 * 3600.0,
    ) -> None:
        self.namespace = namespace
        self.sources = tuple(sources)
        self.t0 = t0
        self.period = period
        self.max_seconds = max_seconds
        self.answers = Answers()
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Traffic:
        socks = [(conn, open_socket(src, netns=self.namespace)) for conn, src in self.sources]
        self._thread = threading.Thread(target=self._run, args=(socks,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def first_after(self, conn: str, t: float) -> float | None:
        with self._lock:
            return self.answers.first_after(conn, t)

    def last(self, conn: str) -> float | None:
        with self._lock:
            times = self.answers.times.get(conn)
            return times[-1] if times else None

    def _run(self, socks: list[tuple[str, socket.socket]]) -> None:
        start = time.monotonic()
        deadline = start + self.max_seconds
        by_fd = {s.fileno(): (conn, s) for conn, s in socks}
        seq = 0
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                now = time.monotonic()
                next_send = start + seq * self.period
                if now >= next_send:
                    payload = b"%d" % seq
                    for _, sock in socks:
                        with contextlib.suppress(OSError):  # no route while no tunnel
                            sock.sendto(payload, (PROTECTED_ADDR, ECHO_PORT))
                    self.sent += 1
                    seq += 1
                    if now - next_send > 1.0:  # resume the pace after a pause, no burst
                        start = now - seq * self.period
                    continue
                ready, _, _ = select.select(list(by_fd), [], [], max(0.0, next_send - now))
                for fd in ready:
                    conn, sock = by_fd[fd]
                    self._drain(conn, sock)
        finally:
            for _, sock in socks:
                sock.close()

    def _drain(self, conn: str, sock: socket.socket) -> None:
        for _ in range(1000):
            try:
                data = sock.recv(4096)
            except OSError:
                return
            gateway = data.split(b" ", 1)[0].decode(errors="replace")
            with self._lock:
                self.answers.note(conn, time.monotonic() - self.t0, gateway)
