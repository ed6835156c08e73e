"""Echo requests seen leaving a lab node, with the kernel's timestamps: the send times of
the tunnel monitor's ICMP probes, to measure how well its interval is honoured.

A packet socket (AF_PACKET, every protocol) is made inside the node's namespace (on a
thread that enters it, as the monitor's own sockets are) and read on a thread of this
process; each ICMP echo request from `source` is kept with its SO_TIMESTAMPNS stamp (the
kernel's, taken as the packet passed: the reader's own scheduling adds nothing). The
probes go out on libipsec's TUN device before ESP, so they are seen in clear.
Bounded: at most `limit` stamps, and it stops at `stop()` or after `duration` seconds.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator

from extsock_py.adapters.monitor_prober import _enter_netns
from extsock_py.lab.lab import Lab

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4


def _packet_socket(netns: str) -> socket.socket:
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def in_namespace() -> None:
        try:
            _enter_netns(netns)
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            made.append(sock)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=in_namespace, daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


def echo_request_from(packet: bytes, source: str) -> bool:
    """Whether `packet` (an IPv4 packet, no link header) is an ICMP echo request from `source`."""
    return _echo(packet, source, 12, 8)


def echo_reply_to(packet: bytes, source: str) -> bool:
    """Whether `packet` (an IPv4 packet) is an ICMP echo reply to `source`."""
    return _echo(packet, source, 16, 0)


def _echo(packet: bytes, address: str, at: int, kind: int) -> bool:
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_ICMP:
        return False
    if ipaddress.IPv4Address(packet[at : at + 4]) != ipaddress.IPv4Address(address):
        return False
    return packet[(packet[0] & 0x0F) * 4] == kind


class EchoCapture:
    """Kernel timestamps (s, CLOCK_REALTIME) of echo requests from `source` in `node`."""

    def __init__(self, lab: Lab, node: str, source: str, limit: int = 200_000) -> None:
        self.lab, self.node, self.source, self.limit = lab, node, source, limit
        self.stamps: list[float] = []
        self.sent: dict[int, float] = {}  # sequence number -> stamp of its request
        self.round_trips: list[float] = []  # reply stamp - request stamp, per answered probe
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> EchoCapture:
        sock = _packet_socket(self.lab.namespace(self.node))
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self, sock: socket.socket) -> None:
        seen: set[tuple[int, int]] = set()  # (ident/seq, request?): once per packet
        try:
            while not self._stop.is_set() and len(self.stamps) < self.limit:
                ready, _, _ = select.select([sock], [], [], 0.2)
                if not ready:
                    continue
                data, ancdata, _flags, _addr = sock.recvmsg(2048, socket.CMSG_SPACE(16))
                request = echo_request_from(data, self.source)
                if not request and not echo_reply_to(data, self.source):
                    continue
                stamp = time.time()
                for level, kind, value in ancdata:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", value[:16])
                        stamp = sec + nsec / 1e9
                header = (data[0] & 0x0F) * 4
                ident_seq = int.from_bytes(data[header + 4 : header + 8], "big")
                key = (ident_seq, int(request))
                if key in seen:  # the same packet seen on two devices (tun, then lo...)
                    continue
                seen.add(key)
                if request:
                    self.stamps.append(stamp)
                    self.sent[ident_seq] = stamp
                elif ident_seq in self.sent:
                    self.round_trips.append(stamp - self.sent[ident_seq])
        finally:
            sock.close()


@contextlib.contextmanager
def echo_capture(lab: Lab, node: str, source: str) -> Iterator[EchoCapture]:
    capture = EchoCapture(lab, node, source).start()
    try:
        yield capture
    finally:
        capture.stop()


def gaps(stamps: list[float]) -> list[float]:
    """The intervals between consecutive stamps (in order)."""
    ordered = sorted(stamps)
    return [b - a for a, b in itertools.pairwise(ordered)]
