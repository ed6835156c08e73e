"""Golden scenarios: recorded charon event sequences in, VICI requests and published events
out, compared line by line with the scenario file (in the spirit of ExaBGP's qa/*.ci).

A scenario file (`tests/golden/*.ci`) is a transcript. Input lines drive the replay:

    charon VERSION                   the release it was recorded from (what ini's charon
                                     answered to `version`); first input line, required
    conn NAME CHILD GW1 GW2 ... [KEY=VALUE ...]
                                     a managed connection (the lab's policy; standby=yes)
    start                            extsock starts: every connection is started
    < +SECONDS EVENT {json}          charon's event, as recorded from the lab
    @ +SECONDS COMMAND ARGS          an operator command (switch CONN GW, stop CONN, ...)

Output lines are what extsock did, in order, right after the input that caused it:

    > REQUEST ARGS                   a VICI request to charon
    ! EVENT key=value ...            a published event

`+SECONDS` is the time since the previous input line; deadlines that fall between two inputs
are delivered at their time, as the daemon's loop does. `# ...` lines are comments. The
replay regenerates the whole transcript from the input lines; the test compares it with the
file. GOLDEN_UPDATE=1 rewrites the files (review the diff: it is the behaviour).

The replay's charon is the recorded release: it answers `version` with it, confirms the
`alert` registration only if that release's dialect has alerts, and the events are read with
that dialect (`extsock_py.adapters.vici.dialects.choose`, as the daemon's listener does).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import vici
from vici.protocol import FiniteStream, Message, Packet

from extsock_py.adapters.control.protocol import encode_event
from extsock_py.adapters.publisher import notice_fields
from extsock_py.adapters.vici.commands import ViciCharon
from extsock_py.adapters.vici.dialects import Choice, choose
from extsock_py.adapters.vici.listener import ViciEventListener
from extsock_py.adapters.vici.transport import FrameReader, send_frame
from extsock_py.domain import events as ev
from extsock_py.domain.notices import Notice
from extsock_py.domain.observations import Observation
from extsock_py.domain.policy import BackoffPolicy, FailoverPolicy
from extsock_py.domain.profile import ConnectionProfile
from extsock_py.usecases.event_usecase import EventUsecase
from extsock_py.usecases.failover_manager import FailoverManager
from tests.fakes.ports import FakeClock

HERE = Path(__file__).parent
# The policy of the lab's integration tests (tests/integration/test_topologies.py).
POLICY = FailoverPolicy(
    connect_timeout=5.0,
    dead_after_retransmits=1,
    max_cycles=2,
    backoff=BackoffPolicy(initial=0.5, maximum=1.0, jitter=0.0),
)
_DROPPED = ("v", "time")
# The requests that are no `>` line; what charon answers them: the replay's charon has no SA
# and no connection of its own (as the recording one before it), and is of the recorded
# release.
_SILENT = ("get-conns", "list-sas", "version")


def _silent_answer(command: str, release: str) -> dict[str, Any]:
    match command:
        case "get-conns":
            return {"conns": []}
        case "version":
            return {"daemon": "charon", "version": release}
    return {}


def release_of(text: str) -> str:
    """The release a transcript was recorded from: its `charon VERSION` line, which must be
    its first input line."""
    lines = inputs(text)
    if not lines or not lines[0].startswith("charon "):
        raise ValueError(
            "a transcript starts with `charon VERSION` (the release it was recorded from, "
            f"e.g. `charon 5.9.8`) before any other input line; first input line: "
            f"{lines[0] if lines else None!r}"
        )
    version = lines[0].split(" ", 1)[1].strip()
    if choose(version).warning:  # no release extsock knows: nothing to replay it with
        raise ValueError(f"`{lines[0]}`: {choose(version).warning}")
    return version


class Transcript:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def out(self, line: str) -> None:
        self.lines.append(line)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def request_line(command: str, message: Mapping[str, Any]) -> str | None:
    """The `>` line of one request as charon read it off the wire (None: not a line)."""
    match command:
        case "load-conn":
            ((name, body),) = message.items()
            addrs = ",".join(_text(a) for a in body.get("remote_addrs", []))
            return f"> load-conn {name} remote_addrs={addrs}"
        case "unload-conn":
            return f"> unload-conn {_text(message['name'])}"
        case "initiate":
            child = _text(message["child"]) if "child" in message else None
            return f"> initiate {_text(message['ike'])} child={child}"
        case "terminate":
            for key in ("child-id", "ike-id", "ike"):
                if key in message:
                    return f"> terminate {key}={_text(message[key])}"
            return "> terminate"
        case _ if command in _SILENT:
            return None
    shown = " ".join(f"{k}={_text(v)}" for k, v in message.items())
    return f"> {command} {shown}".rstrip()  # anything else shows up (and fails the test)


class WireCharon:
    """charon's end of the command socket, answered in the caller's thread: before the
    client reads, everything it has written is read off the socket and answered."""

    def __init__(self, transcript: Transcript, release: str) -> None:
        self._t = transcript
        self._release = release
        self._dir = tempfile.mkdtemp(prefix="golden-vici-")
        self.path = os.path.join(self._dir, "charon.vici")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(1)
        self._conn: socket.socket | None = None
        self._reader: FrameReader | None = None

    @property
    def uri(self) -> str:
        return f"unix://{self.path}"

    def session(self, sock: socket.socket) -> vici.Session:
        """The session factory of ViciCharon: its connect() is waiting in the backlog."""
        self._conn, _ = self._server.accept()
        self._reader = FrameReader(self._conn)
        return vici.Session(_PumpedSocket(sock, self))

    def answer(self) -> None:
        """Read every request written so far; write a `>` line and charon's answer for each."""
        assert self._conn is not None and self._reader is not None
        self._conn.setblocking(False)
        try:
            packets, _ = self._reader.read_batch()
        except BlockingIOError:
            return  # nothing written since the last answer
        finally:
            self._conn.setblocking(True)
        for packet in packets:
            kind, size = packet[0], packet[1]
            name = packet[2 : 2 + size].decode()
            rest = packet[2 + size :]
            if kind in (Packet.EVENT_REGISTER, Packet.EVENT_UNREGISTER):
                send_frame(self._conn, bytes([Packet.EVENT_CONFIRM]))
                continue  # (the command session registers nothing; the event wire below)
            assert kind == Packet.CMD_REQUEST, f"packet type {kind} from the command session"
            message = dict(Message.deserialize(FiniteStream(rest))) if rest else {}
            if (line := request_line(name, message)) is not None:
                self._t.out(line)
            answer = _silent_answer(name, self._release) if name in _SILENT else {"success": "yes"}
            send_frame(self._conn, bytes([Packet.CMD_RESPONSE]) + Message.serialize(answer))

    def close(self) -> None:
        for sock in (self._conn, self._server):
            if sock is not None:
                sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class _PumpedSocket:
    """The command session's socket: each read first lets charon's end answer."""

    def __init__(self, sock: socket.socket, charon: WireCharon) -> None:
        self._sock = sock
        self._charon = charon

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def recv(self, size: int) -> bytes:
        self._charon.answer()
        return self._sock.recv(size)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()


