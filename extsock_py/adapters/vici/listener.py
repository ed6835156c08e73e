"""ViciEventListener: charon's events, decoded, delivered from a thread that survives restarts."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import tenacity
from vici.protocol import FiniteStream, Message, Packet

from extsock_py.adapters.vici.decode import decode_event
from extsock_py.adapters.vici.dialects import BASE_EVENTS, Choice, DialectReader
from extsock_py.adapters.vici.transport import DEFAULT_URI, FrameReader, open_socket, send_frame
from extsock_py.domain.errors import CharonUnreachable
from extsock_py.domain.observations import (
    CharonBack,
    CharonLost,
    CharonRelease,
    Observation,
    Undecodable,
)

log = logging.getLogger(__name__)

EVENTS = BASE_EVENTS
OPTIONAL_EVENTS = ("alert",)
"""Registered when charon knows them (alert: strongSwan >= 6.0.3); 5.9.8 answers EVENT_UNKNOWN."""

Deliver = Callable[[Observation], None]
ChooseDialect = Callable[[str | None], Choice]


def log_prefilter(prefixes: Iterable[str]) -> re.Pattern[bytes]:
    """A pattern found in a `log` event's raw payload when its `msg` starts with one of
    `prefixes`. Searched before decoding, so the lines that cannot matter (nearly all of
    them: each DPD exchange logs five) cost a regex scan instead of a full decode.

    In VICI's encoding a key-value is the byte 3, the key's length (one byte), the key, the
    value's length (two bytes), the value.
    """
    alternatives = b"|".join(re.escape(p.encode()) for p in prefixes)
    return re.compile(rb"\x03\x03msg[\x00-\xff]{2}(?:" + alternatives + rb")", re.DOTALL)


class _Stopped(Exception):
    """stop() was called."""


class _Refused(Exception):
    """charon refused an event registration (EVENT_UNKNOWN)."""


def default_wait() -> tenacity.wait.wait_base:
    """Exponential backoff from 0.05 s to at most 0.5 s, including up to 0.05 s of jitter.

    Short on purpose: a restarted charon is found within half a second of its socket being
    back (a connect to a missing unix socket costs microseconds), so the tunnel is back
    within a second or so of charon.
    """
    return tenacity.wait_exponential(multiplier=0.05, max=0.45) + tenacity.wait_random(0, 0.05)


@dataclass(frozen=True)
class Coalescing:
    """Read less often while charon sends mostly chatter.

    charon sends every level-1 log line to every `log` listener: ~1000 a second with 200
    tunnels and DPD every second, nearly all dropped by the prefilter. Waking for each costs
    more than the prefilter. While the dropped lines come faster than `above` per second,
    a read that held nothing but such lines is followed by a pause of `window` seconds, so
    the next read takes a batch. A read that delivered something is never followed by a
    pause, nor one whose `recv` filled the whole chunk (more is waiting), and below `above`
    lines/s there is none at all: the price is at most `window` of delay on an event that
    arrives during a pause, and only under heavy chatter.

    Measured (200 tunnels, DPD 1 s, ~1000 lines/s; `perf stat` of the listener thread over
    20 s): 1.1 % of a core without pauses, 0.36 % with 20 ms ones. Each wake-up costs far
    more than its batch on a busy machine (cold caches after the pause): with 20 ms the
    listener thread used 0.62 % of a core beside other work, with 100 ms 0.42 % (the same
    lab, alternated runs); a feeder of 1000 lines/s over a socketpair: 0.6-1.0 % -> 0.35 %.
    100 ms on a first signal is ~2 % of the 4-5 s a silent gateway takes to show (DPD,
    first retransmit). `above` sits over the few hundred lines a second that failovers
    themselves log, so a lone failover is never delayed (bench figure 1: a threshold of
    100 paused there and cost ~5 ms).
    """

    window: float = 0.1
    above: float = 300.0


class ViciEventListener:
    """Subscribe on its own session; deliver decoded events, CharonLost/CharonBack on restarts."""

    def __init__(
        self,
        deliver: Deliver,
        uri: str = DEFAULT_URI,
        *,
        connect_timeout: float = 2.0,
        wait: tenacity.wait.wait_base | None = None,
        sleep: Callable[[float], None] | None = None,
        keep_log: re.Pattern[bytes] | None = None,
        coalescing: Coalescing | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        dialects: ChooseDialect | None = None,
    ) -> None:
        """With `dialects`, each connect asks charon's version, registers the events of the
        chosen dialect and delivers its IkeSignals instead of raw log lines and alerts (the
        dialect's prefilter replaces `keep_log`). Without, raw decoded events are delivered."""
        self.uri = uri
        self._dialects = dialects
        self.dialect: DialectReader | None = None
        """The dialect in use since the last registration (None before, or without dialects)."""
        self.charon_version: str | None = None
        self._deliver_fn = deliver
        self._connect_timeout = connect_timeout
        self._wait = wait if wait is not None else default_wait()
        self._sleep = sleep if sleep is not None else self._interruptible_sleep
        self._keep_log = keep_log
        self.dropped_logs = 0
        """`log` events that `keep_log` turned away before decoding."""
        self._coalescing = coalescing
        self._monotonic = monotonic
        self._rate_since = monotonic()
        self._rate_base = 0
        self._chatter = False
        self.pauses = 0
        """Pauses taken under chatter (see Coalescing)."""
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._sock_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._pending: list[tuple[bytes, bytes]] = []
        self.alert_supported: bool | None = None
        """Whether charon accepted `alert` at the last registration (None before)."""

    # -- public ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the daemon thread (once)."""
        if self._thread is not None:
            raise RuntimeError("listener already started")
        self._thread = threading.Thread(target=self._run, name="vici-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop listening and join the thread (within `timeout` seconds)."""
        self._stopping.set()
        self._ready.clear()
        self._shutdown_socket()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until registered with charon (True) or `timeout` elapsed (False)."""
        return self._ready.wait(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def use_dialect(self, reader: DialectReader) -> None:
        """Translate with `reader` from now on, and let only the log lines it reads through."""
        self.dialect = reader
        self._keep_log = log_prefilter(reader.log_prefixes)

    def deliver_batch(self, reader: FrameReader) -> bool:
        """Read what charon has sent (one `recv` if nothing is buffered) and deliver its
        events, decoded; whether any was. What the thread runs in a loop; the golden replay
        calls it without a thread. OSError or ValueError when the stream breaks."""
        packets, dropped = reader.read_batch(self._keep_log)
        self.dropped_logs += dropped
        delivered = False
        for packet in packets:
            if packet and packet[0] == Packet.EVENT:
                self._deliver_raw(*_split_event(packet))
                delivered = True
        return delivered

    # -- thread ----------------------------------------------------------------------------

    def _interruptible_sleep(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise _Stopped()

    def _shutdown_socket(self) -> None:
        with self._sock_lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def _deliver(self, obs: Observation) -> None:
        try:
            self._deliver_fn(obs)
        except Exception:
            log.exception("delivering %r failed", obs)

    def _run(self) -> None:
        lost = False
        while not self._stopping.is_set():
            try:
                reader = self._connect(lost)
            except _Stopped:
                break
            except CharonUnreachable as exc:  # first attempt failed: report, then keep trying
                if self._stopping.is_set():
                    break
                self._deliver(CharonLost(str(exc)))
                lost = True
                continue
            if lost:
                self._deliver(CharonBack())
            lost = False
            if self.dialect is not None:
                self._deliver(
                    CharonRelease(
                        self.charon_version, self.dialect.dialect.name, self.dialect.uses_alerts
                    )
                )
            pending, self._pending = self._pending, []
            for name, payload in pending:  # events that arrived while registering
                self._deliver_raw(name, payload)
            reason = self._listen(reader)
            self._ready.clear()
            self._close_socket()
            if self._stopping.is_set():
                break
            self._deliver(CharonLost(reason))
            lost = True
        self._close_socket()

    def _connect(self, retrying: bool) -> FrameReader:
        """Open and register a session; retries with backoff while `retrying`."""
        if not retrying:
            return self._open_registered()
        retryer = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((CharonUnreachable, OSError)),
            wait=self._wait,
            sleep=self._sleep,
            stop=lambda _state: self._stopping.is_set(),
            reraise=True,
        )
        try:
            return retryer(self._open_registered)
        except (CharonUnreachable, OSError) as exc:  # only when stopping
            raise _Stopped() from exc

    def _open_registered(self) -> FrameReader:
        if self._stopping.is_set():
            raise _Stopped()
        sock = open_socket(self.uri, self._connect_timeout)
        with self._sock_lock:
            self._sock = sock
        if self._stopping.is_set():
            raise _Stopped()
        reader = FrameReader(sock)
        try:
            choice = None
            events: tuple[str, ...] = EVENTS
            optional: tuple[str, ...] = OPTIONAL_EVENTS
            if self._dialects is not None:
                self.charon_version = self._ask_version(sock, reader)
                choice = self._dialects(self.charon_version)
                if choice.warning:
                    log.warning("%s", choice.warning)
                events, optional = choice.dialect.events, choice.dialect.optional_events
            for event in events:
                self._register(sock, reader, event)
            alert = True
            for event in optional:
                try:
                    self._register(sock, reader, event)
                except _Refused:
                    alert = False
            self.alert_supported = alert and "alert" in optional
            if choice is not None:
                dialect = choice.dialect.reader(self.alert_supported)
                self.use_dialect(dialect)
                log.info(
                    "charon %s: dialect %s, %s",
                    self.charon_version or "(version unknown)",
                    choice.dialect.name,
                    "alerts first" if dialect.uses_alerts else "log lines",
                )
        except (OSError, _Refused, ValueError) as exc:
            self._pending.clear()
            self._close_socket()
            raise CharonUnreachable(f"registering for events at {self.uri} failed: {exc}") from exc
        self._ready.set()
        return reader

    def _ask_version(self, sock: socket.socket, reader: FrameReader) -> str | None:
        """charon's `version` (e.g. "6.1.0"), asked before any registration (so no event can
        come first); None when charon does not answer the command."""
        send_frame(sock, bytes(Packet.request("version")))
        packets: list[bytes] = []
        while not packets:
            packets, _ = reader.read_batch(None)
        if len(packets) != 1:
            raise ValueError(f"{len(packets)} packets answer one request")
        packet = packets[0]
        if not packet or packet[0] != Packet.CMD_RESPONSE:
            return None
        value = Message.deserialize(FiniteStream(packet[1:])).get("version")
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        return value if isinstance(value, str) else None

    def _register(self, sock: socket.socket, reader: FrameReader, event: str) -> None:
        """Register one event; keep events that arrive meanwhile (prefiltered, as when
        listening); _Refused if unknown."""
        send_frame(sock, bytes(Packet.register_event(event)))
        answer: int | None = None
        while answer is None:
            packets, dropped = reader.read_batch(self._keep_log)
            self.dropped_logs += dropped
            for packet in packets:
                kind = packet[0] if packet else None
                if kind == Packet.EVENT:
                    self._pending.append(_split_event(packet))
                elif answer is None:  # events may follow the answer in the same batch
                    answer = kind
                else:
                    raise ValueError(f"unexpected packet type {kind}")
        if answer == Packet.EVENT_UNKNOWN:
            raise _Refused(f"charon does not know event '{event}'")
        if answer != Packet.EVENT_CONFIRM:
            raise ValueError(f"unexpected packet type {answer}")

    def _deliver_raw(self, name: bytes, payload: bytes) -> None:
        try:
            message = Message.deserialize(FiniteStream(payload))
        except Exception as exc:
            self._deliver(Undecodable(_name(name), f"{type(exc).__name__}: {exc}"))
            return
        obs: Observation | None = decode_event(name, message)
        if self.dialect is not None and obs is not None:
            obs = self.dialect.translate(obs)
        if obs is not None:
            self._deliver(obs)

    def _listen(self, reader: FrameReader) -> str:
        """Deliver events until the socket breaks or stop() shuts it down; return why it ended.

        The log lines that cannot matter are skipped inside the reader's buffer: at a
        thousand a second, any per-line Python call is most of what the listener costs."""
        while not self._stopping.is_set():
            try:
                delivered = self.deliver_batch(reader)
            except (OSError, ValueError) as exc:
                return f"lost charon at {self.uri}: {exc}"
            # No pause while behind: a pause per full read would cap what is read at one
            # chunk per window (64 KiB per 100 ms, ~4000 lines/s).
            if not delivered and not reader.behind and self._chattering():
                self.pauses += 1
                assert self._coalescing is not None
                self._stopping.wait(self._coalescing.window)
        return "stopped"

    def _chattering(self) -> bool:
        """Whether dropped log lines came faster than `Coalescing.above` over the last second."""
        if self._coalescing is None:
            return False
        now = self._monotonic()
        elapsed = now - self._rate_since
        if elapsed >= 1.0:
            rate = (self.dropped_logs - self._rate_base) / elapsed
            self._chatter = rate > self._coalescing.above
            self._rate_since, self._rate_base = now, self.dropped_logs
        return self._chatter

    def _close_socket(self) -> None:
        with self._sock_lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _split_event(packet: bytes) -> tuple[bytes, bytes]:
    """An EVENT packet's name and payload: type byte, name length byte, name, payload."""
    size = packet[1] if len(packet) > 1 else 0
    return packet[2 : 2 + size], packet[2 + size :]


def _name(name: object) -> str:
    if isinstance(name, bytes):
        return name.decode("utf-8", errors="replace")
    return str(name)
