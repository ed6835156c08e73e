"""A sequenced UDP stream through the lab's tunnel, counted in each direction on its own.

ini sends datagram `n` (its sequence number) every `period` seconds from its protected
address to a counting echo on the protected address behind every gateway (port
`SEQ_PORT`, beside the lab's own echo). Each far end notes what it received and when,
and answers `<gateway> <n>`. So a datagram is lost on the way out when no far end got
it, and on the way back when a far end got it but ini never saw the answer: a switch's
losses are told apart by direction, and each loss has a time on the shared monotonic
clock (every namespace reads the same CLOCK_MONOTONIC) to set beside the switch's events.

Bounded: the sender stops after `duration` s or at `stop()`; each far end exits on its
own `duration + FAR_MARGIN` s after it started, or when it is terminated, and prints
what it received as one JSON line. Everything stays inside the lab's namespaces.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from extsock_py.adapters.monitor_prober import open_socket
from extsock_py.lab import netns
from extsock_py.lab.lab import Lab
from extsock_py.lab.topology import INI, INI_ADDR, PROTECTED_ADDR

SEQ_PORT = 7778
LATE_ANSWERS = 0.5  # s: how long answers are awaited after the last datagram
FAR_MARGIN = 10.0  # s: a far end outlives the stream by this much at most

# argv: address, port, tag, lifetime (s), answer delay (s).
# Prints {"tag": ..., "got": [[seq, t], ...]} when it ends.
_FAR_END = """\
import heapq, json, select, signal, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind((sys.argv[1], int(sys.argv[2])))
tag = sys.argv[3].encode()
end = time.monotonic() + float(sys.argv[4])
delay = float(sys.argv[5])
got, due, stop = [], [], []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
print("ready", flush=True)
while not stop and time.monotonic() < end:
    now = time.monotonic()
    while due and due[0][0] <= now:
        _, data, peer = heapq.heappop(due)
        try:
            s.sendto(tag + b" " + data, peer)
        except OSError:
            pass
    wait = min(0.1, max(0.0, due[0][0] - now)) if due else 0.1
    try:
        ready, _, _ = select.select([s], [], [], wait)
    except InterruptedError:
        continue
    if ready:
        data, peer = s.recvfrom(4096)
        now = time.monotonic()
        got.append((int(data), now))
        heapq.heappush(due, (now + delay, data, peer))
