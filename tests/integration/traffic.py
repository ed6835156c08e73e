"""A bounded UDP stream through the lab's tunnel, for the integration tests."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from dataclasses import dataclass

from extsock_py.lab import netns
from extsock_py.lab.lab import Lab
from extsock_py.lab.topology import ECHO_PORT, INI, INI_ADDR, PROTECTED_ADDR

# Sends one UDP datagram every INTERVAL s for DURATION s from ini's protected address to the
# echo servers behind the gateways; prints one JSON line per answer: [seq, sent, received, tag]
# (times from CLOCK_MONOTONIC, which all namespaces share).
_STREAM = """
import json, select, socket, sys, time
src, dst, port, interval, duration = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
    float(sys.argv[4]), float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.setblocking(False)
sent = {}
start = time.monotonic()
seq = 0
next_send = start
end = start + duration
while True:
    now = time.monotonic()
    if now >= end + 0.5:
        break
    if now >= next_send and now < end:
        sent[seq] = now
        try:
            s.sendto(b"%d" % seq, (dst, port))
        except OSError:
            pass
        seq += 1
        next_send += interval
    wait = max(0.0, min(next_send, end + 0.5) - time.monotonic())
    ready, _, _ = select.select([s], [], [], wait)
    while ready:
        try:
            data, _ = s.recvfrom(4096)
        except BlockingIOError:
            break
        tag, _, n = data.decode().partition(" ")
        k = int(n)
        print(json.dumps([k, sent.get(k), time.monotonic(), tag]), flush=True)
print(json.dumps(["sent", seq]), flush=True)
"""


@dataclass
class Stream:
    """What a traffic stream saw: every answer, by sequence number."""

    sent: int
    answers: list[tuple[int, float, float, str]]  # seq, sent at, answered at, gateway

    def longest_gap(self) -> tuple[float, float]:
        """The longest time between two answers in a row, and when it began."""
        times = sorted(a[2] for a in self.answers)
        gaps = [(b - a, a) for a, b in itertools.pairwise(times)]
        return max(gaps) if gaps else (float("inf"), 0.0)

    def lost(self) -> int:
        return self.sent - len({a[0] for a in self.answers})

    def tags(self) -> list[str]:
        """The answering gateways in sequence order, runs collapsed: ['segw2', 'segw1']."""
        out: list[str] = []
        for _seq, _s, _r, tag in sorted(self.answers):
            if not out or out[-1] != tag:
                out.append(tag)
        return out


class TrafficStream:
    """A bounded background UDP stream from ini through the tunnel (see _STREAM)."""

    def __init__(self, lab: Lab, interval: float, duration: float) -> None:
        self.duration = duration
        argv = netns.ns_argv(
            lab.namespace(INI),
            [sys.executable, "-c", _STREAM, INI_ADDR, PROTECTED_ADDR, str(ECHO_PORT),
             str(interval), str(duration)],
        )  # fmt: skip
        self._proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )

    def result(self) -> Stream:
        out, err = self._proc.communicate(timeout=self.duration + 15.0)
        lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        sent = next((line[1] for line in lines if line[0] == "sent"), None)
        assert sent is not None, f"traffic stream failed: {err.decode()[-500:]}"
        answers = [(line[0], line[1], line[2], line[3]) for line in lines if line[0] != "sent"]
        return Stream(sent, answers)

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