class EventWire:
    """The event session: charon's end writes EVENT packets, the listener reads them."""

    def __init__(self, deliver: Callable[[Observation], None], choice: Choice) -> None:
        self._charon, self._ours = socket.socketpair()
        self._reader = FrameReader(self._ours)
        self.listener = ViciEventListener(deliver, "unix:///nonexistent")  # never connects
        # The listener registers `alert` where the dialect names it, and a charon of that
        # release confirms it (one that does not has no alerts in its dialect).
        alerts = "alert" in choice.dialect.optional_events
        self.listener.use_dialect(choice.dialect.reader(alerts=alerts))

    def send(self, kind: str, payload: Mapping[str, Any]) -> None:
        name = kind.encode()
        packet = bytes([Packet.EVENT, len(name)]) + name + Message.serialize(payload)
        send_frame(self._charon, packet)
        self.listener.deliver_batch(self._reader)

    def close(self) -> None:
        self._charon.close()
        self._ours.close()


class Published:
    def __init__(self, transcript: Transcript) -> None:
        self._t = transcript

    def publish(self, notice: Notice) -> None:
        """As a subscriber reads it (the control protocol's encoding), without v and time."""
        kind = notice.kind
        wire = encode_event(kind, notice_fields(notice), 0.0)
        assert wire is not None, f"{kind} is no event of the control protocol"
        parts = []
        for key in sorted(wire):
            if key in _DROPPED or key == "event":
                continue
            value = wire[key]
            if isinstance(value, float):
                value = round(value, 3)
            parts.append(f"{key}={json.dumps(value)}")
        self._t.out(f"! {kind} {' '.join(parts)}")


