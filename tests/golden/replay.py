"""Golden scenarios: recorded charon event sequences in, VICI requests and published events
out, compared line by line with the scenario file (in the spirit of ExaBGP's qa/*.ci).

A scenario file (`tests/golden/*.ci`) is a transcript. Input lines drive the replay:

    conn NAME CHILD GW1 GW2 ...      a managed connection (the lab's policy)
    start                            extsock starts: every connection is started
    < +SECONDS EVENT {json}          charon's event, as recorded from the lab (5.9.8)
    @ +SECONDS COMMAND ARGS          an operator command (switch CONN GW, stop CONN, ...)

Output lines are what extsock did, in order, right after the input that caused it:

    > REQUEST ARGS                   a VICI request to charon
    ! EVENT key=value ...            a published event

`+SECONDS` is the time since the previous input line; deadlines that fall between two inputs
are delivered at their time, as the daemon's loop does. `# ...` lines are comments. The
replay regenerates the whole transcript from the input lines; the test compares it with the
file. GOLDEN_UPDATE=1 rewrites the files (review the diff: it is the behaviour).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from extsock_py.adapters.control.protocol import encode_event
from extsock_py.adapters.publisher import notice_fields
from extsock_py.adapters.vici.decode import decode_event
from extsock_py.adapters.vici.dialects import choose
from extsock_py.domain import events as ev
from extsock_py.domain.notices import Notice
from extsock_py.domain.observations import IkeSaInfo
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


class Transcript:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def out(self, line: str) -> None:
        self.lines.append(line)


class RecordingCharon:
    """The CharonPort: every request becomes a `>` line; charon accepts them all."""

    def __init__(self, transcript: Transcript) -> None:
        self._t = transcript

    def load_conn(self, name: str, body: Mapping[str, Any]) -> None:
        self._t.out(f"> load-conn {name} remote_addrs={','.join(body.get('remote_addrs', []))}")

    def unload_conn(self, name: str) -> None:
        self._t.out(f"> unload-conn {name}")

    def list_conn_names(self) -> list[str]:
        return []

    def initiate(self, ike: str, child: str | None) -> None:
        self._t.out(f"> initiate {ike} child={child}")

    def load_and_initiate(self, name: str, body: Mapping[str, Any], child: str | None) -> None:
        self.load_conn(name, body)
        self.initiate(name, child)

    def terminate(
        self, ike: str | None = None, ike_id: int | None = None, child_id: int | None = None
    ) -> None:
        if child_id is not None:
            self._t.out(f"> terminate child-id={child_id}")
        elif ike_id is not None:
            self._t.out(f"> terminate ike-id={ike_id}")
        else:
            self._t.out(f"> terminate ike={ike}")

    def list_sas(self) -> list[IkeSaInfo]:
        return []

    def load_shared(self, message: Mapping[str, Any]) -> None: ...

    def load_key(self, message: Mapping[str, Any]) -> None: ...

    def version(self) -> dict[str, str]:
        return {"daemon": "charon", "version": "5.9.8"}


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
    def __init__(self) -> None:
        self.t = Transcript()
        self.clock = FakeClock(start=0.0)
        self.manager = FailoverManager(RecordingCharon(self.t), self.clock, Published(self.t))
        self.events = EventUsecase(
            self.manager.is_managed,
            self.manager.handle,
            Published(self.t),
            connections=self.manager,
            sas=self.manager.sas,
        )
        self.reader = choose("5.9.8").dialect.reader(alerts=False)

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
        if head == "conn":
            name, child, *gateways = rest.split()
            profile = ConnectionProfile(name, tuple(gateways), _body(child, gateways), POLICY)
            self.manager.manage(profile)
        elif head == "start":
            self.manager.start_all()
        elif head == "<":
            delta, kind, payload = rest.split(" ", 2)
            self.advance(float(delta))
            obs = self.reader.translate(decode_event(kind, json.loads(payload)))
            if obs is not None and EventUsecase.wants(obs):
                self.events.observe(obs)
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
    keep = ("conn ", "start", "< ", "@ ")
    return [line for line in text.splitlines() if line.startswith(keep)]


def comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def replay(text: str) -> str:
    r = Replay()
    for line in inputs(text):
        r.line(line)
    return "\n".join([*comments(text), *r.t.lines]) + "\n"
