"""An independent VICI listener on a lab node: every event of interest, timestamped on arrival.

The bench's clock for "when did charon say so": it runs on its own session, so what it sees
is what any other listener (extsock, the baseline reactor) sees at the same moment.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import vici
from vici.protocol import Message, Packet

UPDOWN = ("ike-updown", "child-updown")
ALL_EVENTS = ("ike-updown", "child-updown", "ike-rekey", "ike-update", "log")
_KEPT = r"retransmit \d|initiating IKE_SA|giving up|sending DPD"  # the log lines kept
_KEPT_LOG = re.compile(f"^({_KEPT})")
# The same lines found in a `log` event's raw payload (VICI: byte 3, key length, key, value
# length in two bytes, value), so that the others are counted without being decoded.
_KEPT_RAW = re.compile(rb"\x03\x03msg[\x00-\xff]{2}(?:" + _KEPT.encode() + rb")", re.DOTALL)
MAX_RECORDS = 200_000  # bounded memory: a long run of log events stops being recorded


@dataclass(frozen=True)
class Seen:
    """One event: arrival time (monotonic), kind, IKE_SA config name, up flag, log text."""

    at: float
    kind: str
    conn: str
    up: bool
    text: str = ""


def _s(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def summarise(kind: str, msg: dict[str, Any], at: float) -> Seen | None:
    """The Seen of one raw event, or None for log lines the bench does not need."""
    if kind in ("log", "control-log"):
        text = _s(msg.get("msg", b""))
        if not _KEPT_LOG.match(text):
            return None
        return Seen(at, kind, _s(msg.get("ikesa-name", b"")), False, text)
    up = _s(msg.get("up", b"")) == "yes"
    names = [k for k, v in msg.items() if isinstance(v, dict)]
    return Seen(at, kind, names[0] if names else "", up)


def _unkept_log(kind: str, frame: bytes) -> bool:
    """A log line `summarise` would drop, known from its raw frame: the watch decodes every
    other event with the `vici` package, in Python, beside charon on the same cores. In a
    thousand-connection storm the bench process used 10-20 % of a core, nearly all of it
    decoding log lines it then dropped (in the extsock trials and the baselines alike): CPU
    taken from the charons it times."""
    return kind in ("log", "control-log") and _KEPT_RAW.search(frame) is None


class EventWatch:
    """Listen on ``socket_path`` in a thread; ``wait_for`` finds events by predicate."""

    def __init__(
        self, socket_path: str, events: tuple[str, ...] = ALL_EVENTS, *, raw: bool = False
    ) -> None:
        self.socket_path = socket_path
        self.events = events
        self.keep_raw = raw
        self.seen: list[Seen] = []
        self.raw: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def __enter__(self) -> EventWatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 5.0) -> None:
        self._thread = threading.Thread(target=self._run, name="bench-watch", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self.error is not None:
            raise RuntimeError(f"event watch on {self.socket_path} not registered: {self.error}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3.0)

    def _run(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(5.0)
            sock.connect(self.socket_path)
            transport = vici.Session(sock).transport
            for event in self.events:
                self._register(transport, event)
            sock.settimeout(None)
            self._ready.set()
            while not self._stop.is_set():
                try:
                    frame = transport.receive(0.2)
                except TimeoutError:
                    continue
                packet = Packet.parse(frame)
                if packet.response_type == Packet.EVENT:
                    at = time.monotonic()
                    kind = _s(packet.event_type)
                    if not self.keep_raw and _unkept_log(kind, frame):
                        self._count(kind)
                        continue
                    self._record(kind, Message.deserialize(packet.payload), at)
        except Exception as exc:  # the bench reports it; the watch must not kill the run
            self.error = f"{type(exc).__name__}: {exc}"
            self._ready.set()
        finally:
            sock.close()

    def _register(self, transport: Any, event: str) -> None:
        transport.send(Packet.register_event(event))
        for _ in range(10_000):
            packet = Packet.parse(transport.receive())
            if packet.response_type == Packet.EVENT_CONFIRM:
                return
            if packet.response_type != Packet.EVENT:
                raise RuntimeError(f"charon refused event {event!r}")
        raise RuntimeError(f"no confirmation for event {event!r}")

    def _count(self, kind: str) -> None:
        with self._cond:
            self.counts[kind] = self.counts.get(kind, 0) + 1

    def _record(self, kind: str, msg: Any, at: float) -> None:
        seen = summarise(kind, msg, at)
        with self._cond:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if self.keep_raw and len(self.raw) < MAX_RECORDS:
                self.raw.append({"event": kind, "message": _json_safe(msg), "at": at})
            if seen is not None and len(self.seen) < MAX_RECORDS:
                self.seen.append(seen)
            self._cond.notify_all()

    def mark(self) -> int:
        """An index: ``find``/``wait_for`` with ``since=mark`` only look at later events."""
        with self._cond:
            return len(self.seen)

    def find(self, match: Callable[[Seen], bool], since: int = 0) -> Seen | None:
        with self._cond:
            return next((s for s in self.seen[since:] if match(s)), None)

    def all(self, match: Callable[[Seen], bool], since: int = 0) -> list[Seen]:
        with self._cond:
            return [s for s in self.seen[since:] if match(s)]

    def wait_for(
        self, match: Callable[[Seen], bool], timeout: float, since: int = 0
    ) -> Seen | None:
        """The first matching event after ``since``, waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            for _ in range(1_000_000):
                found = next((s for s in self.seen[since:] if match(s)), None)
                remaining = deadline - time.monotonic()
                if found is not None or remaining <= 0:
                    return found
                self._cond.wait(min(remaining, 0.5))
        return None

    def wait_count(
        self,
        match: Callable[[Seen], bool],
        count: int,
        timeout: float,
        since: int = 0,
        key: Callable[[Seen], str] = lambda s: s.conn,
    ) -> list[Seen]:
        """Wait for ``count`` matches with distinct ``key`` after ``since``; the first of each."""
        deadline = time.monotonic() + timeout
        firsts: dict[str, Seen] = {}
        scanned = since
        with self._cond:
            for _ in range(1_000_000):
                for s in self.seen[scanned:]:
                    if match(s) and key(s) not in firsts:
                        firsts[key(s)] = s
                scanned = len(self.seen)
                remaining = deadline - time.monotonic()
                if len(firsts) >= count or remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.5))
        return sorted(firsts.values(), key=lambda s: s.at)


def child_up(conn: str) -> Callable[[Seen], bool]:
    return lambda s: s.kind == "child-updown" and s.up and s.conn == conn


def went_down(conn: str) -> Callable[[Seen], bool]:
    return lambda s: s.kind in UPDOWN and not s.up and s.conn == conn