def _body(child: str, gateways: list[str]) -> dict[str, Any]:
    return {"remote_addrs": gateways, "children": {child: {}}}


class Replay:
    def __init__(self, release: str) -> None:
        self.release = release
        self.t = Transcript()
        self.clock = FakeClock(start=0.0)
        self.wire = WireCharon(self.t, release)
        self.charon = ViciCharon(self.wire.uri, session_factory=self.wire.session)
        self.charon.connect()
        self.manager = FailoverManager(self.charon, self.clock, Published(self.t))
        self.events = EventUsecase(
            self.manager.is_managed,
            self.manager.handle,
            Published(self.t),
            connections=self.manager,
            sas=self.manager.sas,
        )
        self.event_wire = EventWire(self._observe, choose(release))

    def _observe(self, obs: Observation) -> None:
        """What the main loop does with what the listener delivers."""
        if EventUsecase.wants(obs):
            self.events.observe(obs)

    def close(self) -> None:
        self.event_wire.close()
        self.charon.close()
        self.wire.close()

    def advance(self, seconds: float) -> None:
        """Time passes: each deadline on the way is delivered at its time."""
        target = self.clock.now + seconds
        for _ in range(1000):
            wake = self.manager.next_wake()
            if wake is None or wake > target:
                break
            self.clock.now = max(self.clock.now, wake)
            self.manager.tick()
        self.clock.now = target

    def line(self, line: str) -> None:
        self.t.out(line)
        head, _, rest = line.partition(" ")
        if head == "charon":
            if rest.strip() != self.release or len(self.t.lines) != 1:
                raise ValueError(f"{line!r}: one `charon VERSION` line, the first input line")
        elif head == "conn":
            name, child, *words = rest.split()
            gateways = [w for w in words if "=" not in w]
            options = dict(w.split("=", 1) for w in words if "=" in w)
            policy = replace(POLICY, standby=options.pop("standby", "no") == "yes")
            if options:
                raise ValueError(f"unknown conn option(s) {sorted(options)} in {line!r}")
            profile = ConnectionProfile(name, tuple(gateways), _body(child, gateways), policy)
            self.manager.manage(profile)
        elif head == "start":
            self.manager.start_all()
        elif head == "<":
            delta, kind, payload = rest.split(" ", 2)
            self.advance(float(delta))
            self.event_wire.send(kind, json.loads(payload))
        elif head == "@":
            delta, command, *args = rest.split()
            self.advance(float(delta))
            self._operator(command, args)
        else:
            raise ValueError(f"unknown input line: {line!r}")

    def _operator(self, command: str, args: list[str]) -> None:
        conn = args[0]
        match command:
            case "switch":
                self.manager.handle(conn, ev.Switch(args[1] if len(args) > 1 else None))
            case "stop":
                self.manager.handle(conn, ev.Stop())
            case "hold":
                self.manager.handle(conn, ev.Hold())
            case "release":
                self.manager.handle(conn, ev.Release())
            case _:
                raise ValueError(f"unknown operator command {command!r}")


def inputs(text: str) -> list[str]:
    """The input lines of a transcript (comments and output lines dropped)."""
    keep = ("charon ", "conn ", "start", "< ", "@ ")
    return [line for line in text.splitlines() if line.startswith(keep)]


def comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def replay(text: str) -> str:
    r = Replay(release_of(text))
    try:
        for line in inputs(text):
            r.line(line)
    finally:
        r.close()
    return "\n".join([*comments(text), *r.t.lines]) + "\n"
