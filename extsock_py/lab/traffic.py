"""UDP echo traffic through the lab's tunnel: the one stream the integration tests, the
monitor checks and their 10-minute runs all use.

Datagrams go every `period` seconds from ini's protected address to the echo servers
behind the gateways (over IPv6 with `ipv6`, in a lab with `inner_ipv6`), from a socket
this process makes inside ini's namespace; each server answers `<gateway> <payload>`, so
every answer says which gateway carried it.
Bounded: it stops after `duration` seconds (then waits half a second for late answers),
or at `stop()`; it only ever sends into the lab's own namespace.
"""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from extsock_py.adapters.monitor_prober import open_socket
from extsock_py.lab.lab import Lab
from extsock_py.lab.topology import (
    ECHO_PORT,
    INI,
    INI_ADDR,
    INI_ADDR6,
    PROTECTED_ADDR,
    PROTECTED_ADDR6,
)

LATE_ANSWERS = 0.5  # s: how long answers are awaited after the last datagram


@dataclass(frozen=True)
class Answer:
    seq: int
    received: float  # time.monotonic(), which all namespaces share
    gateway: str


class EchoStream:
    """One datagram every `period` s on a thread of its own; what came back, by gateway."""

    def __init__(
        self, lab: Lab, period: float = 0.02, duration: float | None = None, ipv6: bool = False
    ) -> None:
        self.lab = lab
        self.period = period
        self.duration = duration
        self.addresses = (INI_ADDR6, PROTECTED_ADDR6) if ipv6 else (INI_ADDR, PROTECTED_ADDR)
        self.sent = 0
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> EchoStream:
        local, remote = self.addresses
        sock = open_socket(local, remote, ECHO_PORT, self.lab.namespace(INI))
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def wait(self) -> EchoStream:
        """Until a stream with a duration has ended (at most duration + 5 s)."""
        if self._thread is not None and self.duration is not None:
            self._thread.join(self.duration + 5.0)
        return self

    def _run(self, sock: socket.socket) -> None:
        start = time.monotonic()
        end = start + self.duration if self.duration is not None else float("inf")
        next_send = start
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= end + LATE_ANSWERS:
                    break
                if next_send <= now < end:
                    with contextlib.suppress(OSError):  # no route while the tunnel is down
                        sock.send(b"%d" % self.sent)
                    self.sent += 1
                    next_send += self.period
                wait = max(0.0, min(next_send, end + LATE_ANSWERS) - time.monotonic())
                ready, _, _ = select.select([sock], [], [], min(wait, 0.1))
                if ready:
                    self._receive(sock)
        finally:
            sock.close()

    def _receive(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(4096)
            except OSError:  # drained (EAGAIN), or ECONNREFUSED while no echo server
                return
            gateway, _, payload = data.decode(errors="replace").partition(" ")
            with contextlib.suppress(ValueError):
                seq = int(payload)
                self.answers.append(Answer(seq, time.monotonic(), gateway))

    # --- what it saw ------------------------------------------------------------------

    def lost(self) -> int:
        return self.sent - len({a.seq for a in list(self.answers)})

    def tags(self) -> list[str]:
        """The answering gateways in sequence order, runs collapsed: ['segw2', 'segw1']."""
        out: list[str] = []
        for answer in sorted(list(self.answers), key=lambda a: a.seq):
            if not out or out[-1] != answer.gateway:
                out.append(answer.gateway)
        return out

    def longest_gap(self) -> tuple[float, float]:
        """The longest time between two answers in a row, and when it began (inf if < 2)."""
        times = sorted(a.received for a in list(self.answers))
        gaps = [(b - a, a) for a, b in itertools.pairwise(times)]
        return max(gaps) if gaps else (float("inf"), 0.0)

    def first_from(self, gateway: str, since: float) -> float | None:
        """When the first answer carried by `gateway` at or after `since` came."""
        return next(
            (
                a.received
                for a in list(self.answers)
                if a.gateway == gateway and a.received >= since
            ),
            None,
        )


@contextlib.contextmanager
def echo_stream(
    lab: Lab, period: float = 0.02, duration: float | None = None, ipv6: bool = False
) -> Iterator[EchoStream]:
    """A started stream, stopped (and its thread joined) when the block ends, also on error."""
    stream = EchoStream(lab, period, duration, ipv6).start()
    try:
        yield stream
    finally:
        stream.stop()