print(json.dumps({"tag": tag.decode(), "got": got}), flush=True)
"""


@dataclass
class StreamResult:
    """What one stream saw: seq -> send time; far end's receipts; ini's answers."""

    sent: dict[int, float] = field(default_factory=dict)
    far: dict[int, tuple[str, float]] = field(default_factory=dict)  # seq -> (gateway, t)
    back: dict[int, tuple[str, float]] = field(default_factory=dict)  # seq -> (gateway, t)

    def lost_out(self) -> list[int]:
        """Sent, never received by any far end (lost ini -> far)."""
        return sorted(s for s in self.sent if s not in self.far)

    def lost_back(self) -> list[int]:
        """Received by a far end, its answer never reached ini (lost far -> ini)."""
        return sorted(s for s in self.far if s in self.sent and s not in self.back)

    def lost_total(self) -> int:
        return len(self.lost_out()) + len(self.lost_back())

    def longest_gap(self, way: str = "out") -> float:
        """The longest time between two datagrams in a row arriving (`out`: at the far
        ends, `back`: answers at ini); inf with fewer than two."""
        seen = self.far if way == "out" else self.back
        times = sorted(t for _, t in seen.values())
        return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))

    def carriers(self) -> list[str]:
        """The gateways that carried the stream out, in sequence order, runs collapsed."""
        out: list[str] = []
        for seq in sorted(self.far):
            gateway = self.far[seq][0]
            if not out or out[-1] != gateway:
                out.append(gateway)
        return out

    def summary(self) -> dict[str, object]:
        return {
            "sent": len(self.sent),
            "lost_out": len(self.lost_out()),
            "lost_back": len(self.lost_back()),
            "longest_gap_out_s": round(self.longest_gap("out"), 4),
            "longest_gap_back_s": round(self.longest_gap("back"), 4),
            "carriers": self.carriers(),
        }


class SeqStream:
    """Far ends on every gateway, one sender thread in ini; `result()` after `stop()`."""

    def __init__(
        self, lab: Lab, period: float = 0.005, duration: float = 60.0, far_delay: float = 0.0
    ) -> None:
        self.lab = lab
        self.period = period
        self.duration = duration
        self.far_delay = far_delay
        self._result = StreamResult()
        self._far: dict[str, subprocess.Popen[str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> SeqStream:
        try:
            for gateway in self.lab.gateways:
                self._far[gateway] = self._spawn_far(gateway)
            sock = open_socket(INI_ADDR, PROTECTED_ADDR, SEQ_PORT, self.lab.namespace(INI))
        except BaseException:
            self._end_far()
            raise
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def _spawn_far(self, gateway: str) -> subprocess.Popen[str]:
        life = str(self.duration + FAR_MARGIN)
        argv = [sys.executable, "-c", _FAR_END, PROTECTED_ADDR, str(SEQ_PORT), gateway, life,
                str(self.far_delay)]  # fmt: skip
        child = subprocess.Popen(
            netns.ns_argv(self.lab.namespace(gateway), argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 10.0)
        if not ready or child.stdout.readline().strip() != "ready":
            child.kill()
            child.wait(5.0)
            raise RuntimeError(f"the counting echo on {gateway} did not start")
        return child

    def _run(self, sock: socket.socket) -> None:
        start = time.monotonic()
        end = start + self.duration
        seq = 0
        try:
            while True:
                now = time.monotonic()
                if self._stop.is_set() and end > now:
                    end = now  # no more sends; answers still on their way are awaited
                if now >= end + LATE_ANSWERS:
                    break
                next_send = start + seq * self.period
                if now >= next_send and now < end:
                    self._result.sent[seq] = now
                    with contextlib.suppress(OSError):  # no route while no tunnel
                        sock.send(b"%d" % seq)
                    seq += 1
                    continue
                wait = max(0.0, (next_send if now < end else end + LATE_ANSWERS) - now)
                ready, _, _ = select.select([sock], [], [], min(wait, 0.05))
                if ready:
                    self._receive(sock)
        finally:
            sock.close()

    def _receive(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(4096)
            except OSError:  # drained
                return
            gateway, _, payload = data.decode(errors="replace").partition(" ")
            with contextlib.suppress(ValueError):
                self._result.back.setdefault(int(payload), (gateway, time.monotonic()))

    def stop(self) -> StreamResult:
        """Stop sending, await the answers on their way (LATE_ANSWERS), end the far ends,
        gather what they got."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.duration + 5.0)
        return self._end_far()

    def wait(self) -> StreamResult:
        """Until the stream's duration is over, then as `stop()`."""
        if self._thread is not None:
            self._thread.join(self.duration + LATE_ANSWERS + 5.0)
        return self.stop()

    def _end_far(self) -> StreamResult:
        for gateway, child in self._far.items():
            with contextlib.suppress(OSError):
                child.terminate()
            try:
                out, _ = child.communicate(timeout=5.0)
            except subprocess.TimeoutExpired:
                child.kill()
                out, _ = child.communicate(timeout=5.0)
            for line in out.splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    for seq, at in json.loads(line)["got"]:
                        self._result.far.setdefault(int(seq), (gateway, float(at)))
        self._far.clear()
        return self._result


@contextlib.contextmanager
def seq_stream(
    lab: Lab, period: float = 0.005, duration: float = 60.0, far_delay: float = 0.0
) -> Iterator[SeqStream]:
    """A started stream; its sender and far ends are ended when the block ends, also on error."""
    stream = SeqStream(lab, period, duration, far_delay).start()
    try:
        yield stream
    finally:
        stream.stop()
